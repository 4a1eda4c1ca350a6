"""Paper-ready leaderboard tables (clbench.results.exports): Markdown parsed back, LaTeX compiled (or checked), the
format chosen from --format or the extension, and one end-to-end export of a real folder."""

import math
import re
import shutil
import subprocess

import pandas as pd
import pytest

from clbench.metrics.tables import LEADERBOARD_METRICS
from clbench.results import exports
from clbench.runners.cli import main

PDFLATEX = shutil.which("pdflatex")
SGD = {"optimizer": "sgd", "lr": 0.01, "momentum": 0.9, "weight_decay": 0.0, "batch_size": 128, "epochs": 1,
       "iterations": math.nan, "backbone": "mlp400", "class_order": "seeded", "train_subset": math.nan,
       "test_subset": math.nan, "eval_every": 1}  # fmt: skip


def run_cli(*argv):
    return main([str(a) for a in argv])


def entry(benchmark, scenario, strategy, label="defaults", acc=0.5, sem=0.01, *, n_ok=3, n_runs=3, failure=None,
          settings=SGD, **metrics):
    """One leaderboard row with every column the leaderboard has (failure accounting and settings included)."""
    status = "failed" if n_ok == 0 else "partial" if n_ok < n_runs else "ok"
    row = {"benchmark": benchmark, "scenario": scenario, "strategy": strategy, "params": "{}", "label": label,
           "config_id": f"{strategy}-{benchmark}-{scenario}-{label}-{settings.get('epochs')}", "n_seeds": n_ok,
           "n_runs": n_runs, "n_ok": n_ok, "n_failed": n_runs - n_ok, "status": status, "failure": failure,
           **settings}  # fmt: skip
    for m in LEADERBOARD_METRICS:
        row[f"{m}_mean"], row[f"{m}_sem"] = (math.nan, math.nan) if n_ok == 0 else (0.1, 0.01)
    row["acc_mean"], row["acc_sem"] = (math.nan, math.nan) if n_ok == 0 else (acc, sem)
    for name, value in metrics.items():
        row[f"{name}_mean"] = value
    return row


@pytest.fixture
def board():
    return pd.DataFrame([
        entry("split-fmnist", "class", "naive", acc=0.2, sem=0.001),
        entry("split-fmnist", "class", "ewc", "ewc_lambda=10.0", acc=0.9, sem=0.004, n_ok=2,
              failure="loss is NaN at experience 3"),
        entry("split-fmnist", "class", "replay", "mem_size=1000", acc=0.7, sem=0.01),
        entry("split-fmnist", "task", "naive", acc=0.95, sem=0.01),
        entry("split-fmnist", "task", "ewc", "ewc_lambda=10.0", n_ok=0, failure="diverged"),
        entry("split-fmnist", "task", "replay", "mem_size=1000", acc=0.95, sem=0.02),
    ])  # fmt: skip


def split_row(line: str) -> list[str]:
    """The cells of a pipe-table row, split on unescaped pipes and unescaped (a backslash keeps the next char)."""
    assert line.startswith("|") and line.endswith("|"), line
    cells, cell, chars = [], [], iter(line[1:-1])
    for ch in chars:
        if ch == "\\":
            cell.append(next(chars))
        elif ch == "|":
            cells.append("".join(cell).strip())
            cell = []
        else:
            cell.append(ch)
    return [*cells, "".join(cell).strip()]


def parse_markdown(text: str):
    """(caption, header, {label: cells}, footnotes) of an exported Markdown table."""
    lines = text.rstrip("\n").split("\n")
    table = [i for i, line in enumerate(lines) if line.startswith("|")]
    first, last = table[0], table[-1]
    assert table == list(range(first, last + 1)), "the table's lines are contiguous"
    header = split_row(lines[first])
    separator = split_row(lines[first + 1])
    assert len(separator) == len(header) and all(re.fullmatch(r":?-{3,}:?", s) for s in separator)
    rows = {}
    for line in lines[first + 2 : last + 1]:
        cells = split_row(line)
        assert len(cells) == len(header), line
        assert cells[0] not in rows, f"two rows read {cells[0]!r}"
        rows[cells[0]] = cells[1:]
    caption = " ".join(lines[:first]).strip()
    footnotes = [line for line in lines[last + 1 :] if line.strip()]
    return caption, header, rows, footnotes


def test_markdown_parses_back_with_best_bold_and_failures_marked(board):
    caption, header, rows, footnotes = parse_markdown(exports.to_markdown(board))
    assert header == ["configuration", "split-fmnist class", "split-fmnist task"]
    assert list(rows) == ["naive", "ewc (ewc_lambda=10.0)", "replay (mem_size=1000)"]
    assert rows["naive"] == ["0.200 ± 0.001", "**0.950 ± 0.010**"]
    # the partial ewc has the highest class-IL mean but is not ranked: replay is the best complete configuration
    assert rows["ewc (ewc_lambda=10.0)"] == ["0.900 ± 0.004 (2/3 ok)†", "failed"]
    assert rows["replay (mem_size=1000)"] == ["**0.700 ± 0.010**", "**0.950 ± 0.020**"]  # a tie: both bold
    assert caption.startswith("Average accuracy (mean ± SEM over 3 seeds). Best per column in bold.")
    assert ("Shared settings: optimizer=sgd, lr=0.01, momentum=0.9, weight_decay=0, batch_size=128, epochs=1, "
            "backbone=mlp400, class_order=seeded, eval_every=1.") in caption
    assert "iterations" not in caption and "subset" not in caption  # unset everywhere: not a shared setting
    assert footnotes[0].startswith("† Some seeds of this configuration failed")
    assert "ewc (ewc_lambda=10.0) on split-fmnist class: loss is NaN at experience 3" in footnotes[1]
    assert "ewc (ewc_lambda=10.0) on split-fmnist task: diverged" in footnotes[1]


def test_markdown_escapes_pipes_and_backslashes_in_labels(board):
    board.loc[board["strategy"] == "replay", "label"] = r"path=a|b\c *x*"
    text = exports.to_markdown(board)
    assert r"a\|b\\c \*x\*" in text
    _, _, rows, _ = parse_markdown(text)
    assert r"replay (path=a|b\c *x*)" in rows


def test_leaderboard_without_failure_or_settings_columns_falls_back(board):
    plain = board.drop(columns=["n_runs", "n_ok", "n_failed", "status", "failure", *SGD])
    plain = plain[plain["acc_mean"].notna()].assign(n_seeds=3)
    caption, _, rows, footnotes = parse_markdown(exports.to_markdown(plain))
    assert caption == "Average accuracy (mean ± SEM over 3 seeds). Best per column in bold."
    assert rows["ewc (ewc_lambda=10.0)"] == ["**0.900 ± 0.004**", "–"]  # nothing says it is partial: ranked
    assert footnotes == []


def test_settings_that_differ_go_into_row_labels():
    five = {**SGD, "epochs": 5}
    adam = {**SGD, "optimizer": "adam", "lr": 0.001}
    board = pd.DataFrame([
        entry("split-fmnist", "task", "naive", acc=0.90),
        entry("split-fmnist", "task", "naive", acc=0.93, settings=five),  # differs only in epochs
        entry("split-fmnist", "task", "hnet", acc=0.97, settings=adam),
        entry("permuted-fmnist", "domain", "naive", acc=0.80),
    ])  # fmt: skip
    caption, header, rows, _ = parse_markdown(exports.to_markdown(board))
    assert header[1:] == ["split-fmnist task", "permuted-fmnist domain"]
    assert rows == {
        "naive": ["0.900 ± 0.010", "**0.800 ± 0.010**"],
        "naive (epochs=5)": ["0.930 ± 0.010", "–"],
        "hnet (optimizer=adam, lr=0.001)": ["**0.970 ± 0.010**", "–"],
    }
    assert "Shared settings: momentum=0.9, weight_decay=0, batch_size=128, backbone=mlp400" in caption
    assert "Unless the row says otherwise: optimizer=sgd, lr=0.01, epochs=1." in caption
    table = exports.pivot(board)
    assert table["shared"]["batch_size"] == "128" and "epochs" not in table["shared"]


def test_rows_that_would_read_the_same_get_their_config_ids():
    a, b = entry("split-fmnist", "task", "naive", acc=0.9), entry("split-fmnist", "task", "naive", acc=0.8)
    b["config_id"] = "other"  # differs in something the leaderboard has no column for (e.g. the stream seed)
    _, _, rows, _ = parse_markdown(exports.to_markdown(pd.DataFrame([a, b])))
    assert len(rows) == 2 and all("[config " in label for label in rows)


@pytest.mark.parametrize("metric", ["forgetting", "train_s", "peak_rss_mb"])
def test_lower_is_better_metrics_bold_the_minimum(metric):
    board = pd.DataFrame([
        entry("split-fmnist", "class", "naive", **{metric: 0.30}),
        entry("split-fmnist", "class", "ewc", "ewc_lambda=10.0", **{metric: 0.10}),
        entry("split-fmnist", "class", "replay", "mem_size=1000", **{metric: 0.10}),
        entry("split-fmnist", "class", "lwf", **{metric: 0.05}, n_ok=1),  # lowest, but partial: not ranked
    ])  # fmt: skip
    caption, _, rows, _ = parse_markdown(exports.to_markdown(board, metric=metric))
    assert rows["naive"] == ["0.300 ± 0.010"]
    assert rows["ewc (ewc_lambda=10.0)"] == rows["replay (mem_size=1000)"] == ["**0.100 ± 0.010**"]
    assert rows["lwf"] == ["0.050 ± 0.010 (1/3 ok)†"]
    assert caption.startswith(f"{exports.METRIC_NAMES[metric]} (mean ± SEM over 3 seeds). Lowest per column in bold")
    latex = exports.to_latex(board, metric=metric)
    assert latex.count(r"\textbf{0.100 $\pm$ 0.010}") == 2 and latex.count(r"\textbf{") == 2


def test_higher_is_better_for_the_other_metrics(board):
    bwt = board.assign(bwt_mean=[-0.3, -0.1, -0.2, -0.2, 0.0, -0.05])
    _, _, rows, _ = parse_markdown(exports.to_markdown(bwt, metric="bwt"))
    assert rows["naive"] == ["-0.300 ± 0.010", "-0.200 ± 0.010"]
    assert rows["replay (mem_size=1000)"] == ["**-0.200 ± 0.010**", "**-0.050 ± 0.010**"]
    assert rows["ewc (ewc_lambda=10.0)"] == ["-0.100 ± 0.010 (2/3 ok)†", "failed"]


def check_latex_syntax(tex: str, n_columns: int, n_rows: int) -> None:
    """What a compile would catch, checked by hand: balanced braces, one tabular with the right number of columns
    and of & per row, no unescaped special character."""
    unescaped = re.sub(r"\\[\\{}&%$#_]", "", tex)
    depth = 0
    for ch in unescaped:
        depth += {"{": 1, "}": -1}.get(ch, 0)
        assert depth >= 0, "a } closes nothing"
    assert depth == 0, "unbalanced braces"
    assert tex.count(r"\begin{tabular}") == tex.count(r"\end{tabular}") == 1
    assert tex.count(r"\begin{table}") == tex.count(r"\end{table}") == 1 and tex.count(r"\caption{") == 1
    spec = re.search(r"\\begin\{tabular\}\{([lcr]+)\}", tex).group(1)
    assert spec == "l" + "c" * (n_columns - 1)
    body = tex.split(r"\begin{tabular}", 1)[1].split(r"\end{tabular}", 1)[0]
    rows = [line for line in body.split("\n") if line.endswith(r"\\")]
    assert len(rows) == 1 + n_rows
    for line in rows:
        assert len(re.findall(r"(?<!\\)&", line)) == n_columns - 1, line
    assert not re.search(r"(?<!\\)[_%#]", tex.replace(r"\\", "")), "an unescaped _ % or #"
    outside = tex.replace(body, "")
    assert not re.search(r"(?<!\\)&", outside), "an unescaped & outside the tabular's rows"
    assert "booktabs" not in tex and r"\toprule" not in tex


def compile_latex(tex: str, folder) -> None:
    document = "\\documentclass{article}\n\\begin{document}\n" + tex + "\\end{document}\n"
    (folder / "table.tex").write_text(document, encoding="utf-8")
    done = subprocess.run([PDFLATEX, "-interaction=nonstopmode", "-halt-on-error", "-no-shell-escape", "table.tex"],
                          cwd=folder, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:]
    assert (folder / "table.pdf").stat().st_size > 0


NASTY = r"a_b=1 c%d & #e $f {g} ~h ^i \j |k <l>"


def test_latex_table_is_well_formed_and_escaped(board, tmp_path):
    board.loc[board["strategy"] == "replay", "label"] = NASTY
    tex = exports.to_latex(board)
    check_latex_syntax(tex, n_columns=3, n_rows=3)
    assert r"ewc (ewc\_lambda=10.0) & 0.900 $\pm$ 0.004 (2/3 ok)$^\dagger$ & failed \\" in tex
    assert r"naive & 0.200 $\pm$ 0.001 & \textbf{0.950 $\pm$ 0.010} \\" in tex
    assert (r"replay (a\_b=1 c\%d \& \#e \$f \{g\} \textasciitilde{}h \textasciicircum{}i \textbackslash{}j "
            r"\textbar{}k \textless{}l\textgreater{})") in tex
    assert r"\caption{Average accuracy (mean $\pm$ SEM over 3 seeds). Best per column in bold." in tex
    assert r"batch\_size=128" in tex and r"$^\dagger$ Some seeds" in tex
    if PDFLATEX:
        compile_latex(tex, tmp_path)


@pytest.mark.skipif(PDFLATEX is None, reason="pdflatex not installed (apt-get install texlive-latex-base)")
def test_latex_compiles_with_a_bare_article_class(board, tmp_path):
    board.loc[board["strategy"] == "replay", "label"] = NASTY
    compile_latex(exports.to_latex(board, metric="forgetting"), tmp_path)


def test_format_follows_the_extension_and_an_explicit_format_wins():
    assert exports.resolve_format("x/board.csv", None) == "csv"
    assert exports.resolve_format("board.md", None) == exports.resolve_format("b.MARKDOWN", None) == "markdown"
    assert exports.resolve_format("board.tex", None) == "latex"
    assert exports.resolve_format("board.csv", "latex") == "latex"
    assert exports.resolve_format("board.txt", "markdown") == "markdown"


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    out = tmp_path_factory.mktemp("exports") / "res"
    assert run_cli("run", "--benchmark", "split-digits", "--scenario", "class", "task", "--strategy", "naive", "ewc",
                   "--seeds", "0", "1", "--epochs", "1", "--batch-size", "32", "--train-subset", "200", "--quiet",
                   "--no-plots", "--out", out) == 0
    return out


@pytest.mark.parametrize(("argv", "expected"), [
    (["-o", "board.txt"], ["'.txt'", ".csv", ".md", ".markdown", ".tex", "--format csv|markdown|latex"]),
    (["-o", "board"], ["no extension", ".tex"]),
    (["-o", "board.md", "--format", "html"], ["'html'", "valid choices: csv, latex, markdown"]),
    (["-o", "board.md", "--metric", "accuracy"], ["'accuracy'", "valid choices: acc, ", "bwt", "forgetting"]),
    (["-o", "board.csv", "--metric", "bwt"], ["--metric", "markdown or latex"]),
])  # fmt: skip
def test_bad_format_or_metric_exits_2_and_writes_nothing(folder, tmp_path, capsys, argv, expected):
    target = tmp_path / "out"
    target.mkdir()
    argv = [a if not a.startswith("board") else target / a for a in argv]
    assert run_cli("leaderboard", folder, *argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("clbench: error: ") and len(err.strip().splitlines()) == 1
    for text in expected:
        assert text in err
    assert list(target.iterdir()) == []


def test_real_folder_exports_to_markdown_and_latex(folder, tmp_path, capsys):
    assert run_cli("leaderboard", folder, "-o", tmp_path / "board.md") == 0
    assert run_cli("leaderboard", folder, "-o", tmp_path / "board.tex") == 0
    assert run_cli("leaderboard", folder, "-o", tmp_path / "board.txt", "--format", "markdown", "--metric",
                   "forgetting") == 0
    assert run_cli("leaderboard", folder, "-o", tmp_path / "board.csv") == 0
    csv = pd.read_csv(tmp_path / "board.csv")
    assert len(csv) == 4 and "acc_mean" in csv.columns  # the CSV is the leaderboard as it was

    caption, header, rows, _ = parse_markdown((tmp_path / "board.md").read_text(encoding="utf-8"))
    assert header == ["configuration", "split-digits class", "split-digits task"]
    assert len(rows) == 2 and "naive" in rows and any(label.startswith("ewc") for label in rows)
    for j in range(2):
        column = [cells[j] for cells in rows.values()]
        assert all(re.fullmatch(r"(\*\*)?\d\.\d{3} ± \d\.\d{3}(\*\*)?", c) for c in column), column
        assert any(c.startswith("**") for c in column)
    assert caption.startswith("Average accuracy (mean ± SEM over 2 seeds).")
    board = csv.set_index(["scenario", "strategy"])
    assert rows["naive"][0].strip("*").startswith(f"{board.loc[('class', 'naive'), 'acc_mean']:.3f}")

    forgetting = (tmp_path / "board.txt").read_text(encoding="utf-8")
    assert forgetting.startswith("Forgetting (mean ± SEM over 2 seeds). Lowest per column in bold")

    tex = (tmp_path / "board.tex").read_text(encoding="utf-8")
    check_latex_syntax(tex, n_columns=3, n_rows=2)
    if PDFLATEX:
        compile_latex(tex, tmp_path)
