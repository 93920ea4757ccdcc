"""Hydra callbacks of ``varshift-train``, registered under ``hydra.callbacks`` in ``conf/config.yaml``: the training
side (``varshift.training``) never imports ``varshift.analysis``, the configuration joins them."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from varshift.processes import environment_ranks
from varshift.tracking import read_summary

log = logging.getLogger(__name__)
SUMMARY = "summary.json"


def file_identity(path: Path) -> tuple[int, int] | None:
    """(inode, modification time) of ``path``, None if it does not exist: summary.json is replaced atomically, so
    a new one has a new identity. Compared within one host, unlike a timestamp against a clock."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return stat.st_ino, stat.st_mtime_ns


class RunReport(Callback):
    """Writes ``report.md`` (``varshift.analysis.report.write_run_report``) into the run directory of every job that
    completed its run: one that wrote a new summary.json with status complete. A skipped complete run, a refused
    or failed one is left as it was. A report that cannot be written is a warning, never a failed job. In
    data-parallel training every process runs the job, and rank 0 alone writes its report."""

    def __init__(self) -> None:
        # keyed by run directory: the jobs of a multirun may share one callback object
        self.summary_before: dict[str, tuple[int, int] | None] = {}

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        run_dir = config.hydra.runtime.output_dir
        self.summary_before[run_dir] = file_identity(Path(run_dir) / SUMMARY)

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        run_dir = Path(config.hydra.runtime.output_dir)
        before = self.summary_before.pop(str(run_dir), None)
        if not environment_ranks().main:
            return
        try:
            if job_return.status != JobStatus.COMPLETED or file_identity(run_dir / SUMMARY) in (None, before):
                return
            if read_summary(run_dir).get("status") != "complete":
                return
            # matplotlib and seaborn: imported only when a report is due
            from varshift.analysis.report import write_run_report

            log.info(f"wrote {write_run_report(run_dir)}")
        except Exception as error:
            log.warning(f"the report of {run_dir} could not be written ({type(error).__name__}: {error}); "
                        f"the run is complete: try again with varshift-analysis report {run_dir}")
