"""Mammoth next to clbench, method by method, on the same Fashion-MNIST bytes and seeds.

    python scripts/mammoth_compare.py MAMMOTH_OUT/mammoth.csv CLBENCH_OUT [-o table.md]
    python scripts/mammoth_compare.py MAMMOTH_OUT/mammoth-perm-mnist.csv CLBENCH_PERM_OUT [-o table-perm.md]

MAMMOTH_OUT is what scripts/mammoth_side_by_side.sh wrote (one row per method and seed); CLBENCH_OUT the folder of
`clbench sweep preset:mammoth-seq-mnist --benchmark-map split-mnist=split-fmnist --seeds ...`. Each Mammoth method is
paired with the preset's configuration that follows its arguments (MATCHES); accuracies are the mean over the seeds
both sides ran, class-IL and task-IL (clbench's acc and acc_taw of the class-IL run, as Mammoth's Task-IL is the
same run with the logits masked to the task), in percent; the wall-time ratio is Mammoth's median run time over
clbench's (one thread each, start-up included on both sides).
"""

import argparse
import re
import statistics
import sys
from pathlib import Path

import pandas as pd

# Mammoth method -> (clbench strategy, the label of its configuration in the preset's folder)
MATCHES = {
    "sgd": ("naive", "defaults"),
    "er": ("replay", "batch_size_mem=10 mem_size=500 update=stream"),
    "agem": ("agem", "patterns_per_exp=100 sample_size=10"),
    "agem (10 per experience)": ("agem", "patterns_per_exp=10 sample_size=10"),
    "gem": ("gem", "mem_size=200 memory=shared memory_strength=1.0"),
    "lwf": ("lwf", "ce_units=seen warmup_epochs=1"),
    "ewc_on": ("ewc", "decay_factor=1.0 ewc_lambda=90.0 fisher_weighting=prob mode=online"),
    "si": ("si", "eps=0.9 si_lambda=1.0"),
    "der": ("der", "alpha=1.0 batch_size_mem=10 beta=0.0 mem_size=500"),
    "derpp": ("der", "alpha=1.0 batch_size_mem=10 mem_size=500"),
    "er_ace": ("er-ace", "mem_size=500 storage_policy=reservoir"),
    "icarl": ("icarl", "memory_size=500"),
    "gdumb": ("gdumb", "mem_size=500"),
}


# MAMMOTH_DATASET=perm-mnist's runs (mammoth-perm-mnist.csv, domain-IL) -> the mammoth-perm-mnist preset's entries
PERM_MATCHES = {
    "sgd": ("naive", "defaults"),
    "er": ("replay", "batch_size_mem=128 mem_size=500 update=stream"),
    "agem": ("agem", "patterns_per_exp=25 sample_size=128"),
    "gem": ("gem", "patterns_per_exp=25"),
    "ewc_on": ("ewc", "decay_factor=1.0 ewc_lambda=0.7 fisher_weighting=prob mode=online"),
    "si": ("si", "eps=1.0 si_lambda=0.5"),
    "der": ("der", "alpha=1.0 batch_size_mem=128 beta=0.0 mem_size=500"),
    "derpp": ("der", "alpha=1.0 batch_size_mem=128 mem_size=500"),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("mammoth_csv", type=Path)
    parser.add_argument("clbench_dir", type=Path)
    parser.add_argument("-o", "--output", type=Path, default=None, help="also write the markdown table here")
    args = parser.parse_args()
    mammoth = pd.read_csv(args.mammoth_csv)
    mammoth["seed"] = [int(m.group(1)) if (m := re.search(r"--seed (\d+)", a)) else 0 for a in mammoth["args"]]
    summary = pd.read_csv(args.clbench_dir / "summary.csv")
    runs = pd.read_csv(args.clbench_dir / "runs.csv")[["run_id", "duration_s"]]
    summary = summary.merge(runs, on="run_id")
    if "label" not in summary.columns:
        sys.exit("the clbench folder's summary has no label column; rebuild it with this clbench")
    rows = []
    domain = "domain_il" in mammoth.columns  # a perm-mnist file: one domain-IL accuracy per run
    for method, (strategy, label) in (PERM_MATCHES if domain else MATCHES).items():
        theirs = mammoth[mammoth["method"] == method.split(" ")[0]]
        ours = summary[(summary["strategy"] == strategy) & (summary["label"] == label)]
        seeds = sorted(set(theirs["seed"]) & set(ours["seed"]))
        if not seeds:
            continue
        theirs, ours = theirs[theirs["seed"].isin(seeds)], ours[ours["seed"].isin(seeds)]
        ratio = statistics.median(theirs["wall_s"]) / statistics.median(ours["duration_s"])
        row = {"Mammoth method": method, "clbench": f"{strategy} {label}", "seeds": " ".join(map(str, seeds))}
        if domain:
            m_acc, c_acc = theirs["domain_il"].mean(), 100 * ours["acc"].mean()
            row |= {"domain-IL Mammoth": f"{m_acc:.1f}", "domain-IL clbench": f"{c_acc:.1f}",
                    "diff": f"{c_acc - m_acc:+.1f}"}
        else:
            m_cil, c_cil = theirs["class_il"].mean(), 100 * ours["acc"].mean()
            m_til, c_til = theirs["task_il"].mean(), 100 * ours["acc_taw"].mean()
            row |= {"class-IL Mammoth": f"{m_cil:.1f}", "class-IL clbench": f"{c_cil:.1f}",
                    "diff": f"{c_cil - m_cil:+.1f}", "task-IL Mammoth": f"{m_til:.1f}",
                    "task-IL clbench": f"{c_til:.1f}"}
        row["wall s Mammoth / clbench"] = (f"{statistics.median(theirs['wall_s']):.1f} / "
                                           f"{statistics.median(ours['duration_s']):.1f} ({ratio:.1f}x)")
        rows.append(row)
    header = list(rows[0]) if rows else ["Mammoth method"]
    table = "\n".join(["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
                       *("| " + " | ".join(row.values()) + " |" for row in rows)])
    print(table)
    if args.output:
        args.output.write_text(table + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
