"""Merge clbench output folders into one: the runs of each SOURCE that DEST lacks are appended to DEST's journal and
every table of DEST is rewritten from it (summary, leaderboard). Nothing is retrained and nothing is imported from the
folders. Plots and reports are redrawn with `clbench plot DEST` / `clbench report DEST`.

Usage: python scripts/merge_folders.py DEST SOURCE [SOURCE ...]
"""

import argparse
import sys
from pathlib import Path

from clbench.errors import UsageError
from clbench.results.store import ResultStore


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dest", type=Path)
    parser.add_argument("sources", type=Path, nargs="+")
    args = parser.parse_args(argv)
    for folder in args.sources:
        if not (folder / "runs.csv").exists() and not (folder / ResultStore.JOURNAL).exists():
            print(f"error: {str(folder)!r} holds no clbench runs (no runs.jsonl or runs.csv)", file=sys.stderr)
            return 2
    dest = ResultStore(args.dest)
    try:
        added = sum(dest.merge_from(ResultStore(folder)) for folder in args.sources)
        summary, _ = dest.write_derived()
    except UsageError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"{added} runs added; {args.dest} now holds {len(dest.entries())} runs ({len(summary)} finished)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
