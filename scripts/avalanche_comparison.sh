#!/usr/bin/env bash
# clbench's strategies next to Avalanche's own, in one leaderboard: Split-Fashion-MNIST class-IL, 5 experiences,
# MLP 2×400, SGD lr 0.01 momentum 0.9, batch 128, 1 epoch, seeds 0..2; same stream, initial weights and settings.
# Usage: scripts/avalanche_comparison.sh [OUT]   (default results/avalanche-comparison; needs `make install`)
set -euo pipefail
out=${1:-results/avalanche-comparison}
clbench=${CLBENCH:-.venv/bin/clbench}
common=(--seeds 0 1 2 --epochs 1 --batch-size 128 --lr 0.01 --momentum 0.9 --out "$out" --quiet)
# Both sides' defaults agree (EWC λ 10, LwF α 1 T 2, GEM/A-GEM 256 per experience, GEM margin 0.5, A-GEM sample
# 64); replay's buffer is set to 1000 samples on both.
"$clbench" run --benchmark split-fmnist --scenario class \
    --strategy naive avalanche:Naive ewc avalanche:EWC lwf avalanche:LwF gem avalanche:GEM agem avalanche:AGEM \
    replay avalanche:Replay --set replay.mem_size=1000 avalanche:Replay.mem_size=1000 "${common[@]}"
