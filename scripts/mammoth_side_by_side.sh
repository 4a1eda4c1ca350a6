#!/usr/bin/env bash
# Mammoth's own code (aimagelab/mammoth, tested at commit e75a491c69fd729edeb01431afb753d9157d9a81) on clbench's
# Fashion-MNIST bytes, for the side-by-side of issue 19: seq-mnist (5 tasks of 2 classes in label order, class-IL,
# Mammoth also reports task-IL from the same run), its mnistmlp backbone (2x100 = clbench's mlp100), SGD, batch 10,
# 1 epoch, seed $MAMMOTH_SEED (default 0), CPU, one thread, each method with its seq-mnist values from Mammoth's utils/best_args.py passed
# explicitly (--load_best_args is "not up to date" by Mammoth's own warning); buffer 500, gem 200 as in the issue.
#
# Usage: MAMMOTH_DIR=... MAMMOTH_PYTHON=... MAMMOTH_DATA=... scripts/mammoth_side_by_side.sh OUT [METHOD...]
#   MAMMOTH_SEED=N runs seed N (default 0; the csv row names it in its args column). MAMMOTH_DATASET=perm-mnist runs
#   perm-mnist (20 permutations, domain-IL, batch 128) with its best arguments for sgd er agem gem ewc_on si der
#   derpp into OUT/mammoth-perm-mnist.csv (method, args, domain_il, wall_s).
#   METHOD: sgd er agem gem lwf ewc_on si der derpp er_ace icarl gdumb (default: all, in that order).
#   Appends one row per finished run to OUT/mammoth.csv (method, args, class_il, task_il, wall_s; accuracies in
#   percent after the last task), keeps each run's full output in OUT/logs/DATASET-METHOD-seedN.log and Mammoth's own result
#   logs (per-task accuracies) under OUT/mammoth-results. MAMMOTH_DEBUG=1 adds --debug_mode 1 (a few batches per
#   task and per evaluation: a smoke test of the whole path, its accuracies mean nothing).
# Environment:
#   MAMMOTH_DIR     an exported Mammoth checkout (the folder with main.py). Mammoth imports every file of datasets/
#                   at start-up: remove datasets/seq_8vision.py (it downloads CLIP weights when imported) and the
#                   other open_clip-only ones (seq_dtd, seq_gtrsrb, seq_sun397, seq_svhn) unless open_clip is
#                   installed; models that fail to import only log a warning.
#   MAMMOTH_PYTHON  the python of a venv with torch, torchvision, Mammoth's requirements.txt and what it misses for
#                   this path: quadprog (GEM), pandas (imported by datasets/seq_celeba.py), six (main.py).
#   MAMMOTH_DATA    Mammoth's --base_path: Fashion-MNIST's four IDX files, gzipped and uncompressed, under the MNIST
#                   names in MNIST/MNIST/raw/ and MNIST/MyMNIST/raw/ (torchvision's MNIST reads ROOT/CLASSNAME/raw
#                   and seq-mnist's training set is a subclass named MyMNIST), so nothing is downloaded.
# Notes: Mammoth's main.py calls torch.set_num_threads(2) when imported, so it is run through a wrapper that pins one
# thread first. At the tested commit main.py's extend_args sets minibatch_size = batch_size whenever a batch size is
# known (always, here), so agem's and der's minibatch_size 128 reach Mammoth as 10: the CSV keeps the arguments passed.
# Mammoth also creates an empty checkpoints/paused/ folder in MAMMOTH_DIR when imported (its SIGINT handler's target).
set -euo pipefail

usage="usage: MAMMOTH_DIR=... MAMMOTH_PYTHON=... MAMMOTH_DATA=... $0 OUT [METHOD...]"
all_methods=(sgd er agem gem lwf ewc_on si der derpp er_ace icarl gdumb)

# Mammoth's seq-mnist best arguments (utils/best_args.py, best_args['seq-mnist'], buffer 500 or -1, gem 200);
# er_ace and gdumb have no seq-mnist entry: er_ace takes lr 0.1 from models/config/er_ace.yaml and minibatch = batch,
# gdumb keeps models/gdumb.py's defaults (its lr is unused; maxlr and fitting_epochs drive the final fit).
declare -A method_args=(
    [sgd]="--lr 0.03"
    [er]="--buffer_size 500 --lr 0.1 --minibatch_size 10"
    [agem]="--buffer_size 500 --lr 0.1 --minibatch_size 128"
    [gem]="--buffer_size 200 --lr 0.01 --gamma 1.0"
    [lwf]="--lr 0.03 --alpha 1 --softmax_temp 2.0 --optim_wd 0.0005"
    [ewc_on]="--lr 0.03 --e_lambda 90 --gamma 1.0"
    [si]="--lr 0.1 --c 1.0 --xi 0.9"
    [der]="--buffer_size 500 --lr 0.03 --minibatch_size 128 --alpha 1.0"
    [derpp]="--buffer_size 500 --lr 0.03 --minibatch_size 10 --alpha 1.0 --beta 0.5"
    [er_ace]="--buffer_size 500 --lr 0.1 --minibatch_size 10"
    [icarl]="--buffer_size 500 --lr 0.1 --minibatch_size 10 --optim_wd 0"
    [gdumb]="--buffer_size 500 --maxlr 0.05 --fitting_epochs 256"
)
# MAMMOTH_DATASET=perm-mnist: its best arguments (best_args['perm-mnist'], buffer 500), batch 128, 20 tasks, domain-IL.
declare -A perm_args=(
    [sgd]="--lr 0.2"
    [er]="--buffer_size 500 --lr 0.2 --minibatch_size 128"
    [agem]="--buffer_size 500 --lr 0.1 --minibatch_size 128"
    [gem]="--buffer_size 500 --lr 0.1 --gamma 0.5"
    [ewc_on]="--lr 0.1 --e_lambda 0.7 --gamma 1.0"
    [si]="--lr 0.1 --c 0.5 --xi 1.0"
    [der]="--buffer_size 500 --lr 0.2 --minibatch_size 128 --alpha 1.0"
    [derpp]="--buffer_size 500 --lr 0.2 --minibatch_size 128 --alpha 1.0 --beta 0.5"
)
dataset=${MAMMOTH_DATASET:-seq-mnist}
case $dataset in
    seq-mnist) batch=10 ;;
    perm-mnist)
        batch=128
        all_methods=(sgd er agem gem ewc_on si der derpp)
        for method in "${!perm_args[@]}"; do method_args[$method]=${perm_args[$method]}; done
        for method in lwf er_ace icarl gdumb; do unset "method_args[$method]"; done ;;
    *) echo "error: unknown MAMMOTH_DATASET '$dataset'; choose from: seq-mnist perm-mnist" >&2; exit 2 ;;
esac

fail() { echo "error: $*" >&2; exit 2; }

[[ $# -ge 1 ]] || fail "missing OUT folder. $usage"
out=$1
shift
methods=("$@")
[[ ${#methods[@]} -gt 0 ]] || methods=("${all_methods[@]}")
for method in "${methods[@]}"; do
    [[ -n ${method_args[$method]+set} ]] || fail "unknown method '$method'; choose from: ${all_methods[*]}"
done
for var in MAMMOTH_DIR MAMMOTH_PYTHON MAMMOTH_DATA; do
    [[ -n ${!var:-} ]] || fail "$var is not set. $usage"
done
[[ -f $MAMMOTH_DIR/main.py ]] || fail "MAMMOTH_DIR='$MAMMOTH_DIR' has no main.py"
[[ -x $MAMMOTH_PYTHON ]] || fail "MAMMOTH_PYTHON='$MAMMOTH_PYTHON' is not an executable"
[[ ! -e $MAMMOTH_DIR/datasets/seq_8vision.py ]] ||
    fail "remove '$MAMMOTH_DIR/datasets/seq_8vision.py': it downloads CLIP weights when Mammoth imports it"
for cls in MNIST MyMNIST; do
    for file in train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte; do
        [[ -f $MAMMOTH_DATA/MNIST/$cls/raw/$file ]] || fail "MAMMOTH_DATA='$MAMMOTH_DATA' lacks MNIST/$cls/raw/$file"
    done
done

mkdir -p "$out/logs"
out=$(cd "$out" && pwd)  # Mammoth changes its working directory to MAMMOTH_DIR: hand it absolute paths
if [[ $dataset == seq-mnist ]]; then
    csv=$out/mammoth.csv
    [[ -s $csv ]] || echo "method,args,class_il,task_il,wall_s" >"$csv"
else
    csv=$out/mammoth-$dataset.csv
    [[ -s $csv ]] || echo "method,args,domain_il,wall_s" >"$csv"
fi

# Mammoth management arguments: CPU (no GPU visible; its --device takes GPU indices only), no loader workers,
# no progress bars, no checkpoints (none saved without --savecheck, none on interrupt), results and the (empty)
# checkpoint folder under OUT, wandb off (it is enabled only when WANDB_ENTITY and WANDB_PROJECT are set).
common=(--dataset "$dataset" --backbone mnistmlp --batch_size "$batch" --n_epochs 1 --seed "${MAMMOTH_SEED:-0}" --num_workers 0
    --non_verbose 1 --save_after_interrupt 0 --base_path "$MAMMOTH_DATA" --results_path "$out/mammoth-results"
    --checkpoint_path "$out/mammoth-checkpoints")
# main.py sets torch.set_num_threads(2) when it is imported: pin one thread and make later calls no-ops.
one_thread_main='import runpy, sys, torch
torch.set_num_threads(1)
torch.set_num_interop_threads(1)
torch.set_num_threads = lambda threads: None
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")'

# Mammoth's closing line: "Accuracy for 5 task(s): [Class-IL]: X % [Task-IL]: Y %" (means over the 5 tasks).
final_line='.*Accuracy for 5 task(s):[^[]*\[Class-IL\]: \([0-9.]*\) %[^[]*\[Task-IL\]: \([0-9.]*\) %.*'
replacement='\1,\2'
if [[ $dataset == perm-mnist ]]; then  # "Accuracy for 20 task(s): [Domain-IL]: X %"
    final_line='.*Accuracy for 20 task(s):[^[]*\[Domain-IL\]: \([0-9.]*\) %.*'
    replacement='\1'
fi
failed=()
for method in "${methods[@]}"; do
    read -r -a args <<<"${method_args[$method]}"
    if [[ ${MAMMOTH_DEBUG:-0} == 1 ]]; then args+=(--debug_mode 1); fi
    log=$out/logs/$dataset-$method-seed${MAMMOTH_SEED:-0}.log
    command=("$MAMMOTH_PYTHON" -c "$one_thread_main" "$MAMMOTH_DIR/main.py" --model "$method" "${args[@]}"
        "${common[@]}")
    echo "mammoth $method: ${args[*]}"
    printf '%q ' "${command[@]}" >"$log"
    printf '\n' >>"$log"
    start=$(date +%s.%N)
    status=0
    (cd "$MAMMOTH_DIR" && env -u WANDB_ENTITY -u WANDB_PROJECT WANDB_MODE=disabled CUDA_VISIBLE_DEVICES= \
        OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONWARNINGS=ignore \
        "${command[@]}") >>"$log" 2>&1 || status=$?
    wall_s=$(awk -v start="$start" -v end="$(date +%s.%N)" 'BEGIN { printf "%.1f", end - start }')
    accuracies=$(sed -n "s/$final_line/$replacement/p" "$log" | tail -n 1)
    if [[ $status -ne 0 || -z $accuracies ]]; then
        echo "  failed (exit $status, no final accuracy): see $log" >&2
        failed+=("$method")
        continue
    fi
    echo "$method,\"${args[*]} --seed ${MAMMOTH_SEED:-0}\",$accuracies,$wall_s" >>"$csv"
    echo "  accuracy ($([[ $dataset == seq-mnist ]] && echo "class-IL, task-IL" || echo domain-IL)): $accuracies %; ${wall_s} s"
done
echo "results: $csv"
if [[ ${#failed[@]} -gt 0 ]]; then
    echo "failed: ${failed[*]}" >&2
    exit 1
fi
