"""How long the command line takes to answer, against importing torch, side by side: the median of N alternating
runs of each command in a fresh interpreter.

    python scripts/startup_time.py [--repeats 5]
"""

import argparse
import shutil
import statistics
import subprocess
import sys
import time

COMMANDS = {
    "clbench --version": ["clbench", "--version"],
    "clbench --help": ["clbench", "--help"],
    "clbench list": ["clbench", "list"],
    'python -c "import torch"': [sys.executable, "-c", "import torch"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    clbench = shutil.which("clbench") or str(__import__("pathlib").Path(sys.executable).with_name("clbench"))
    times = {name: [] for name in COMMANDS}
    for _ in range(args.repeats):  # alternate, so that a busy moment of the machine hits every command alike
        for name, argv in COMMANDS.items():
            argv = [clbench, *argv[1:]] if argv[0] == "clbench" else argv
            start = time.perf_counter()
            subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
            times[name].append(time.perf_counter() - start)
    torch_s = statistics.median(times['python -c "import torch"'])
    print(f"median of {args.repeats} runs each, seconds (ratio to importing torch):")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"  {name:<28} {median:6.3f}  ({median / torch_s:.2f}x)")


if __name__ == "__main__":
    main()
