#!/usr/bin/env bash
# The stability gap (De Lange et al., ICLR 2023) with the reference settings: continual evaluation every 10 steps on
# 1000 test samples per experience, Split-Fashion-MNIST class-IL and Permuted-Fashion-MNIST domain-IL, naive, EWC,
# replay (mem_size 1000), DER++ (mem_size 1000), GEM (256 per experience, memory_strength 0.5) with SGD lr 0.01
# momentum 0.9, batch 128, 1 epoch; hnet (Adam lr 1e-3, 2 epochs; class-IL, and permuted task-IL as it has no
# domain-IL); and, for l2metrics, naive, EWC, replay and the single-task experts `separate` in Split-Fashion-MNIST
# task-IL. 3 seeds, two 1-thread lanes side by side.
# Usage: scripts/stability_gap.sh [OUT]   (default results/stability-gap; needs `make install`)
set -euo pipefail
out=${1:-results/stability-gap}
mkdir -p "$out"
clbench=${CLBENCH:-.venv/bin/clbench}
common=(--seeds 0 1 2 --batch-size 128 --eval-period 10 --eval-subset 1000 --threads 1 --no-plots --quiet)
sgd=(--epochs 1 --lr 0.01 --momentum 0.9)
adam=(--epochs 2 --optimizer adam --lr 0.001)
sets=(--set replay.mem_size=1000 der.mem_size=1000 gem.patterns_per_exp=256 gem.memory_strength=0.5)

lane_a() {
  "$clbench" run --benchmark split-fmnist --scenario class --strategy naive ewc replay der gem "${sets[@]}" "${sgd[@]}" "${common[@]}" --out "$out/a"
  "$clbench" run --benchmark split-fmnist --scenario class --strategy hnet "${adam[@]}" "${common[@]}" --out "$out/a"
  "$clbench" run --benchmark split-fmnist --scenario task --strategy separate naive ewc replay --set mem_size=1000 "${sgd[@]}" "${common[@]}" --out "$out/a"
}
lane_b() {
  "$clbench" run --benchmark permuted-fmnist --scenario domain --strategy naive ewc replay der gem "${sets[@]}" "${sgd[@]}" "${common[@]}" --out "$out/b"
  "$clbench" run --benchmark permuted-fmnist --scenario task --strategy hnet "${adam[@]}" "${common[@]}" --out "$out/b"
}
lane_a > "$out/lane_a.log" 2>&1 &
lane_b > "$out/lane_b.log" 2>&1 &
wait
"${PYTHON:-.venv/bin/python}" scripts/merge_folders.py "$out" "$out/a" "$out/b"
