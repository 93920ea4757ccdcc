"""Run one paper artifact end to end: the multirun of its experiment preset, then its analysis.

At ``scale=paper`` the preset's own sweep runs (the paper's networks on CIFAR). At ``smoke`` and
``demo`` the network and dataset axes of the sweep are replaced by the scale's stand-ins
(``scale.models`` / ``scale.datasets`` in ``conf/scale/<scale>.yaml``), so the same artifact runs on
a laptop. Finished runs are skipped, so an interrupted recipe is simply started again.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from omegaconf import OmegaConf

from varshift.config import SCALES
from varshift.paths import CONF_DIR


def scale_axes(scale: str) -> list[str]:
    """Overrides that put the scale's networks and datasets in place of the paper's."""
    if scale == "paper":
        return []
    stand_ins = OmegaConf.load(CONF_DIR / "scale" / f"{scale}.yaml").scale
    return [f"model={','.join(stand_ins.models)}", f"dataset={','.join(stand_ins.datasets)}"]


def seed_list(text: str) -> list[int]:
    try:
        return [int(seed) for seed in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of whole numbers") from None


def train_command(experiment: str, scale: str, seeds: Sequence[int] | None, launcher: str | None,
                  overrides: Sequence[str]) -> list[str]:
    command = [sys.executable, "-m", "varshift.cli", "-m", f"experiment={experiment}", f"scale={scale}",
               *scale_axes(scale)]
    if seeds:
        command.append("seed=" + ",".join(str(s) for s in seeds))
    if launcher:
        command.append(f"hydra/launcher={launcher}")
    return command + list(overrides)


def sweep_dir(experiment: str, scale: str) -> Path:
    return Path("multirun") / experiment / scale


def analysis_command(artifact: str, experiment: str, scale: str, out: Path) -> list[str]:
    return [sys.executable, "-m", "analysis", artifact, str(sweep_dir(experiment, scale)), "--out", str(out)]


def run(command: list[str]) -> None:
    print("+", shlex.join(command), flush=True)
    subprocess.run(command, check=True)


def main(experiment: str, artifacts: Sequence[str], scale_overrides: dict[str, list[str]] | None = None,
         extra_sweeps: Sequence[Sequence[str]] = (), argv: Sequence[str] | None = None) -> int:
    """Command line of one recipe: ``python experiments/<name>.py --scale demo [--seeds 0,1,2] [overrides]``.

    ``extra_sweeps``: overrides of further multiruns into the same folder (settings the preset's grid
    cannot express, such as a baseline without dropout beside a kind x position grid).
    """
    parser = argparse.ArgumentParser(
        prog=f"experiments/{experiment}.py",
        description=f"Run the '{experiment}' experiment (conf/experiment/{experiment}.yaml) as a Hydra multirun, "
                    f"then write {', '.join(artifacts)} under results/{experiment}/<scale>/.")
    parser.add_argument("--scale", choices=SCALES, default="demo", help="smoke | demo | paper (default: demo)")
    parser.add_argument("--seeds", type=seed_list,
                        help="seeds to sweep, comma-separated: 0,1,2 (default: the preset's)")
    parser.add_argument("--launcher", help="Hydra launcher: joblib, local (2 parallel jobs), slurm, submitit_slurm")
    parser.add_argument("--skip-training", action="store_true", help="only run the analysis of existing runs")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides, e.g. trainer.epochs=2")
    args = parser.parse_args(argv)
    overrides = [*(scale_overrides or {}).get(args.scale, []), *args.overrides]
    if not args.skip_training:
        for sweep in ([], *extra_sweeps):
            run(train_command(experiment, args.scale, args.seeds, args.launcher, [*sweep, *overrides]))
    out = Path("results") / experiment / args.scale
    for artifact in artifacts:
        run(analysis_command(artifact, experiment, args.scale, out))
    print(f"results in {out}")
    return 0
