"""Paper-ready views of a leaderboard: a pivoted Markdown or LaTeX table (pure functions: no torch, no file I/O).

One row per configuration (strategy and hyperparameter label), one column per benchmark × scenario, cells
"mean ± sem" of one metric, the best complete configuration of each column in bold (the lowest for metrics where
lower is better), configurations with failed seeds marked, and a caption stating the settings the rows share.

The leaderboard's failure columns (``n_runs``, ``n_ok``, ``n_failed``, ``status``, ``failure``) and settings columns
(:data:`SETTINGS`) are used when present; a leaderboard without them (an older one) exports with every configuration
counted as complete and no settings in the caption.
"""

from __future__ import annotations

import math
from pathlib import PurePath

import pandas as pd

from clbench.errors import UsageError, unknown_choice
from clbench.metrics.tables import LOWER_IS_BETTER, label_from_json, mean_sem_str, metrics_of

__all__ = [
    "EXTENSIONS",
    "FORMATS",
    "LOWER_IS_BETTER",
    "METRIC_NAMES",
    "SETTINGS",
    "caption",
    "escape_latex",
    "escape_markdown",
    "pivot",
    "resolve_format",
    "to_latex",
    "to_markdown",
]

FORMATS = ("csv", "markdown", "latex")
EXTENSIONS = {".csv": "csv", ".md": "markdown", ".markdown": "markdown", ".tex": "latex"}

#: The settings a leaderboard carries as plain columns (those present are used), in the order the caption lists them.
SETTINGS = [
    "optimizer", "lr", "momentum", "weight_decay", "batch_size", "epochs", "iterations", "backbone", "class_order",
    "train_subset", "test_subset", "eval_every", "eval_period", "eval_subset", "validation_split", "n_experiences",
    "stream_seed",
]  # fmt: skip

METRIC_NAMES = {
    "acc": "Average accuracy",
    "bwt": "Backward transfer",
    "fwt": "Forward transfer",
    "forgetting": "Forgetting",
    "la": "Learning accuracy",
    "aia": "Average incremental accuracy",
    "train_s": "Training time (s)",
    "eval_s": "Evaluation time (s)",
    "peak_rss_mb": "Peak memory (MB)",
    "strategy_mem_mb": "Strategy memory (MB)",
    "min_acc": "Minimum accuracy (min-ACC)",
    "wc_acc": "Worst-case accuracy (WC-ACC)",
    "wf10": "Windowed forgetting (WF10)",
    "lca": "Learning curve area (LCA)",
    "aauc": "Anytime accuracy (A_AUC)",
}
METRIC_NAMES |= {f"{m}_taw": f"{METRIC_NAMES[m]}, task-aware" for m in ("acc", "bwt", "fwt", "forgetting", "la",
                                                                          "aia")}
PM = "±"
DAGGER = "†"
NOT_RUN = "–"  # a configuration that has no row for this benchmark × scenario
FAILURE_CHARS = 160  # the most of one failure message a footnote quotes


def resolve_format(output, fmt: str | None) -> str:
    """The format to write ``output`` in: ``fmt`` when given (it wins over the extension), else the extension's."""
    if fmt is not None:
        if fmt not in FORMATS:
            raise unknown_choice("--format", fmt, FORMATS)
        return fmt
    suffix = PurePath(str(output)).suffix.lower()
    if suffix not in EXTENSIONS:
        shown = f"extension {suffix!r}" if suffix else "no extension"
        raise UsageError(f"-o {str(output)!r} has {shown}; name it with one of {', '.join(EXTENSIONS)} or pass "
                         f"--format {'|'.join(FORMATS)}")
    return EXTENSIONS[suffix]


def _check_metric(board: pd.DataFrame, metric: str) -> None:
    known = metrics_of(board)
    if metric not in known:
        raise unknown_choice("--metric", metric, known)
    missing = [c for c in (f"{metric}_mean", f"{metric}_sem") if c not in board.columns]
    if missing:
        raise UsageError(f"the leaderboard lacks column(s) {missing} for --metric {metric!r}")


# ---------------------------------------------------------------------------------------------------------------------
# the pivot


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA


def _setting_text(value) -> str:
    """A setting's value as the caption and labels show it: 1.0 → "1" (a column with gaps is read as float)."""
    if _missing(value):
        return "none"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _settings_split(board: pd.DataFrame) -> tuple[dict, dict, list]:
    """(shared, usual, varying) over the board's rows: settings with one value everywhere; for the others, the
    most common value (first seen on ties), which the caption states and rows differing from it name in their label.
    Settings absent from every row (a column of NaN, or no column) are left out."""
    shared, usual, varying = {}, {}, []
    for name in (s for s in SETTINGS if s in board.columns):
        texts = [_setting_text(v) for v in board[name]]
        counts = pd.Series(texts, dtype=object).value_counts(sort=False)
        if len(counts) == 1:
            if texts[0] != "none":
                shared[name] = texts[0]
            continue
        usual[name] = max(counts.index, key=lambda t: (counts[t], -texts.index(t)))
        varying.append(name)
    return shared, usual, varying


def _status(row: dict) -> tuple[str, str]:
    """("ok" | "partial" | "failed", "k/n ok") of one leaderboard row; "ok" when the board has no failure columns."""
    n_ok, n_runs = row.get("n_ok"), row.get("n_runs")
    if _missing(n_runs) and not _missing(row.get("n_failed")) and not _missing(row.get("n_seeds")):
        n_ok, n_runs = row["n_seeds"], row["n_seeds"] + row["n_failed"]
    counts = "" if _missing(n_ok) or _missing(n_runs) else f"{int(n_ok)}/{int(n_runs)} ok"
    status = row.get("status")
    if status not in ("ok", "partial", "failed"):
        if counts:
            status = "failed" if int(n_ok) == 0 else "partial" if int(n_ok) < int(n_runs) else "ok"
        else:
            status = "ok"
    return status, counts


def pivot(board: pd.DataFrame, metric: str = "acc") -> dict:
    """The table both formats print, as plain data (no markup):

    ``columns``: the (benchmark, scenario) pairs in board order; ``rows``: one dict per configuration with ``label``
    (strategy, its hyperparameter label unless "defaults", and the settings where it differs from the usual value)
    and ``cells``, one per column: None where the configuration did not run there, else a dict with ``mean``,
    ``sem``, ``status`` ("ok" / "partial" / "failed"), ``counts`` ("2/3 ok" or ""), ``failure`` and ``best``.
    ``shared`` and ``usual`` are the settings of :func:`_settings_split`. Configurations that differ only in a
    setting are separate rows; rows that would still read the same get their config ids appended.
    """
    _check_metric(board, metric)
    shared, usual, varying = _settings_split(board)
    records = board.to_dict("records")
    columns = list(dict.fromkeys((r["benchmark"], r["scenario"]) for r in records))
    rows: dict[tuple, dict] = {}
    for r in records:
        hyper = r.get("label")
        if not isinstance(hyper, str) or not hyper:
            hyper = label_from_json(r["params"])
        key = (r["strategy"], hyper, *(_setting_text(r[s]) for s in varying))
        differs = [f"{s}={_setting_text(r[s])}" for s in varying if _setting_text(r[s]) != usual[s]]
        row = rows.setdefault(key, {"strategy": str(r["strategy"]), "hyper": hyper, "differs": differs,
                                    "cells": [None] * len(columns), "ids": []})
        status, counts = _status(r)
        failure = r.get("failure")
        cell = {"mean": float(r[f"{metric}_mean"]), "sem": float(r[f"{metric}_sem"]), "status": status,
                "counts": counts, "failure": "" if _missing(failure) else str(failure), "best": False}
        column = columns.index((r["benchmark"], r["scenario"]))
        if row["cells"][column] is not None:  # same key twice in one column: differs in nothing we show
            row = rows.setdefault((*key, r["config_id"]), {**row, "cells": [None] * len(columns), "ids": []})
        row["cells"][column] = cell
        row["ids"].append(str(r["config_id"]))
    out = list(rows.values())
    for row in out:
        parts = [p for p in ([] if row["hyper"] == "defaults" else [row["hyper"]]) + [", ".join(row["differs"])] if p]
        row["label"] = f"{row['strategy']} ({'; '.join(parts)})" if parts else row["strategy"]
    seen: dict[str, int] = {}
    for row in out:
        seen[row["label"]] = seen.get(row["label"], 0) + 1
    for row in out:
        if seen[row["label"]] > 1:
            row["label"] += f" [config {', '.join(dict.fromkeys(row['ids']))}]"
    _mark_best(out, len(columns), metric)
    return {"columns": columns, "rows": [{"label": r["label"], "cells": r["cells"]} for r in out],
            "shared": shared, "usual": usual}


def _mark_best(rows: list[dict], n_columns: int, metric: str, digits: int = 3) -> None:
    """Bold the best complete configuration per column, compared as printed (so ties, all bold, are visible ones).
    A configuration with failed seeds is not ranked: its mean is over the seeds that survived."""
    sign = 1.0 if metric in LOWER_IS_BETTER else -1.0
    for j in range(n_columns):
        cells = [r["cells"][j] for r in rows]
        ranked = [c for c in cells if c is not None and c["status"] == "ok" and not math.isnan(c["mean"])]
        if not ranked:
            continue
        best = min(sign * round(c["mean"], digits) for c in ranked)
        for c in ranked:
            c["best"] = sign * round(c["mean"], digits) == best


def _seeds_text(board: pd.DataFrame) -> str:
    column = "n_runs" if "n_runs" in board.columns else "n_seeds"
    counts = sorted({int(n) for n in board[column] if not _missing(n) and n > 0}) if column in board.columns else []
    if not counts:
        return "over seeds"
    lo, hi = counts[0], counts[-1]
    n = f"{lo}" if lo == hi else f"{lo}–{hi}"
    return f"over {n} seed{'' if hi == 1 else 's'}"


def caption(board: pd.DataFrame, metric: str = "acc", table: dict | None = None) -> str:
    """The caption line (plain text): the metric, what the cells are, what bold means, the shared settings and the
    usual values of the others (rows that differ say so in their label)."""
    table = table or pivot(board, metric)
    name = METRIC_NAMES.get(metric, metric)
    best = "Lowest per column in bold (lower is better)" if metric in LOWER_IS_BETTER else "Best per column in bold"
    text = f"{name} (mean {PM} SEM {_seeds_text(board)}). {best}."
    if table["shared"]:
        text += " Shared settings: " + ", ".join(f"{k}={v}" for k, v in table["shared"].items()) + "."
    usual = {k: v for k, v in table["usual"].items() if v != "none"}
    if usual:
        text += " Unless the row says otherwise: " + ", ".join(f"{k}={v}" for k, v in usual.items()) + "."
    return text


def _footnotes(table: dict) -> list[str]:
    """Plain-text notes under the table: what the dagger means, and the failures the leaderboard recorded."""
    cells = [(row["label"], col, c) for row in table["rows"]
             for col, c in zip(table["columns"], row["cells"], strict=True) if c is not None]  # fmt: skip
    notes = []
    if any(c["status"] == "partial" for _, _, c in cells):
        notes.append(f"{DAGGER} Some seeds of this configuration failed (finished/run shown): the mean {PM} SEM is "
                     "over the seeds that finished, and the cell is not ranked.")
    failures = [f"{label} on {bench} {scen}: {c['failure']}" for label, (bench, scen), c in cells
                if c["status"] != "ok" and c["failure"]]
    if failures:
        notes.append("Failures: " + "; ".join(_shorten(f) for f in failures) + ".")
    return notes


def _shorten(text: str, limit: int = FAILURE_CHARS) -> str:
    """One line of at most `limit` characters: a failure message may be a whole traceback."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _cell_text(cell: dict | None, pm: str, digits: int) -> tuple[str, bool, bool]:
    """(text, bold, dagger) of one cell before markup."""
    if cell is None:
        return NOT_RUN, False, False
    if cell["status"] == "failed":
        return "failed", False, False
    text = mean_sem_str(cell["mean"], cell["sem"], digits).replace(PM, pm)
    if cell["status"] == "partial":
        return f"{text} ({cell['counts'] or 'partial'})", False, True
    return text, cell["best"], False


# ---------------------------------------------------------------------------------------------------------------------
# Markdown


def escape_markdown(text: str) -> str:
    """Text safe inside a GitHub table cell: backslashes, pipes and the emphasis/code/HTML characters escaped,
    line breaks (which would end the row) turned into spaces."""
    text = " ".join(str(text).splitlines())
    for ch in ("\\", "|", "*", "`", "<", ">", "[", "]"):
        text = text.replace(ch, "\\" + ch)
    return text


def to_markdown(board: pd.DataFrame, metric: str = "acc", digits: int = 3) -> str:
    """The pivoted leaderboard as a GitHub pipe table with its caption line above and footnotes below.

    Written here rather than with DataFrame.to_markdown, which needs the tabulate package: a dependency pandas does
    not already have, for a dozen lines of pipe table.
    """
    table = pivot(board, metric)
    header = ["configuration", *(f"{b} {s}" for b, s in table["columns"])]
    lines = [escape_markdown(caption(board, metric, table)), ""]
    lines.append("| " + " | ".join(escape_markdown(h) for h in header) + " |")
    lines.append("|" + "|".join([":---", *(["---:"] * len(table["columns"]))]) + "|")
    for row in table["rows"]:
        cells = [escape_markdown(row["label"])]
        for cell in row["cells"]:
            text, bold, dagger = _cell_text(cell, PM, digits)
            cells.append(f"**{text}**" if bold else f"{text}{DAGGER}" if dagger else text)
        lines.append("| " + " | ".join(cells) + " |")
    notes = _footnotes(table)
    if notes:
        lines += ["", *(escape_markdown(n) for n in notes)]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------------------------------
# LaTeX

_LATEX = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}",
    "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "<": r"\textless{}", ">": r"\textgreater{}",
    "|": r"\textbar{}", PM: r"$\pm$", DAGGER: r"$^\dagger$", NOT_RUN: "--",
    "…": r"\ldots{}",
}  # fmt: skip


def escape_latex(text: str) -> str:
    """Text safe in LaTeX's text mode: the special characters _ % & # $ { } ~ ^ \\ (and < > |, which the default
    font encoding prints as other glyphs) escaped; ± and † as math."""
    return "".join(_LATEX.get(ch, ch) for ch in " ".join(str(text).splitlines()))


def to_latex(board: pd.DataFrame, metric: str = "acc", digits: int = 3) -> str:
    """The pivoted leaderboard as a LaTeX ``table`` with its caption, ruled with plain \\hline so that it compiles
    with the bare article class (no booktabs); footnotes under the tabular."""
    table = pivot(board, metric)
    header = ["configuration", *(f"{b} {s}" for b, s in table["columns"])]
    lines = [
        r"\begin{table}",
        r"\centering",
        r"\caption{" + escape_latex(caption(board, metric, table)) + "}",
        r"\begin{tabular}{l" + "c" * len(table["columns"]) + "}",
        r"\hline",
        " & ".join(escape_latex(h) for h in header) + r" \\",
        r"\hline",
    ]
    for row in table["rows"]:
        cells = [escape_latex(row["label"])]
        for cell in row["cells"]:
            text, bold, dagger = _cell_text(cell, PM, digits)
            text = escape_latex(text)
            cells.append(rf"\textbf{{{text}}}" if bold else rf"{text}$^\dagger$" if dagger else text)
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\hline", r"\end{tabular}"]
    for note in _footnotes(table):
        lines.append(r"\par\smallskip{\footnotesize " + escape_latex(note) + r"\par}")
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"
