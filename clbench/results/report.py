"""One self-contained HTML page of an output folder: the sortable leaderboard with its costs and the outcome of its
runs, the failed configurations, the average accuracy over training (±SEM over seeds), cost bars and the seed-averaged
accuracy matrix of every configuration.

Images are PNG data URIs and the sort script is inline, so the page opens offline and can be mailed or archived as
one file. The folder is only read: the leaderboard is recomputed from the raw tables, nothing in it is rewritten.
"""

from __future__ import annotations

import base64
import html
import io
from collections import Counter
from datetime import datetime, timezone
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd

import clbench
from clbench.errors import DiskFullError, UsageError
from clbench.metrics import tables
from clbench.results.plots import (
    _changed,
    average_accuracy_by_step,
    average_accuracy_curves,
    plot_accuracy_matrix,
    plot_average_accuracy,
    plot_leaderboard,
    plot_stability_gap,
    run_counts,
    stability_gap_panels,
    strategy_colors,
)
from clbench.results.store import ResultStore, check_writable, write_atomic

__all__ = ["average_accuracy_by_step", "build_report", "check_output_file", "write_report"]

TEXT_COLUMNS = ["benchmark", "scenario", "strategy", "params"]
COST_COLUMNS = tables.COSTS_COLUMNS[1:]  # train_s, eval_s, peak_rss_mb, strategy_mem_mb
COLUMN_HELP = {
    "published": "the paper's number for this configuration (paper presets); hover for its source",
    "diff": "acc minus the published number",
    "reproduced": "within max(tolerance, 2 combined standard errors) of the published number",
    "params": "hyperparameters that differ from the strategy's defaults",
    "status": "finished runs of all recorded runs: ok (all finished), partial (some failed: the numbers average the "
              "finished seeds only), failed (none finished: no numbers)",
    "n_seeds": "finished runs (seeds) averaged in this row",
    "acc": "average accuracy on all experiences after the last one",
    "acc_taw": "task-aware acc of a class-IL run: the argmax over the evaluated experience's own classes",
    "min_acc": "min-ACC (De Lange et al. 2023): mean over old experiences of the lowest accuracy seen after learning "
               "them, at any evaluation point during training",
    "wc_acc": "WC-ACC (De Lange et al. 2023): (1/k)·accuracy on the last experience + (1 − 1/k)·min-ACC",
    "bwt": "backward transfer (negative = forgetting)",
    "fwt": "forward transfer: accuracy on the next experience before training it, minus the untrained model's",
    "forgetting": "average drop from the best earlier accuracy to the final one",
    "la": "learning accuracy: accuracy on each experience right after training it",
    "aia": "average incremental accuracy",
    "train_s": "training seconds per run",
    "eval_s": "evaluation seconds per run",
    "peak_rss_mb": "process resident-memory high-water mark (MB)",
    "strategy_mem_mb": "the strategy's own memory at the end: buffers, anchors, masks (MB)",
}


# ---------------------------------------------------------------------------------------------------------------------
# data


def _read(store: ResultStore) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(runs, summary, evals) of the folder, with any unreadable table reported as bad input."""
    try:
        return store.runs(), store.summary(), store.evals()
    except UsageError:  # already one message naming the file (a damaged journal, with its line)
        raise
    except (ValueError, KeyError, pd.errors.UndefinedVariableError) as err:  # pandas parse errors are ValueErrors
        raise UsageError(f"{str(store.root)!r} does not hold readable clbench tables ({err}); pass a folder written "
                         "by `clbench run --out`") from None


def _mean_over_seeds(arrays) -> np.ndarray:
    """Element-wise mean of equally shaped arrays, skipping NaN (not evaluated); NaN where no seed has a value."""
    stack = np.stack([np.asarray(a, dtype=float) for a in arrays])
    present = ~np.isnan(stack)
    counts = present.sum(axis=0)
    return np.where(present, stack, 0).sum(axis=0) / np.where(counts > 0, counts, np.nan)


def _labels(board: pd.DataFrame) -> dict[str, str]:
    """config_id → "strategy (changed hyperparameters)"; configurations that would read alike in one benchmark and
    scenario (they differ only in training settings such as the learning rate) get their config id appended."""
    labels = {}
    for row in board.itertuples(index=False):
        changed = _changed(row)
        labels[row.config_id] = row.strategy if changed == "defaults" else f"{row.strategy} ({changed})"
    alike = Counter((row.benchmark, row.scenario, labels[row.config_id]) for row in board.itertuples(index=False))
    for row in board.itertuples(index=False):
        if alike[row.benchmark, row.scenario, labels[row.config_id]] > 1:
            labels[row.config_id] += f" [{row.config_id}]"
    return labels


# ---------------------------------------------------------------------------------------------------------------------
# figures


def _data_uri(draw) -> str:
    """Run draw(stream) with an in-memory stream and return the PNG it wrote as a data: URI."""
    buffer = io.BytesIO()
    draw(buffer)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


# ---------------------------------------------------------------------------------------------------------------------
# page


def _figure_html(uri: str, caption: str, kind: str) -> str:
    text = html.escape(caption)
    return f'<figure class="{kind}"><img src="{uri}" alt="{text}"><figcaption>{text}</figcaption></figure>'


def _status_text(row) -> tuple[str, str]:
    """(status, cell text) of a leaderboard row: "ok 3/3", "partial 2/3", "failed 0/3" (run_counts)."""
    status, n_ok, n_runs = run_counts(row)
    counts = f" {n_ok}/{n_runs}" if n_ok is not None and n_runs is not None else ""
    return status, f"{status}{counts}"


def _mean_sem_html(text: str) -> str:
    """"0.812 ± 0.004" as the mean over its "± SEM" (a second, smaller line), so that the many metric columns fit a
    window; the cell's text stays "0.812 ± 0.004"."""
    mean, sep, sem = text.partition(" ± ")
    if not sep:
        return html.escape(text)
    return f'<span class="mean">{html.escape(mean)}</span> <span class="sem">± {html.escape(sem)}</span>'


def _header_text(column: str) -> str:
    """A column name that may break after its underscores (strategy_mem_mb, acc_taw), so that headers stay narrow."""
    return "_<wbr>".join(html.escape(part) for part in column.split("_"))


def _failure(row) -> str:
    failure = row.get("failure") if hasattr(row, "get") else None
    return failure if isinstance(failure, str) else ""


def _leaderboard_html(board: pd.DataFrame) -> str:
    """The leaderboard table; numeric cells carry their mean in data-value so that the script sorts by it."""
    # acc_taw beside acc (class-IL runs), min_acc and wc_acc beside them (runs with curves), where the board has them
    headline = [m for m in ("acc_taw", "min_acc", "wc_acc") if f"{m}_mean" in board.columns]
    metrics = ["acc", *headline, *(m for m in tables.MATRIX_METRICS if m != "acc"), *COST_COLUMNS]
    shown = tables.format_mean_sem(board, metrics=metrics)
    published = "published" in board.columns and board["published"].notna().any()  # a paper preset's folder
    extra = ["published", "diff", "reproduced"] if published else []
    columns = [*TEXT_COLUMNS, "status", "n_seeds", *metrics, *extra]
    head = "".join(
        f'<th data-key="{c}" data-type="{"text" if c in (*TEXT_COLUMNS, "status", "reproduced") else "number"}"'
        f' title="{html.escape(COLUMN_HELP.get(c, c))}">{_header_text(c)}</th>'
        for c in columns
    )
    rows = []
    for k, row in board.iterrows():
        texts = [row["benchmark"], row["scenario"], row["strategy"], _changed(row)]
        cells = [f'<td class="text">{html.escape(str(text))}</td>' for text in texts]
        status, status_text = _status_text(row)
        failure = _failure(row)
        tip = f' title="{html.escape(failure)}"' if failure else ""
        cells.append(f'<td class="status"{tip}>{html.escape(status_text)}</td>')
        cells.append(f'<td data-value="{row["n_seeds"]}">{row["n_seeds"]}</td>')
        for m in metrics:
            mean = row[f"{m}_mean"]
            cells.append(f'<td data-value="{"" if pd.isna(mean) else repr(float(mean))}">'
                         f"{_mean_sem_html(shown.at[k, m])}</td>")
        if published:
            for column, fmt in (("published", "{:.3f}"), ("diff", "{:+.3f}")):
                value = row[column]
                text = "" if pd.isna(value) else fmt.format(value)
                cells.append(f'<td data-value="{"" if pd.isna(value) else repr(float(value))}" '
                             f'title="{html.escape(row["source"])}">{text}</td>')
            cells.append(f"<td>{html.escape(row['reproduced'])}</td>")
        rows.append(f'<tr class="status-{status}" data-status="{status}" '
                    f'title="config {html.escape(str(row["config_id"]))}">{"".join(cells)}</tr>')
    body = "\n".join(rows)
    return f'<table id="leaderboard"><thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody></table>'


def _failures_html(board: pd.DataFrame, labels: dict[str, str]) -> str:
    """The configurations with failed runs, each with its count and first error; "" when every run finished."""
    items = []
    for _, row in board.iterrows():
        status, status_text = _status_text(row)
        if status == "ok":
            continue
        failure = _failure(row)
        what = "no run finished: no numbers" if status == "failed" else "its numbers average the finished seeds only"
        items.append(f'<li data-status="{status}"><b>{html.escape(labels[row["config_id"]])}</b> on '
                     f'{html.escape(str(row["benchmark"]))} / {html.escape(str(row["scenario"]))}: '
                     f"{html.escape(status_text)} ok ({what})"
                     + (f"; first error: <code>{html.escape(failure)}</code>" if failure else "") + "</li>")
    if not items:
        return ""
    return ('<h3>Failed runs</h3>\n<ul id="failures">' + "".join(items) + "</ul>")


STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; overflow-wrap: anywhere; }
table { border-collapse: collapse; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.5em; white-space: nowrap; overflow-wrap: normal; }
th { white-space: normal; }
td.text { white-space: normal; overflow-wrap: anywhere; min-width: 4em; max-width: 16em; }
td .sem { display: block; font-size: 0.85em; color: #666; }
td[data-value] { text-align: right; font-variant-numeric: tabular-nums; }
tr.status-partial td.status { background: #fdebd0; }
tr.status-failed td { color: #888; }
tr.status-failed td.status { background: #f5c6cb; color: #721c24; font-weight: bold; }
#failures code { white-space: normal; }
th { background: #eee; cursor: pointer; user-select: none; }
th[aria-sort="ascending"]::after { content: " \\25B2"; }
th[aria-sort="descending"]::after { content: " \\25BC"; }
tbody tr:nth-child(even) { background: #f7f7f7; }
.figures { display: flex; flex-wrap: wrap; gap: 1em; }
.wide { overflow-x: auto; max-width: 100%; }
figure { margin: 0; min-width: 0; max-width: 100%; }
figure img { max-width: 100%; height: auto; }
figcaption { font-size: 0.85em; color: #555; }
"""

# Clicking a header sorts by that column (ascending, then toggling); numbers by their mean, n/a last either way.
# "#sort=acc" / "#sort=-acc" in the address clicks the header on load, so a sorted view can be linked. After load
# the body records how many images decoded (and the alt text of any that did not), how many rows the table has and
# the page's and the window's widths, for a headless browser to read.
SCRIPT = """
(function () {
  const table = document.getElementById("leaderboard");
  const body = table.tBodies[0];
  const headers = Array.from(table.tHead.rows[0].cells);
  function sortBy(th) {
    const col = th.cellIndex;
    const numeric = th.dataset.type === "number";
    const dir = th.getAttribute("aria-sort") === "ascending" ? -1 : 1;
    headers.forEach(h => h.removeAttribute("aria-sort"));
    th.setAttribute("aria-sort", dir === 1 ? "ascending" : "descending");
    const rows = Array.from(body.rows);
    rows.sort((a, b) => {
      if (numeric) {
        const x = parseFloat(a.cells[col].dataset.value), y = parseFloat(b.cells[col].dataset.value);
        if (isNaN(x) || isNaN(y)) return isNaN(x) - isNaN(y);
        return dir * (x - y);
      }
      return dir * a.cells[col].textContent.localeCompare(b.cells[col].textContent, undefined, {numeric: true});
    });
    rows.forEach(row => body.appendChild(row));
  }
  headers.forEach(th => th.addEventListener("click", () => sortBy(th)));
  window.addEventListener("load", () => {
    const wanted = /^#sort=(-?)([\\w-]+)$/.exec(location.hash);
    const th = wanted && headers.find(h => h.dataset.key === wanted[2]);
    if (th) {
      th.click();
      if (wanted[1]) th.click();
    }
    const images = Array.from(document.images);
    document.body.dataset.imagesTotal = images.length;
    const ok = img => img.complete && img.naturalWidth > 0;
    document.body.dataset.imagesOk = images.filter(ok).length;
    document.body.dataset.imagesBroken = images.filter(img => !ok(img)).map(img => img.alt).join(" | ");
    document.body.dataset.curvesOk = images.filter(img => ok(img) && img.closest("figure.curves")).length;
    document.body.dataset.gapOk = images.filter(img => ok(img) && img.closest("figure.gap")).length;
    document.body.dataset.rows = body.rows.length;
    document.body.dataset.scrollWidth = document.documentElement.scrollWidth;
    document.body.dataset.windowWidth = window.innerWidth;
    const box = table.parentElement;
    document.body.dataset.tableWidth = box.scrollWidth;
    document.body.dataset.tableBoxWidth = box.clientWidth;
  });
})();
"""


def build_report(store: ResultStore) -> str:
    """The HTML page of one output folder; raises UsageError when it holds no finished run."""
    runs, summary, evals = _read(store)
    if summary.empty:
        raise UsageError(f"{str(store.root)!r} has no finished run to report ({len(runs)} run(s) in runs.csv, none "
                         "with status ok)")
    board = store.leaderboard(summary)  # with the published numbers of a paper preset's folder
    per_run = {run_id: tables.matrices_from_evals(evals, run_id) for run_id in summary["run_id"]}
    seeds_of = summary.groupby("config_id")["run_id"].apply(list).to_dict()
    labels = _labels(board)
    colors = {label: f"C{k % 10}" for k, label in enumerate(sorted(set(labels.values())))}

    curves_html = []
    matrices = {run_id: R for run_id, (R, _) in per_run.items()}
    for (bench, scenario), curves in average_accuracy_curves(board, matrices, seeds_of, labels).items():
        title = f"{bench} / {scenario}"
        uri = _data_uri(partial(plot_average_accuracy, curves, title, colors=colors))
        failed = [c.label for c in curves if c.status == "failed"]
        curves_html.append(_figure_html(
            uri, f"{title}: average accuracy on the experiences seen so far, mean ± SEM over seeds (band)"
                 + (f"; no finished run: {', '.join(failed)}" if failed else ""), "curves"))

    gap_html = []
    curves_df = store.curves()
    if not curves_df.empty:
        for (bench, scenario), panels in stability_gap_panels(board, curves_df, seeds_of).items():
            title = f"{bench} / {scenario}"
            uri = _data_uri(partial(plot_stability_gap, panels, f"{title}: accuracy during training"))
            gap_html.append(_figure_html(
                uri, f"{title}: accuracy on each experience from the start of its training, every evaluation point "
                     "within training (continual evaluation), mean ± SEM over seeds; dotted lines: experience "
                     "boundaries", "gap"))
    gap_section = ("<h2>Accuracy during training (stability gap)</h2>\n"
                   f'<div class="figures">{"".join(gap_html)}</div>') if gap_html else ""

    costs_html = []
    strategy_color = strategy_colors(board["strategy"])  # one colour and one order per strategy in every panel
    for metric in COST_COLUMNS:
        if board[f"{metric}_mean"].notna().any():
            uri = _data_uri(partial(plot_leaderboard, board, metric=metric, order="name", colors=strategy_color))
            costs_html.append(_figure_html(uri, f"{metric}: {COLUMN_HELP[metric]}, mean ± SEM over seeds", "costs"))

    matrices_html = []
    for row in board.itertuples(index=False):
        if not seeds_of.get(row.config_id):
            continue  # no finished run: listed under the leaderboard, nothing to draw
        pairs = [per_run[run_id] for run_id in seeds_of[row.config_id]]
        R = _mean_over_seeds([R for R, _ in pairs])
        b = _mean_over_seeds([b for _, b in pairs]) if all(b is not None for _, b in pairs) else None
        name = f"{labels[row.config_id]} on {row.benchmark} / {row.scenario}"
        uri = _data_uri(partial(plot_accuracy_matrix, R, name, b=b))
        matrices_html.append(_figure_html(uri, f"{name}: accuracy matrix, mean of {row.n_seeds} seed(s)"
                                               + ("; row b is the untrained model" if b is not None else ""),
                                          "matrix"))  # fmt: skip

    failed = int((runs["status"] != "ok").sum())
    folder = html.escape(str(store.root))
    generated = datetime.now(timezone.utc).isoformat(timespec="seconds")
    note = (f"; {failed} failed run(s), counted in the status column and left out of the means (see runs.csv)"
            if failed else "")
    footnotes = "".join(f'<p class="note">{html.escape(line)}</p>' for line in tables.not_applicable_notes(board))
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>clbench report: {folder}</title>
<style>{STYLE}</style>
</head>
<body>
<h1>clbench report: {folder}</h1>
<p>{len(summary)} finished run(s) in {len(board)} configuration(s){note}. Generated {generated} by clbench
{html.escape(clbench.__version__)}.</p>
<h2>Leaderboard</h2>
<p>Mean ± standard error over seeds. Click a column header to sort by it (by the mean); click again to reverse.</p>
<div class="wide">{_leaderboard_html(board)}</div>
{footnotes}
{_failures_html(board, labels)}
<h2>Average accuracy over training</h2>
<div class="figures">{"".join(curves_html)}</div>
{gap_section}
<h2>Costs</h2>
<div class="figures">{"".join(costs_html)}</div>
<h2>Accuracy matrices</h2>
<p>R[i, j]: accuracy on experience j after training experience i, averaged over seeds.</p>
<div class="figures">{"".join(matrices_html)}</div>
<script>{SCRIPT}</script>
</body>
</html>
"""


def check_output_file(path: Path) -> None:
    """Fail before any work unless ``path`` can be created as a file (its folders are created when missing)."""
    check_writable(path, file=True, flag="-o")


def write_report(store: ResultStore, output) -> Path:
    """Build the page and write it to ``output`` in one step (a temp file, then a rename)."""
    output = Path(output)
    check_output_file(output)
    page = build_report(store)
    try:
        write_atomic(output, lambda tmp: Path(tmp).write_text(page, encoding="utf-8"))
    except DiskFullError:  # not bad input: the CLI reports it as such, with exit code 1
        raise
    except OSError as err:
        raise UsageError(f"cannot write {str(output)!r}: {err.strerror or err}") from None
    return output
