"""``varshift-train``: the Hydra app (its configuration is the package ``varshift.conf``, the checkout's ``conf/``).

Examples::

    varshift-train                                   # demo scale: small CNN, Fashion-MNIST
    varshift-train dropout=uniform dropout.rate=0.3 dropout.position=before_conv
    varshift-train -m dropout.rate=0.1,0.3,0.5 seed=0,1,2          # a sweep, one job per setting
    varshift-train -m experiment=fig4 scale=paper hydra/launcher=slurm
    varshift-train --presets                         # the experiment presets, one line each

A user's mistake (a bad config or override, missing data, a run directory in use, a launcher that cannot
start, a full disk or a read-only folder) ends the command with one line, ``varshift-train: error: ...``, and
exit status 2; ``--debug`` (or ``HYDRA_FULL_ERROR=1``) shows the traceback instead. A refused config is refused
before Hydra makes the run's folder (``varshift.sweep.CheckedLaunch``), so it leaves no empty folder behind.

A sweep (``-m``) checks every job before the first starts; then a job that diverges or fails does not stop it, a
run already complete in another folder of the sweep is not trained again, and its last line names the jobs that
did not complete and how to continue (exit status 1 when not all did).

A run names its folder when it starts; Ctrl-C (SIGINT) or SIGTERM ends it with one line, what it keeps and the
command that resumes it, and exit status 130 or 143. ``experiment=<preset>`` without ``-m`` is refused with the
commands that run the preset's sweep.

Data-parallel training: ``torchrun --nproc_per_node=N --no-python varshift-train <overrides>`` (or a SLURM job of
``hydra/launcher=slurm_ddp``) starts one process per GPU; each composes the same config and run directory (the
folder's time is the launch's, :func:`varshift.processes.launch_time`), rank 0 writes it, its log and its report, and
the others report nothing that rank 0 reports.

Torch is imported when a run starts, not before: ``--help`` and ``--presets`` answer at once.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import shlex
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from varshift.checks import refuse
from varshift.config import register_schema, to_plain
from varshift.errors import RunInterrupted, as_echo, is_echo
from varshift.paths import CONF_SEARCH_PATH, conf_options
from varshift.presets import preset_command, preset_lines
from varshift.processes import environment_ranks, launched_by_torchrun
from varshift.user_errors import reported_user_errors, request_tracebacks

PROG = "varshift-train"

register_schema()


def train(settings: dict, run_dir: Path, in_sweep: bool) -> tuple[dict, Path]:
    """The run's summary and folder: ``run_dir`` trained or resumed, or (in a sweep) another folder of the sweep
    that holds the complete run of the same setting and seed."""
    from varshift.identity import SUMMARY_FILE, complete_twin
    from varshift.rundir import read_run_file
    from varshift.training import distributed, run

    hydra_config = HydraConfig.get()

    def twin_run() -> tuple[dict, Path] | None:
        # a folder with a summary of its own is for run() to judge (complete, diverged, damaged)
        unjudged = in_sweep and not (run_dir / SUMMARY_FILE).exists()
        twin = complete_twin(run_dir, settings, Path(hydra_config.sweep.dir)) if unjudged else None
        if twin is None:
            return None
        print(f"{run_dir}: the same run (its setting and seed) is complete in {twin}; skipping it")
        with contextlib.suppress(OSError):  # the folder Hydra made for this job, unless something is in it
            run_dir.rmdir()
        return read_run_file(twin, SUMMARY_FILE), twin

    found = distributed.start(settings["trainer"]).shared(twin_run)  # rank 0 looks, the other processes follow
    if found is not None:
        return found
    # the workers of a killed joblib sweep, the processes of a killed torchrun, stop instead of training on
    watch_parent = hydra_config.launcher._target_.endswith("JoblibLauncher") or launched_by_torchrun()
    return run(settings, run_dir, stop_with_parent=watch_parent), run_dir


@hydra.main(version_base="1.3", config_path=CONF_SEARCH_PATH, config_name="config")
def train_app(cfg: DictConfig) -> float | None:
    from varshift.config import validate
    from varshift.errors import TrainingDiverged

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    in_sweep = HydraConfig.get().mode == RunMode.MULTIRUN
    main_process = environment_ranks().main
    if not main_process:
        without_log_files(logging.getLogger())  # rank 0 alone writes the run's log
    # Reported here, not only in main: Hydra would print its own line about the failed job first. A job of a
    # sweep that fails or diverges says so in one line and returns NaN: the sweep goes on, and its last line
    # (varshift.sweep.CheckedLaunch) counts the job from what its run directory holds.
    with reported_user_errors(PROG, in_sweep_job=in_sweep):
        settings = validate(to_plain(cfg))
        try:
            summary, where = train(settings, run_dir, in_sweep)
        except RunInterrupted as stop:
            restated = RunInterrupted(f"{stop}; resume it with: {resume_command(run_dir)}")
            restated.signum = stop.signum
            raise (as_echo(restated) if is_echo(stop) else restated) from None
        except TrainingDiverged as error:
            if not in_sweep:
                raise
            if not is_echo(error):
                print(f"{PROG}: {error}", file=sys.stderr)
            return math.nan
        if main_process:
            print(f"{where}: test accuracy {summary['test_acc']:.2f}%"
                  + (f", after BN recalibration {summary['test_acc_recalibrated']:.2f}%"
                     if "test_acc_recalibrated" in summary else "")
                  + f", mean shift {summary['mean_shift']:.4f}")
        return summary["test_acc"]
    return math.nan


def without_log_files(logger: logging.Logger) -> None:
    """``logger`` without its file handlers (Hydra's ``cli.log`` in the run directory)."""
    for handler in [handler for handler in logger.handlers if isinstance(handler, logging.FileHandler)]:
        logger.removeHandler(handler)
        handler.close()


def resume_command(run_dir: Path) -> str:
    """The command that resumes this job's run: its folder and the job's overrides (under torchrun, as many
    processes on each machine again)."""
    command = [PROG, f"hydra.run.dir={run_dir}", *HydraConfig.get().overrides.task]
    ranks = environment_ranks()
    if launched_by_torchrun():
        nodes = ranks.world_size // ranks.local_world_size
        command = ["torchrun", *([f"--nnodes={nodes}"] if nodes > 1 else []),
                   f"--nproc_per_node={ranks.local_world_size}", "--no-python", *command]
    return shlex.join(command)


def refuse_a_preset_without_multirun(args: list[str]) -> None:
    """``experiment=<preset>`` names a sweep (its ``hydra.sweeper.params``): without ``-m`` Hydra would train one run
    of the default setting under the preset's name. ValueError naming the commands that run the sweep."""
    if {"-m", "--multirun", "--cfg", "-c", "--help", "-h", "--hydra-help", "--info", "--resolve"} & set(args):
        return
    overrides = dict(arg.lstrip("+").split("=", 1) for arg in args if "=" in arg and not arg.startswith("-"))
    name = overrides.get("experiment")
    if name not in conf_options("experiment"):
        return  # no preset, or an unknown name, which Hydra reports with the known ones
    if (Path(overrides.get("hydra.run.dir", "")) / "config.yaml").is_file():
        return  # resumes a run of the preset's sweep (the command an interrupted job prints)
    scale = overrides.get("scale", "demo")
    others = [arg for arg in args if arg.lstrip("+").split("=", 1)[0] not in ("experiment", "scale")]
    refuse("experiment", name,
           f"a preset is a sweep and needs -m; run it with its recipe, {preset_command(name, scale)}"
           f"{''.join(' ' + shlex.quote(arg) for arg in others)}, or with "
           f"{shlex.join([PROG, '-m', f'experiment={name}', f'scale={scale}', *others])}")


def main() -> None:
    """The ``varshift-train`` command: the Hydra app, with ``--debug``, ``--presets`` and one-line user errors."""
    if "--presets" in sys.argv[1:]:
        print("\n".join(preset_lines()))
        return
    debug = "--debug" in sys.argv[1:]
    if debug:
        sys.argv.remove("--debug")
    request_tracebacks(debug)
    # Hydra then raises its composition errors (a bad override, an unknown group option) instead of printing them.
    os.environ["HYDRA_FULL_ERROR"] = "1"
    from varshift.sweep import reported_sweep

    with reported_user_errors(PROG), reported_interrupt(), reported_sweep():
        refuse_a_preset_without_multirun(sys.argv[1:])
        train_app()


@contextlib.contextmanager
def reported_interrupt() -> Iterator[None]:
    """An interrupted run ends the command with one line, what it keeps and the command that resumes it
    (:class:`RunInterrupted`), and exit status 128 + the signal's number; an interrupt before a run trains (or a
    second Ctrl-C while it winds down) with ``interrupted``. Never a traceback."""
    try:
        yield
    except RunInterrupted as stop:
        if not is_echo(stop):
            print(f"{PROG}: {stop}", file=sys.stderr)
        raise SystemExit(128 + getattr(stop, "signum", signal.SIGINT)) from None
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        raise SystemExit(128 + signal.SIGINT) from None


if __name__ == "__main__":
    main()
