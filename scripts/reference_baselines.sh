#!/usr/bin/env bash
# The baselines added to the reference leaderboard (SI, MAS, DER/DER++, ER-ACE, iCaRL, GDumb, and replay at 500
# samples next to its 1000; the single-task experts `separate` in task-IL), with the reference settings: Split-Fashion-MNIST (class- and task-IL) and
# Permuted-Fashion-MNIST (domain-IL), 5 experiences, MLP 2x400, SGD lr 0.01 momentum 0.9, batch 128, 1 epoch, 3 seeds.
# Replay-based methods at equal memory, 500 and 1000 samples.
# Usage: scripts/reference_baselines.sh [OUT]   (default results/reference-baselines; needs `make install`)
# results/reference/ is this folder merged with the other reference scripts' (scripts/merge_folders.py).
set -euo pipefail
out=${1:-results/reference-baselines}
clbench=${CLBENCH:-.venv/bin/clbench}
common=(--seeds 0 1 2 --epochs 1 --batch-size 128 --lr 0.01 --momentum 0.9 --out "$out" --no-plots --quiet)

for bench in "split-fmnist class task" "permuted-fmnist domain"; do
    read -r name scenarios <<< "$bench"
    # shellcheck disable=SC2086
    run() { "$clbench" run --benchmark "$name" --scenario $scenarios "$@" "${common[@]}"; }
    run --strategy si mas
    run --strategy si --set si_lambda=0.1 eps=0.001   # the authors' damping and strength (Zenke et al.'s code)
    for mem in 500 1000; do
        run --strategy der --set mem_size=$mem beta=0.0            # DER
        run --strategy der er-ace gdumb --set mem_size=$mem        # DER++ (beta 0.5), ER-ACE, GDumb
    done
    run --strategy replay --set mem_size=500
    if [ "$name" = split-fmnist ]; then                             # iCaRL: class- and task-IL only
        for mem in 500 1000; do
            run --strategy icarl --set memory_size=$mem
            run --strategy icarl --set memory_size=$mem classifier="'head'"   # its own sigmoid head, for comparison
        done
    fi
done
# the single-task experts (task-IL only): one model per experience, the reference of `clbench leaderboard --l2metrics`
"$clbench" run --benchmark split-fmnist permuted-fmnist --scenario task --strategy separate "${common[@]}"
