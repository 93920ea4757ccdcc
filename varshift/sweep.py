"""The jobs of ``varshift-train``: checked before Hydra makes their folders, and a sweep's report when it ends.

A refused config leaves no folder behind: :class:`CheckedLaunch` (a Hydra callback) validates a single run's
config before Hydra creates its run directory. A sweep whose settings are wrong, or whose data is missing, would
fail the same way in each of its jobs: :func:`check_sweep` (the recipes) and :class:`CheckedLaunch` (``varshift-train
-m`` itself) expand the sweep as Hydra's basic sweeper does (the preset's ``hydra.sweeper.params``, then the command
line's overrides), compose and validate every job's config, and load each dataset once; two jobs that are the same
run (the same setting and seed, :mod:`varshift.identity`) are refused.

A job's end is a result, whatever it is: complete, diverged (its summary.json says so) or failed (it said why
in one line). The sweep goes on to the next job, and its last line names the jobs that did not complete and
the command that continues the sweep; the exit status is 0 only when every job completed (1, or 130 after an
interrupt). The outcome of each job is read from its run directory, so the report is the same whichever
launcher ran the jobs (in this process, in joblib's workers, on SLURM nodes).
"""

from __future__ import annotations

import contextlib
import copy
import shlex
import sys
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from hydra import compose, initialize_config_module
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from varshift.checks import refuse
from varshift.config import register_schema, to_plain, validate
from varshift.identity import SUMMARY_FILE, complete_twin, readable_mapping, run_identity
from varshift.paths import CONF_PACKAGE
from varshift.processes import environment_ranks
from varshift.user_errors import reported_user_errors, user_message

PROG = "varshift-train"
# The launchers that run jobs on this machine: only there is the data the jobs will read visible now.
LOCAL_LAUNCHERS = ("BasicLauncher", "JoblibLauncher")
SHOWN_JOBS = 5  # per kind of outcome in the last line
INTERRUPTED_STATUS = 130  # 128 + SIGINT, as a shell reports a command stopped by Ctrl-C


class Job(NamedTuple):
    label: str  # its own overrides: what tells it from the other jobs of the sweep
    run_dir: Path
    config: dict  # validated, plain


def split_jobs(params: Mapping[str, Any], task: Sequence[str]) -> list[list[str]]:
    """The overrides of each job, in launch order, as Hydra's basic sweeper splits its ``params`` (the preset's
    ``hydra.sweeper.params``) followed by the command line's ``task`` overrides."""
    parser = OverridesParser.create()
    overrides = parser.parse_overrides([*(f"{key}={value}" for key, value in params.items()), *task])
    return BasicSweeper.split_arguments(overrides, max_batch_size=None)[0]


def sweep_jobs(overrides: Sequence[str]) -> list[list[str]]:
    """The overrides of each job of the sweep ``varshift-train -m <overrides>``, in launch order, without
    the ``hydra`` ones (the launcher's settings, the sweep's folder: nothing a job's config holds)."""
    parser = OverridesParser.create()
    task = [o for o in parser.parse_overrides(list(overrides)) if not o.is_hydra_override()]
    fixed = [o.input_line for o in task if not o.is_sweep_override()]
    params = compose("config", overrides=fixed, return_hydra_config=True).hydra.sweeper.params or {}
    return split_jobs(params, [o.input_line for o in task])


def job_label(job: Sequence[str], jobs: Sequence[Sequence[str]]) -> str:
    """The overrides of ``job`` that not every job of the sweep shares."""
    return " ".join(override for override in job if not all(override in other for other in jobs))


def validated_job(config: dict, job: Sequence[str], jobs: Sequence[Sequence[str]]) -> dict:
    """``validate(config)``; its ValueError names the job by its own overrides."""
    try:
        return validate(config)
    except ValueError as err:
        raise ValueError(f"the job {job_label(job, jobs) or ' '.join(job)} of the sweep: {err}") from err


def validated_jobs(overrides: Sequence[str]) -> list[dict]:
    """The validated config of every job of the sweep, in launch order.

    Raises the first job's ValueError, naming that job's own overrides.
    """
    register_schema()
    with initialize_config_module(config_module=CONF_PACKAGE, version_base="1.3"):
        jobs = sweep_jobs(overrides)
        return [validated_job(to_plain(compose("config", overrides=job)), job, jobs) for job in jobs]


def check_data(configs: Sequence[dict]) -> None:
    """Load each dataset of ``configs`` once; raises the data's error."""
    from varshift.data import load_dataset

    datasets = {(data["name"], data["root"], data["download"], data["verify"])
                for data in (config["dataset"] for config in configs)}
    for name, root, download, verify in sorted(datasets):
        load_dataset(name, root, download=download, verify=verify)


def check_sweep(overrides: Sequence[str]) -> int:
    """Validate every job of the sweep and load each of its datasets; return the number of jobs.

    Raises the first job's ValueError (naming that job's own overrides) or the data's error.
    """
    configs = validated_jobs(overrides)
    check_data(configs)
    return len(configs)


def refuse_repeated_runs(jobs: Sequence[Job]) -> None:
    """Two jobs that are one run (``dropout.rate=0.1,0.10``) would train it twice, or at once in one folder."""
    first: dict = {}
    for job in jobs:
        identity = run_identity(job.config)
        if identity in first:
            names = [other.label or other.run_dir.name for other in (first[identity], job)]
            jobs_named = f"the job {names[0]} twice" if names[0] == names[1] else f"the jobs {' and '.join(names)}"
            raise ValueError(f"the sweep has {jobs_named}: the same run (the same setting and seed) would be trained "
                             "twice; drop one of them")
        first[identity] = job


def task_config(job_config: DictConfig) -> dict:
    """The plain config of the job whose composed config (with its ``hydra`` node) is ``job_config``."""
    task = copy.deepcopy(job_config)
    with read_write(task), open_dict(task):
        del task["hydra"]
    return to_plain(task)


def planned_jobs(config: DictConfig) -> list[Job]:
    """Every job of the multirun whose config is ``config``, composed as its launcher will compose it (the same
    config loader, the same timestamps), with its run directory and its validated config."""
    loader = GlobalHydra.instance().config_loader()
    jobs = split_jobs(config.hydra.sweeper.params or {}, OmegaConf.to_container(config.hydra.overrides.task))
    hydra_config = HydraConfig.instance()
    previous = hydra_config.cfg
    planned = []
    try:
        for index, job in enumerate(jobs):
            job_config = loader.load_sweep_config(config, list(job))
            with open_dict(job_config):  # as the launchers do: hydra.job.num may name the job's folder
                job_config.hydra.job.id = f"{job_config.hydra.job.name}_{index}"
                job_config.hydra.job.num = index
            hydra_config.set_config(job_config)  # ${hydra:job.override_dirname} resolves from it
            run_dir = Path(str(job_config.hydra.sweep.dir)) / str(job_config.hydra.sweep.subdir)
            planned.append(Job(job_label(job, jobs), run_dir, validated_job(task_config(job_config), job, jobs)))
    finally:
        hydra_config.cfg = previous
    return planned


def continue_command(sweep_dir: Path, *overrides: str) -> str:
    """This command line again, with its sweep folder fixed (a folder named by the time would be a new one), and
    ``overrides`` (``key=value``) where it does not set their keys already."""
    args = sys.argv[1:]
    for override in (f"hydra.sweep.dir={sweep_dir}", *overrides):
        key = override.split("=")[0]
        if not any(arg.lstrip("+").startswith(f"{key}=") for arg in args):
            args = [*args, override]
    return f"{PROG} {shlex.join(args)}"


def listed(labels: Sequence[str]) -> str:
    more = len(labels) - SHOWN_JOBS
    return ", ".join(labels[:SHOWN_JOBS]) + (f" and {more} more" if more > 0 else "")


def stopped_on_error(check: Callable[[], None]) -> None:
    """Run ``check``; its error ends the command (one line for a user's mistake, else the traceback). Hydra turns
    a callback's exception into a warning and goes on: only SystemExit stops it."""
    try:
        with reported_user_errors(PROG):
            check()
    except Exception:  # a bug, or --debug
        traceback.print_exc()
        raise SystemExit(1) from None


class CheckedLaunch(Callback):
    """``varshift-train``: a run's config validated before Hydra makes its folder; with ``-m``, every job
    validated (and its data loaded) before the first starts, two jobs of one run refused, and the sweep's last
    line (:meth:`report`)."""

    launched: CheckedLaunch | None = None  # the sweep under way in this process, for the report of an interrupt

    def __init__(self) -> None:
        self.jobs: list[Job] = []
        self.sweep_dir = Path()

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        stopped_on_error(lambda: validate(task_config(config)))

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        stopped_on_error(lambda: self.plan(config))

    def plan(self, config: DictConfig) -> None:
        launcher = str(config.hydra.launcher._target_)
        if environment_ranks().distributed and not launcher.endswith("BasicLauncher"):
            refuse("hydra/launcher", launcher.rsplit(".", 1)[-1],
                   "the basic launcher under torchrun: its processes train each job of the sweep together, one job "
                   "after another (hydra/launcher=slurm_ddp gives each job processes of its own on SLURM)")
        if not str(config.hydra.sweeper._target_).endswith("BasicSweeper"):
            return  # another sweeper chooses its jobs as it goes
        self.jobs = planned_jobs(config)
        refuse_repeated_runs(self.jobs)
        if launcher.endswith(LOCAL_LAUNCHERS):
            check_data([job.config for job in self.jobs])
        self.sweep_dir = Path(str(config.hydra.sweep.dir))
        CheckedLaunch.launched = self

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if CheckedLaunch.launched is not self:
            return
        if not environment_ranks().main:
            # under torchrun rank 0 judges the sweep, and its status is the command's: this process may end its last
            # job before rank 0 has written that job's summary
            CheckedLaunch.launched = None
            return
        if not self.report():
            raise SystemExit(1)

    def outcome(self, job: Job, interrupted: bool) -> tuple[str, str]:
        """(complete, diverged, failed, interrupted or not started; a detail) of ``job``, from its run directory."""
        summary = readable_mapping(job.run_dir / SUMMARY_FILE) or {}
        status = summary.get("status")
        if status == "complete" or complete_twin(job.run_dir, job.config, self.sweep_dir):
            return "complete", ""
        if status == "diverged":
            kept = summary.get("checkpoint_epoch")
            return "diverged", (f"epoch {summary.get('epoch')}, "
                                + (f"checkpoint of epoch {kept} kept" if kept else "no checkpoint"))
        if not interrupted:
            return "failed", ""
        return ("interrupted", "") if job.run_dir.exists() else ("not started", "")

    def report(self, interrupted: bool = False) -> bool:
        """Print the sweep's last line (rank 0, under torchrun); whether every job completed."""
        CheckedLaunch.launched = None
        shown = environment_ranks().main
        by_kind: dict[str, list[str]] = {}
        for job in self.jobs:
            kind, detail = self.outcome(job, interrupted)
            by_kind.setdefault(kind, []).append((job.label or job.run_dir.name) + (f" ({detail})" if detail else ""))
        complete = len(by_kind.pop("complete", []))
        if not by_kind:
            if shown:
                print(f"{PROG}: every job of the sweep in {self.sweep_dir} is complete ({complete} jobs)")
            return True
        pieces = [f"{complete} of {len(self.jobs)} jobs of the sweep in {self.sweep_dir} are complete",
                  *(f"{kind}: {listed(labels)}" for kind, labels in by_kind.items())]
        if by_kind.keys() - {"diverged"}:
            pieces.append(f"continue with: {continue_command(self.sweep_dir)} (complete and diverged runs are skipped)")
        if "diverged" in by_kind:
            retry = continue_command(self.sweep_dir, "retry_diverged=true")
            pieces.append(f"to train the diverged ones again: {retry}")
        if shown:
            print(f"{PROG}: " + "; ".join(pieces), file=sys.stderr)
        return False


@contextlib.contextmanager
def reported_sweep() -> Iterator[None]:
    """The last line of a sweep that an interrupt ended (exit status 130), or a job that raised what is not a
    user's mistake (a bug: its traceback follows the line). A user's mistake that stops the sweep itself (its
    launcher cannot start) is its own last line."""
    try:
        yield
    except (KeyboardInterrupt, Exception) as error:
        sweep = CheckedLaunch.launched
        if sweep is None or (isinstance(error, Exception) and user_message(error) is not None):
            raise
        interrupted = isinstance(error, KeyboardInterrupt)
        sweep.report(interrupted=interrupted)
        if interrupted:
            raise SystemExit(INTERRUPTED_STATUS) from None
        raise
