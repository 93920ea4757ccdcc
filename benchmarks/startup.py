"""Seconds until varshift's command lines answer ``--help`` (and ``--presets``), against ``import torch`` alone.

Each command runs ``--repeat`` times in a fresh process; the median is printed with its ratio to the median
time of ``python -c "import torch"`` measured in the same run: a ratio below 1 says the command answers before
torch could even be imported.

    python benchmarks/startup.py [--repeat 5] [--json results/bench/startup.json]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from varshift.io import atomic_write_json

BIN = Path(sys.executable).parent
COMMANDS = {
    "varshift-train --help": [str(BIN / "varshift-train"), "--help"],
    "varshift-train --presets": [str(BIN / "varshift-train"), "--presets"],
    "varshift-analysis --help": [str(BIN / "varshift-analysis"), "--help"],
    "varshift-audit --help": [str(BIN / "varshift-audit"), "--help"],
}
BASELINE = ("python -c 'import torch'", [sys.executable, "-c", "import torch"])


def median_seconds(command: list[str], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5, help="runs per command; the median counts (5)")
    parser.add_argument("--json", metavar="PATH", help="also write the results to PATH")
    args = parser.parse_args(argv)
    missing = [name for name, command in COMMANDS.items() if shutil.which(command[0]) is None]
    if missing:
        parser.error(f"not installed next to {sys.executable}: {', '.join(missing)} (run make install)")
    baseline = median_seconds(BASELINE[1], args.repeat)
    report = {"baseline": BASELINE[0], "baseline_s": baseline, "repeat": args.repeat, "commands": {}}
    print(f"{BASELINE[0]:<28} {baseline:6.2f} s  (baseline)")
    for name, command in COMMANDS.items():
        seconds = median_seconds(command, args.repeat)
        report["commands"][name] = {"seconds": seconds, "ratio": seconds / baseline}
        print(f"{name:<28} {seconds:6.2f} s  {seconds / baseline:5.2f} x baseline")
    if args.json:
        atomic_write_json(args.json, report)
    return report


if __name__ == "__main__":
    main()
