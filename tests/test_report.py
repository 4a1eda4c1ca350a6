"""`clbench report`: one self-contained HTML page of a real output folder, checked as text and in a headless browser,
and its handling of bad input."""

import base64
import io
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest

from clbench.results.plots import plot_accuracy_matrix
from clbench.results.report import average_accuracy_by_step
from clbench.runners.cli import main

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
DATA_PNG = "data:image/png;base64,"
BROWSERS = ("chromium", "chromium-browser", "google-chrome")
STRATEGIES = ["naive", "ewc"]
DIVERGING = "tests.user_strategies:Diverging"  # with steps_before_nan=0 every seed fails
DIVERGING_NAME = "Diverging"  # as the tables show it: its class name
COSTS = ["train_s", "eval_s", "peak_rss_mb", "strategy_mem_mb"]
# a matrix per finished configuration, a curve panel, a stability-gap panel, a chart per cost
N_IMAGES = len(STRATEGIES) + 1 + 1 + len(COSTS)
WINDOW = (1400, 900)


class Page(HTMLParser):
    """The parts of the report a test reads: body attributes, image sources, header keys and table cells."""

    def __init__(self, text: str):
        super().__init__()
        self.body, self.images, self.headers, self.rows, self.row_attrs = {}, [], [], [], []
        self.failures = []  # the data-status of each item of the failed-runs list
        self._in_body_rows = False
        self._cell = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "body":
            self.body = attrs
        elif tag == "img":
            self.images.append(attrs.get("src", ""))
        elif tag == "th":
            self.headers.append(attrs)
        elif tag == "tbody":
            self._in_body_rows = True
        elif tag == "tr" and self._in_body_rows:
            self.rows.append([])
            self.row_attrs.append(attrs)
        elif tag == "li" and "data-status" in attrs:
            self.failures.append(attrs["data-status"])
        elif tag == "td" and self._in_body_rows:
            self._cell = {"value": attrs.get("data-value"), "text": ""}
            self.rows[-1].append(self._cell)

    def handle_endtag(self, tag):
        if tag == "tbody":
            self._in_body_rows = False
        elif tag == "td":
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell["text"] += data

    def column(self, key: str) -> list[dict]:
        index = [h["data-key"] for h in self.headers].index(key)
        return [row[index] for row in self.rows]

    def finished(self, key: str) -> list[dict]:
        """The column's cells in the rows of configurations with a finished run (the others have no numbers)."""
        return [cell for cell, attrs in zip(self.column(key), self.row_attrs, strict=True)
                if attrs.get("data-status") != "failed"]


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """A real output folder, two strategies and two seeds, plus a configuration whose every seed failed, and its
    report."""
    out = tmp_path_factory.mktemp("res")
    assert main(["run", "--benchmark", "split-digits", "--scenario", "class", "--strategy", *STRATEGIES,
                 "--seeds", "0", "1", "--epochs", "1", "--batch-size", "32", "--lr", "0.05", "--out", str(out),
                 "--eval-period", "10", "--eval-subset", "50", "--quiet", "--no-plots"]) == 0
    assert main(["run", "--benchmark", "split-digits", "--scenario", "class", "--strategy", DIVERGING,
                 "--set", "steps_before_nan=0", "--seeds", "0", "1", "--train-subset", "100", "--epochs", "1",
                 "--batch-size", "32", "--out", str(out), "--quiet", "--no-plots"]) == 1  # its runs failed
    assert main(["report", str(out), "-o", str(out / "report.html")]) == 0
    return out / "report.html"


def test_report_is_one_self_contained_page(report):
    text = report.read_text(encoding="utf-8")
    assert "http://" not in text and "https://" not in text
    assert not re.search(r"<link\b|@import|url\(", text)
    references = re.findall(r"""\b(?:src|href)\s*=\s*["']([^"']*)""", text)
    assert len(references) == N_IMAGES and all(ref.startswith(DATA_PNG) for ref in references)

    page = Page(text)
    assert len(page.rows) == len(STRATEGIES) + 1
    assert sorted(cell["text"] for cell in page.column("strategy")) == sorted([*STRATEGIES, DIVERGING_NAME])
    assert [cell["text"] for cell in page.finished("n_seeds")] == ["2", "2"]
    for cell in page.finished("acc"):
        assert re.fullmatch(r"0\.\d{3} ± 0\.\d{3}", cell["text"])
    costs = {cost: [float(cell["value"]) for cell in page.finished(cost)] for cost in COSTS}
    assert min(costs["train_s"] + costs["eval_s"] + costs["peak_rss_mb"]) > 0
    assert min(costs["strategy_mem_mb"]) == 0 < max(costs["strategy_mem_mb"])  # naive keeps nothing, EWC its Fisher
    # cells sort by the mean, the leaderboard's own number
    board = pd.read_csv(report.parent / "leaderboard.csv").set_index("strategy")
    for strategy, acc in zip(page.finished("strategy"), page.finished("acc"), strict=True):
        assert float(acc["value"]) == pytest.approx(board.loc[strategy["text"], "acc_mean"])

    # the failed configuration has a row (marked, with no numbers), a status cell and an entry in the failed-runs list
    assert {"status", "n_ok", "n_runs"} <= set(board.columns), "leaderboard.csv lacks the failure accounting"
    statuses = dict(zip((c["text"] for c in page.column("strategy")), page.column("status"), strict=True))
    assert statuses[DIVERGING_NAME]["text"] == "failed 0/2"
    assert {statuses[s]["text"] for s in STRATEGIES} == {"ok 2/2"}
    marks = {c["text"]: attrs.get("data-status") for c, attrs in zip(page.column("strategy"), page.row_attrs,
                                                                          strict=True)}  # fmt: skip
    assert marks == {"naive": "ok", "ewc": "ok", DIVERGING_NAME: "failed"}
    failed_row = page.rows[list(marks).index(DIVERGING_NAME)]
    # after n_seeds: the six matrix metrics, acc_taw, min_acc and wc_acc (class-IL runs with curves), four costs
    assert [cell["text"] for cell in failed_row if cell["value"] is not None][1:] == ["n/a"] * 13
    assert page.failures == ["failed"] and "DivergedError" in text and "no run finished" in text

    for src in page.images:
        png = base64.b64decode(src.removeprefix(DATA_PNG), validate=True)
        assert png[:8] == PNG_MAGIC
        image = mpimg.imread(io.BytesIO(png), format="png")
        assert image.ndim == 3 and min(image.shape[:2]) > 100


def browser_or_skip() -> str:
    for name in BROWSERS:
        if path := shutil.which(name):
            return path
    pytest.skip(f"no headless browser found (looked for {', '.join(BROWSERS)}); install one with "
                "`apt-get install chromium` or `make browser`")


def dump_dom(browser: str, page: Path, fragment: str, profile: Path) -> Page:
    """Load the page (with a #fragment) in headless Chromium, in a window of WINDOW pixels, and parse the DOM as the
    script left it."""
    proc = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
         "--disable-background-networking", f"--user-data-dir={profile}", "--virtual-time-budget=5000",
         f"--window-size={WINDOW[0]},{WINDOW[1]}", "--dump-dom", page.as_uri() + fragment],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0 and "<body" in proc.stdout, proc.stderr[-3000:]
    return Page(proc.stdout)


def test_report_renders_and_sorts_in_a_headless_browser(report, tmp_path):
    browser = browser_or_skip()
    page = dump_dom(browser, report, "#sort=acc", tmp_path / "profile")
    assert page.body["data-images-total"] == str(N_IMAGES)
    assert page.body["data-images-ok"] == str(N_IMAGES), page.body["data-images-broken"]  # every data URI decoded
    assert page.body["data-curves-ok"] == "1"  # the average-accuracy panel with its ±SEM bands
    assert page.body["data-gap-ok"] == "1"  # the stability-gap figure of the continual evaluation
    assert page.body["data-rows"] == str(len(STRATEGIES) + 1)
    acc = [cell["value"] for cell in page.column("acc")]
    assert acc[-1] == "" and [float(a) for a in acc[:-1]] == sorted(float(a) for a in acc[:-1])  # n/a last
    assert {h["data-key"]: h.get("aria-sort") for h in page.headers}["acc"] == "ascending"
    assert page.row_attrs[-1]["data-status"] == "failed"

    # the page fits a 1400-pixel window: nothing scrolls sideways but (at most) the table inside its box
    assert page.body["data-window-width"] == str(WINDOW[0])  # the window size took effect
    assert int(page.body["data-scroll-width"]) <= WINDOW[0]
    # and this leaderboard (long names wrap, each ± SEM under its mean) fits without scrolling inside its box either
    assert int(page.body["data-table-width"]) <= int(page.body["data-table-box-width"])

    # a second click reverses; text columns sort too
    page = dump_dom(browser, report, "#sort=-strategy", tmp_path / "profile")
    assert [cell["text"] for cell in page.column("strategy")] == sorted([*STRATEGIES, DIVERGING_NAME], reverse=True)
    assert {h["data-key"]: h.get("aria-sort") for h in page.headers}["strategy"] == "descending"
    assert page.body["data-images-ok"] == str(N_IMAGES)


def test_bad_input_exits_2_with_one_message_and_writes_nothing(report, tmp_path, capsys, monkeypatch):
    folder = report.parent
    before = sorted(p.name for p in folder.iterdir())

    def fails(argv, message, code=2):
        assert main([str(a) for a in argv]) == code
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
        assert sorted(p.name for p in folder.iterdir()) == before  # no temp file left behind

    fails(["report", tmp_path / "nothing", "-o", tmp_path / "r.html"], "not a clbench output folder")
    assert not (tmp_path / "r.html").exists()
    fails(["report", folder, "-o", folder / "runs.csv" / "r.html"], "is a file, not a folder")
    fails(["report", folder, "-o", tmp_path], "is a folder; give a file name")

    # a folder whose tables are not clbench's, or that has no finished run
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "runs.csv").write_text("")
    fails(["report", empty, "-o", empty / "r.html"], "does not hold readable clbench tables")
    (empty / "runs.csv").write_text((folder / "runs.csv").read_text().splitlines()[0] + "\n")
    fails(["report", empty, "-o", empty / "r.html"], "has no finished run")
    assert sorted(p.name for p in empty.iterdir()) == ["runs.csv"]

    # a write that fails half-way leaves neither the page nor its temporary file
    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_text", disk_full)
    fails(["report", folder, "-o", folder / "again.html"], "the disk is full", code=1)  # not bad input: exit 1


def test_average_accuracy_by_step_and_matrix_with_baseline_in_memory():
    R = np.array([[0.9, 0.1, 0.0], [0.5, 0.7, np.nan], [0.4, 0.6, 0.8]])
    np.testing.assert_allclose(average_accuracy_by_step(R), [0.9, 0.6, 0.6])
    R[1, 0] = np.nan  # a partly evaluated row has no average
    assert np.isnan(average_accuracy_by_step(R)[1])
    stream = plot_accuracy_matrix(R, "t", io.BytesIO(), b=[0.1, 0.1, 0.1])
    assert stream.getvalue()[:8] == PNG_MAGIC
