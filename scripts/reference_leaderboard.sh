#!/usr/bin/env bash
# The reference leaderboard of the regularisation and memory strategies: Split-Fashion-MNIST (class- and task-IL) and
# Permuted-Fashion-MNIST (domain-IL), 5 experiences, MLP 2×400, SGD lr 0.01 momentum 0.9, batch 128, 1 epoch, 3 seeds.
# Usage: scripts/reference_leaderboard.sh [OUT]   (default results/reference-strategies; needs `make install`)
set -euo pipefail
out=${1:-results/reference-strategies}
clbench=${CLBENCH:-.venv/bin/clbench}
common=(--seeds 0 1 2 --epochs 1 --batch-size 128 --lr 0.01 --momentum 0.9 --out "$out" --no-plots --quiet)
strategies=(naive ewc replay lwf gem agem center-loss)
sets=(--set replay.mem_size=1000 gem.patterns_per_exp=256 gem.memory_strength=0.5)

"$clbench" run --benchmark split-fmnist --scenario class task --strategy "${strategies[@]}" "${sets[@]}" "${common[@]}"
"$clbench" run --benchmark permuted-fmnist --scenario domain --strategy "${strategies[@]}" "${sets[@]}" "${common[@]}"
# center loss with a replay buffer of the same size as replay's (the paper's best variant)
"$clbench" run --benchmark split-fmnist --scenario class task --strategy center-loss --set mem_size=1000 "${common[@]}"
"$clbench" run --benchmark permuted-fmnist --scenario domain --strategy center-loss --set mem_size=1000 "${common[@]}"
"$clbench" plot "$out" > /dev/null
