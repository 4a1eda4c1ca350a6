#!/usr/bin/env bash
# The parameter-isolation part of the reference leaderboard, plus the joint upper bound: hnet, supsup, exssnet on
# Split-Fashion-MNIST (task-IL; class-IL for hnet and supsup, which infer the task) and Permuted-Fashion-MNIST
# (task-IL), Adam lr 1e-3, batch 128, seeds 0-2; supsup and exssnet also at 5% mask density. Two lanes run side by
# side with one thread each, into separate folders that `clbench leaderboard` merges.
# Usage: scripts/reference_isolation.sh [OUT]   (default results/reference-isolation; needs `make install`)
set -euo pipefail
out=${1:-results/reference-isolation}
mkdir -p "$out"
clbench=${CLBENCH:-.venv/bin/clbench}
common=(--seeds 0 1 2 --batch-size 128 --threads 1 --no-plots --quiet)
adam=(--optimizer adam --lr 0.001)
sgd=(--epochs 1 --lr 0.01 --momentum 0.9)

lane_a() {
  "$clbench" run --benchmark split-fmnist --scenario task class --strategy hnet --epochs 2 "${adam[@]}" "${common[@]}" --out "$out/a"
  "$clbench" run --benchmark permuted-fmnist --scenario task --strategy hnet --epochs 2 "${adam[@]}" "${common[@]}" --out "$out/a"
  "$clbench" run --benchmark split-fmnist --scenario class task --strategy joint "${sgd[@]}" "${common[@]}" --out "$out/a"
  "$clbench" run --benchmark permuted-fmnist --scenario domain --strategy joint "${sgd[@]}" "${common[@]}" --out "$out/a"
}
lane_b() {
  "$clbench" run --benchmark split-fmnist --scenario task --strategy supsup exssnet --epochs 1 "${adam[@]}" "${common[@]}" --out "$out/b"
  "$clbench" run --benchmark split-fmnist --scenario task --strategy supsup exssnet --set sparsity=0.05 --epochs 1 "${adam[@]}" "${common[@]}" --out "$out/b"
  "$clbench" run --benchmark split-fmnist --scenario class --strategy supsup --epochs 1 "${adam[@]}" "${common[@]}" --out "$out/b"
  "$clbench" run --benchmark permuted-fmnist --scenario task --strategy supsup exssnet --epochs 1 "${adam[@]}" "${common[@]}" --out "$out/b"
}
lane_a > "$out.lane_a.log" 2>&1 &
lane_b > "$out.lane_b.log" 2>&1 &
wait
