"""Run one paper artifact end to end: the multirun of its experiment preset, then its analysis.

The recipe launches exactly ``varshift-train -m experiment=<name> scale=<scale>`` (plus the seeds and
overrides given): the preset takes its network and dataset axes from the scale (``conf/scale/<scale>.yaml``),
the paper's networks on CIFAR at ``paper``, small stand-ins on Fashion-MNIST at ``smoke`` and ``demo``.
Finished runs are skipped, so an interrupted recipe is simply started again.

Before anything is launched every job of every sweep is validated and each dataset loaded once
(``varshift.sweep.check_sweep``): a bad setting or missing data fails once, in one line, not once per
job; the recipe stops at the first command that fails.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from varshift.paths import results_dir, sweep_dir
from varshift.sweep import check_sweep
from varshift.user_errors import reported_user_errors, request_tracebacks
from varshift.vocabulary import SCALES


def seed_list(text: str) -> list[int]:
    try:
        return [int(seed) for seed in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of whole numbers") from None


def sweep_overrides(experiment: str, scale: str, seeds: Sequence[int] | None, overrides: Sequence[str]) -> list[str]:
    """The overrides of ``varshift-train -m`` for the preset's sweep at ``scale``."""
    seed_axis = ["seed=" + ",".join(str(s) for s in seeds)] if seeds else []
    return [f"experiment={experiment}", f"scale={scale}", *seed_axis, *overrides]


def train_command(sweep: Sequence[str], launcher: str | None) -> list[str]:
    command = [sys.executable, "-m", "varshift.cli", "-m", *sweep]
    return command + ([f"hydra/launcher={launcher}"] if launcher else [])


def analysis_command(artifact: str, experiment: str, scale: str, out: Path) -> list[str]:
    return [sys.executable, "-m", "varshift.analysis", artifact, str(sweep_dir(experiment, scale)), "--out", str(out)]


def run(command: list[str]) -> None:
    """Run ``command``; if it fails (it has said why), stop the recipe with its exit status."""
    print("+", shlex.join(command), flush=True)
    returncode = subprocess.run(command).returncode
    if returncode:
        raise SystemExit(returncode)


def main(experiment: str, artifacts: Sequence[str], extra_sweeps: Sequence[Sequence[str]] = (),
         argv: Sequence[str] | None = None) -> int:
    """Command line of one recipe: ``python experiments/<name>.py --scale demo [--seeds 0,1,2] [overrides]``.

    ``extra_sweeps``: overrides of further multiruns into the same folder (settings the preset's grid
    cannot express, such as a baseline without dropout beside a kind x position grid).
    """
    parser = argparse.ArgumentParser(
        prog=f"experiments/{experiment}.py",
        description=f"Run the '{experiment}' experiment (conf/experiment/{experiment}.yaml) as a Hydra "
                    f"multirun, then write {', '.join(artifacts)} under results/{experiment}/<scale>/.")
    parser.add_argument("--scale", choices=SCALES, default="demo", help=f"{' | '.join(SCALES)} (default: demo)")
    parser.add_argument("--seeds", type=seed_list,
                        help="seeds to sweep, comma-separated: 0,1,2 (default: the preset's)")
    parser.add_argument("--launcher", help="Hydra launcher: local (joblib, 2 parallel jobs), slurm (one SLURM job "
                                           "per run), slurm_ddp (one SLURM job per run, data-parallel on "
                                           "several GPUs), submitit_local (the SLURM path on this machine)")
    parser.add_argument("--skip-training", action="store_true", help="only run the analysis of existing runs")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides, e.g. trainer.epochs=2")
    args = parser.parse_args(argv)
    request_tracebacks(args.debug)
    if not args.skip_training:
        sweeps = [sweep_overrides(experiment, args.scale, args.seeds, [*extra, *args.overrides])
                  for extra in ([], *extra_sweeps)]
        with reported_user_errors(parser.prog):
            for sweep in sweeps:
                print(f"checked the {check_sweep(sweep)} jobs of {shlex.join(sweep)}", flush=True)
        for sweep in sweeps:
            run(train_command(sweep, args.launcher))
    out = results_dir(experiment, args.scale)
    for artifact in artifacts:
        run(analysis_command(artifact, experiment, args.scale, out))
    print(f"results in {out}")
    return 0
