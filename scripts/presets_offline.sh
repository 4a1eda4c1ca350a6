#!/usr/bin/env bash
# Every paper preset at its full protocol (hnet-permuted-mnist at a tenth of its iterations) (iterations, batch sizes, learning rates, backbones) on Fashion-MNIST in
# place of MNIST, one seed: the presets' wiring at full scale where MNIST cannot be downloaded. The published numbers
# land in each leaderboard marked "not comparable" (they were published on MNIST).
# Usage: scripts/presets_offline.sh [OUT]   (default results/presets; needs `make install` and `make data`)
set -euo pipefail
out=${1:-results/presets}
clbench=${CLBENCH:-.venv/bin/clbench}
common=(--seeds 0 --quiet --no-plots --workers "${WORKERS:-1}")

"$clbench" sweep preset:three-scenarios-split-mnist --benchmark-map split-mnist=split-fmnist \
    --out "$out/three-scenarios-on-split-fmnist" "${common[@]}"
"$clbench" sweep preset:gem-mnist-permutations --benchmark-map permuted-mnist=permuted-fmnist \
    --out "$out/gem-permutations-on-permuted-fmnist" "${common[@]}"
"$clbench" sweep preset:gem-mnist-rotations --benchmark-map rotated-mnist=rotated-fmnist \
    --out "$out/gem-rotations-on-rotated-fmnist" "${common[@]}"
"$clbench" sweep preset:hnet-split-mnist --benchmark-map split-mnist=split-fmnist \
    --out "$out/hnet-split-on-split-fmnist" "${common[@]}"
# 500 of the protocol's 5000 iterations per task: the full run did not finish within 13 minutes on 2 cores.
"$clbench" sweep preset:hnet-permuted-mnist --benchmark-map permuted-mnist=permuted-fmnist --setting iterations=500 \
    --out "$out/hnet-permuted-on-permuted-fmnist" "${common[@]}"
