"""Run directories (or a wandb project) -> one tidy DataFrame with one row per complete run.

A run's row holds its composed config flattened with dotted names (``dropout.rate``,
``model.kwargs.widen_factor``), its ``summary.json`` (``test_error``, ``mean_shift``, ...,
``versions.torch``) and where it came from (``run_dir`` or ``wandb_path``). The per-layer and
per-epoch files of the runs (``variance.csv``, ``alignment.csv``, ``metrics.jsonl``) are read by
:func:`collect_records`, which tags every record with its run's settings.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path

import pandas as pd
from omegaconf import OmegaConf

from varshift.tracking import flatten

# The columns that define an experimental setting: runs that differ only in other columns (the seed,
# the device, the data folder) are repetitions of one setting. model.kwargs.* columns count too.
SETTING_COLUMNS = ("experiment_name", "scale.name", "dataset.name", "model.name", "dropout.kind",
                   "dropout.rate", "dropout.channelwise", "dropout.position")
RECORD_FILES = {"variance": "variance.csv", "alignment": "alignment.csv", "metrics": "metrics.jsonl"}


def find_run_dirs(paths: Iterable[str | Path]) -> list[Path]:
    """Every run directory (a folder with ``.hydra/config.yaml`` or ``summary.json``) under ``paths``."""
    found = set()
    for path in map(Path, paths):
        if not path.is_dir():
            raise ValueError(f"run folder {str(path)!r} does not exist or is not a folder")
        configs = (p for p in path.rglob("config.yaml") if p.parent.name == ".hydra")
        markers = [*path.rglob("summary.json"), *configs]
        found.update(m.parent.parent if m.parent.name == ".hydra" else m.parent for m in markers)
    return sorted(found)


def plain_values(row: Mapping) -> dict:
    """Lists (``model.kwargs.channels``) become tuples, so that every column can be grouped on."""
    return {key: tuple(value) if isinstance(value, list) else value for key, value in row.items()}


def run_row(config: Mapping, summary: Mapping, source: Mapping) -> dict:
    """The DataFrame row of one run; the run-directory and the wandb paths both build rows here."""
    return plain_values({**source, **flatten(dict(config)), **flatten(dict(summary))})


def read_run(run_dir: Path) -> dict | None:
    """The row of a complete run; None (with a warning) for a run that is missing or not finished."""
    config_path, summary_path = run_dir / ".hydra" / "config.yaml", run_dir / "summary.json"
    if not summary_path.exists():
        warnings.warn(f"skipping {run_dir}: it has no summary.json (the run has not finished)", stacklevel=2)
        return None
    summary = json.loads(summary_path.read_text())
    if summary.get("status") != "complete":
        warnings.warn(f"skipping {run_dir}: summary.json has status {summary.get('status')!r}, "
                      "not 'complete'", stacklevel=2)
        return None
    if not config_path.exists():
        warnings.warn(f"skipping {run_dir}: it has no .hydra/config.yaml, so its settings are unknown",
                      stacklevel=2)
        return None
    config = OmegaConf.to_container(OmegaConf.load(config_path), resolve=False)
    return run_row(config, summary, {"run_dir": str(run_dir)})


def runs_frame(rows: list[dict], where: str) -> pd.DataFrame:
    if not rows:
        raise ValueError(f"no complete runs in {where}")
    return pd.DataFrame(rows)


def collect(paths: Iterable[str | Path]) -> pd.DataFrame:
    """One row per complete run found at or under ``paths`` (run directories and multirun folders mixed).

    Incomplete runs (no ``summary.json``, or a status other than ``complete``) are skipped with a warning.
    """
    paths = [Path(p) for p in paths]
    if not paths:
        raise ValueError("no run folders given: pass run directories or multirun folders")
    run_dirs, where = find_run_dirs(paths), ", ".join(map(str, paths))
    if not run_dirs:
        raise ValueError(f"no run directories (with .hydra/config.yaml or summary.json) under {where}")
    rows = [row for row in map(read_run, run_dirs) if row is not None]
    return runs_frame(rows, f"the {len(run_dirs)} run directories under {where}")


def collect_wandb(project: str, entity: str | None = None) -> pd.DataFrame:
    """The runs of a wandb project as :func:`collect` gives them (needs network and a wandb login).

    Only the config and the summary are fetched, so per-layer records (:func:`collect_records`) need the run
    directories themselves.
    """
    import wandb  # only this function needs wandb

    path = f"{entity}/{project}" if entity else project
    rows = []
    for run in wandb.Api().runs(path):
        # wandb's own keys (_step, ...) and the per-epoch logs (mean_shift/final, ...) are not summary.json's
        summary = {key: value for key, value in dict(run.summary).items()
                   if not key.startswith("_") and "/" not in key}
        if summary.get("status") != "complete":
            warnings.warn(f"skipping wandb run {'/'.join(run.path)}: its summary has status "
                          f"{summary.get('status')!r}, not 'complete'", stacklevel=2)
            continue
        rows.append(run_row(run.config, summary, {"wandb_path": "/".join(run.path)}))
    return runs_frame(rows, f"wandb project {path!r}")


def setting_columns(df: pd.DataFrame) -> list[str]:
    """The :data:`SETTING_COLUMNS` and ``model.kwargs.*`` columns that ``df`` has."""
    return [c for c in SETTING_COLUMNS if c in df] + sorted(c for c in df if c.startswith("model.kwargs."))


def varying_settings(df: pd.DataFrame, exclude: Iterable[str] = ()) -> list[str]:
    """Setting columns (other than ``exclude``) that take more than one value among the runs of ``df``."""
    exclude = set(exclude)
    return [c for c in setting_columns(df) if c not in exclude and df[c].nunique(dropna=False) > 1]


def read_records(run_dir: Path, kind: str) -> pd.DataFrame:
    path = run_dir / RECORD_FILES[kind]
    if not path.exists():
        raise ValueError(f"run {run_dir} has no {path.name}; it is needed for the {kind} records")
    if kind == "metrics":
        return pd.DataFrame([json.loads(line) for line in path.read_text().splitlines() if line.strip()])
    return pd.read_csv(path)


def collect_records(runs: pd.DataFrame, kind: str) -> pd.DataFrame:
    """The ``kind`` records (variance, alignment or metrics) of every run, tagged with ``run_dir``, ``seed``
    and the run's setting columns."""
    if kind not in RECORD_FILES:
        raise ValueError(f"record kind {kind!r} is not known; allowed: {', '.join(RECORD_FILES)}")
    if "run_dir" not in runs or runs["run_dir"].isna().any():
        raise ValueError(f"{RECORD_FILES[kind]} is read from run directories; "
                         "these runs (from wandb?) have none")
    tags = runs[["run_dir", *(["seed"] if "seed" in runs else []), *setting_columns(runs)]]
    frames = []
    for run in tags.to_dict("records"):
        frame = read_records(Path(run["run_dir"]), kind)
        for column, value in run.items():
            frame[column] = [value] * len(frame)  # a list, so a tuple value stays one value
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)
