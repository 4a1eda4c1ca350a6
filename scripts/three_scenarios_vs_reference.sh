#!/usr/bin/env bash
# The three-scenarios preset at the 500-iteration protocol on Fashion-MNIST, seeds 0 and 1: the 18 cells that were
# compared with van de Ven & Tolias's own code run on the same bytes (results/three-scenarios-vs-reference/README.md).
# Usage: scripts/three_scenarios_vs_reference.sh [OUT]   (default results/three-scenarios-vs-reference)
set -euo pipefail
out=${1:-results/three-scenarios-vs-reference}
clbench=${CLBENCH:-.venv/bin/clbench}
"$clbench" sweep preset:three-scenarios-split-mnist --benchmark-map split-mnist=split-fmnist \
    --setting iterations=500 --seeds 0 1 --workers "${WORKERS:-2}" --quiet --no-plots --out "$out"
