"""What a `clbench run` job leaves in a log file when its output is not a terminal (a SLURM or CI log).

Runs an 18-run job (split-digits, class- and task-IL, naive / ewc / replay, seeds 0 1 2, one torch thread) with
stdout and stderr going into one pipe, as `> job.log 2>&1` would, and writes what came out to a file; then prints how
many lines, carriage returns and escape sequences ("\\x1b[") the file holds, how many lines start with a timestamp,
and the longest silence: the most seconds between two pieces of output, with the last line shown before it.

Usage: python scripts/log_lines.py --out DIR [--source CHECKOUT] [--keep FILE] [-- EXTRA RUN FLAGS]
(--source: run the clbench of another checkout, e.g. a clean clone of an earlier commit; default: this one)
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

JOB = ["run", "--benchmark", "split-digits", "--scenario", "class", "task", "--strategy", "naive", "ewc", "replay",
       "--seeds", "0", "1", "2", "--threads", "1"]
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, type=Path, help="the job's output folder (a fresh one)")
    parser.add_argument("--source", type=Path, default=Path(__file__).resolve().parents[1],
                        help="the checkout whose clbench runs (default: this one)")
    parser.add_argument("--keep", type=Path, default=None, help="where to keep the job's log (default: a temp file)")
    args, extra = parser.parse_known_args()
    extra = [a for a in extra if a != "--"]
    command = [sys.executable, "-m", "clbench", *JOB, "--out", str(args.out), *extra]
    env = {**os.environ, "PYTHONPATH": str(args.source.resolve()), "PYTHONUNBUFFERED": "1"}
    chunks: list[tuple[float, bytes]] = []
    started = time.perf_counter()
    with subprocess.Popen(command, cwd=args.source, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT) as job:
        while piece := job.stdout.read1(65536):
            chunks.append((time.perf_counter(), piece))
    wall = time.perf_counter() - started
    text = b"".join(piece for _, piece in chunks).decode("utf-8", errors="replace")
    log = args.keep or Path(tempfile.mkstemp(suffix=".log")[1])
    log.write_text(text, encoding="utf-8")

    gap, at = 0.0, 0
    for i, ((t0, _), (t1, _)) in enumerate(zip(chunks, chunks[1:], strict=False)):
        if t1 - t0 > gap:
            gap, at = t1 - t0, i
    shown = b"".join(piece for _, piece in chunks[: at + 1]).decode("utf-8", errors="replace")
    before = next((line for line in reversed(re.split(r"[\r\n]", shown)) if line.strip()), "")
    lines = text.splitlines()
    print(f"command: {' '.join(command)}  (in {args.source})")
    print(f"exit code {job.returncode}, {wall:.0f} s; log: {log}")
    print(f"lines {len(lines)}, carriage returns {text.count(chr(13))}, escape sequences {text.count(chr(27) + '[')}, "
          f"timestamped lines {sum(bool(TIMESTAMP.match(line)) for line in lines)}")
    print(f"longest silence {gap:.1f} s, after: {before[:150]!r}")


if __name__ == "__main__":
    main()
