"""Run directories (or a wandb project) -> one tidy DataFrame with one row per complete run.

A run's row holds its config (``config.yaml`` in the run directory) flattened with dotted names
(``dropout.rate``, ``model.kwargs.widen_factor``), its ``summary.json`` (``test_error``, ``mean_shift``, ...,
``versions.torch``), where it came from (``run_dir`` or ``wandb_path``) and ``setting_keys``: the config keys
that define its setting, every key but the seed and the neutral ones (:func:`varshift.vocabulary.setting_keys`).
Runs that differ only in their seed are repetitions of one setting; runs that differ in any other config
key (``optim.lr`` included) are different settings. The per-layer and per-epoch files of the runs
(``variance.csv``, ``alignment.csv``, ``metrics.jsonl``) are read by :func:`collect_records`, which tags every
record with its run's settings.

A run whose files cannot be read (cut short by a copy, damaged) is skipped with a warning naming the run and
the file, and the rest are reported.
"""

from __future__ import annotations

import io
import json
import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import pandas as pd

from varshift.identity import CONFIG_FILE, SUMMARY_FILE, run_identity
from varshift.io import DamagedFile, complete_text, read_mapping
from varshift.vocabulary import flatten, setting_keys

RECORD_FILES = {"variance": "variance.csv", "alignment": "alignment.csv", "metrics": "metrics.jsonl"}
SETTING_KEYS = "setting_keys"  # the column that lists each run's setting columns


def find_run_dirs(paths: Iterable[str | Path]) -> list[Path]:
    """Every run directory (a folder with ``config.yaml`` or ``summary.json``) at or under ``paths``, in the order
    found, following links to folders.

    A folder is searched once, however many links lead to it: a link back to a folder already searched (a loop,
    or a second way to one run) is skipped with a warning, as are broken links and folders that cannot be read.
    A folder inside a run directory is not a run (wandb keeps a config.yaml of its own in the run's wandb/).
    """
    found: list[Path] = []
    searched: dict[tuple[int, int], Path] = {}
    for path in map(Path, paths):
        if not path.is_dir():
            raise ValueError(f"run folder {str(path)!r} does not exist or is not a folder")
        pending = [path]
        while pending:
            folder = pending.pop()
            try:
                status = folder.stat()
                entries = sorted(os.scandir(folder), key=lambda entry: entry.name)
            except OSError as error:
                skip(folder, f"it cannot be read ({error.strerror})")
                continue
            key = (status.st_dev, status.st_ino)
            if key in searched:
                skip(folder, f"it leads to {searched[key]}, which is searched already")
                continue
            searched[key] = folder
            if any(entry.name in (CONFIG_FILE, SUMMARY_FILE) and entry.is_file() for entry in entries):
                found.append(folder)
                continue
            for entry in reversed(entries):  # the stack pops them in name order
                if entry.is_dir():
                    pending.append(Path(entry.path))
                elif entry.is_symlink() and not os.path.exists(entry.path):
                    skip(entry.path, f"it is a broken link (to {os.readlink(entry.path)})")
    return found


def plain_values(row: Mapping) -> dict:
    """Lists (``model.kwargs.channels``) become tuples, so that every column can be grouped on."""
    return {key: tuple(value) if isinstance(value, list) else value for key, value in row.items()}


def run_row(config: Mapping, summary: Mapping, source: Mapping) -> dict:
    """The DataFrame row of one run; the run-directory and the wandb paths both build rows here."""
    flat_config = flatten(dict(config))
    return plain_values({**source, **flat_config, **flatten(dict(summary)),
                         SETTING_KEYS: setting_keys(flat_config)})


def skip(run: str | Path, reason: str) -> None:
    warnings.warn(f"skipping {run}: {reason}", stacklevel=3)


def read_run(run_dir: Path) -> tuple[dict, dict] | None:
    """The config and the summary of a complete run; None (with a warning) for a run that is unfinished or cannot
    be read."""
    summary_path, config_path = run_dir / SUMMARY_FILE, run_dir / CONFIG_FILE
    if not summary_path.exists():
        skip(run_dir, f"it has no {SUMMARY_FILE} (the run has not finished)")
        return None
    if not config_path.exists():
        skip(run_dir, f"it has no {CONFIG_FILE}, so its settings are unknown")
        return None
    try:
        summary, config = read_mapping(summary_path), read_mapping(config_path)
    except DamagedFile as error:
        skip(run_dir, str(error))
        return None
    if summary.get("status") != "complete":
        skip(run_dir, f"{SUMMARY_FILE} has status {summary.get('status')!r}, not 'complete'")
        return None
    return config, summary


def counted_once(runs: Iterable[tuple[str, dict, dict]]) -> Iterable[tuple[str, dict, dict]]:
    """The ``(where, config, summary)`` runs, each identity (setting and seed) once: a run found again under
    another name (a sweep relaunched with ``seed=0`` spelt out) is the same run, not a second seed."""
    counted: dict = {}
    for where, config, summary in runs:
        identity = run_identity(config)
        if identity in counted:
            skip(where, f"it is the same run (the same setting and seed) as {counted[identity]}, which is counted "
                        "once")
            continue
        counted[identity] = where
        yield where, config, summary


def runs_frame(rows: list[dict], where: str) -> pd.DataFrame:
    if not rows:
        raise ValueError(f"no complete runs in {where}")
    return pd.DataFrame(rows)


def collect(paths: Iterable[str | Path]) -> pd.DataFrame:
    """One row per complete run found at or under ``paths`` (run directories and multirun folders mixed).

    Runs that are unfinished (no ``summary.json``, or a status other than ``complete``) or whose
    ``summary.json`` or ``config.yaml`` cannot be read are skipped with a warning, and so is a run found a second
    time in another folder (the same setting and seed, :mod:`varshift.identity`).
    """
    paths = [Path(p) for p in paths]
    if not paths:
        raise ValueError("no run folders given: pass run directories or multirun folders")
    run_dirs, where = find_run_dirs(paths), ", ".join(map(str, paths))
    if not run_dirs:
        raise ValueError(f"no run directories (with {CONFIG_FILE} or {SUMMARY_FILE}) under {where}")
    runs = ((str(run_dir), *run) for run_dir in run_dirs if (run := read_run(run_dir)) is not None)
    rows = [run_row(config, summary, {"run_dir": run_dir}) for run_dir, config, summary in counted_once(runs)]
    return runs_frame(rows, f"the {len(run_dirs)} run directories under {where}")


def collect_wandb(project: str, entity: str | None = None) -> pd.DataFrame:
    """The runs of a wandb project as :func:`collect` gives them (needs network and a wandb login).

    Only the config and the summary are fetched, so per-layer records (:func:`collect_records`) need the run
    directories themselves.
    """
    import wandb  # only this function needs wandb

    path = f"{entity}/{project}" if entity else project
    complete = []
    for run in wandb.Api().runs(path):
        # wandb's own keys (_step, ...) and the per-epoch logs (mean_shift/final, ...) are not summary.json's
        summary = {key: value for key, value in dict(run.summary).items()
                   if not key.startswith("_") and "/" not in key}
        if summary.get("status") != "complete":
            skip(f"wandb run {'/'.join(run.path)}", f"its summary has status {summary.get('status')!r}, "
                                                    "not 'complete'")
            continue
        complete.append(("/".join(run.path), dict(run.config), summary))
    rows = [run_row(config, summary, {"wandb_path": where}) for where, config, summary in counted_once(complete)]
    return runs_frame(rows, f"wandb project {path!r}")


def setting_columns(df: pd.DataFrame) -> list[str]:
    """The columns of ``df`` that define a setting: its runs' config keys but the seed and the neutral keys."""
    if SETTING_KEYS not in df:
        raise ValueError(f"these rows have no {SETTING_KEYS!r} column, so their settings are unknown; "
                         "read runs with varshift.analysis.collect (or collect_wandb) and records with collect_records")
    keys = {key for keys in set(df[SETTING_KEYS]) for key in keys}
    return [column for column in df.columns if column in keys]


def distinguishing_settings(df: pd.DataFrame, by: Sequence[str] = (), ignore: Sequence[str] = ()) -> list[str]:
    """Setting columns (besides ``by`` and ``ignore``) that tell apart the settings of the rows that ``by``
    alone does not.

    In column order, each setting column is taken when it still varies once ``by`` and the columns taken
    before it are fixed: ``optim.lr`` is taken when two runs of one model differ in it, not when it only
    follows the model (each model its own recipe). None (and no ``ignore``): the rows of each ``by`` group
    share one setting.
    """
    chosen: list[str] = []
    for column in setting_columns(df):
        if column in by or column in ignore:
            continue
        keys = [*by, *chosen]
        most = df.groupby(keys, dropna=False)[column].nunique(dropna=False).max() if keys else df[column].nunique(
            dropna=False)
        if most > 1:
            chosen.append(column)
    return chosen


def read_records(run_dir: Path, kind: str) -> pd.DataFrame:
    """The ``kind`` records of one run; DamagedFile when its file cannot be read."""
    path = run_dir / RECORD_FILES[kind]
    if not path.exists():
        raise ValueError(f"run {run_dir} has no {path.name}; it is needed for the {kind} records")
    text = complete_text(path)
    try:
        if kind == "metrics":
            return pd.DataFrame([json.loads(line) for line in text.splitlines() if line.strip()])
        return pd.read_csv(io.StringIO(text))
    except ValueError as error:  # json's and pandas' parse errors
        raise DamagedFile(f"{path.name} is damaged ({type(error).__name__}: {error})") from None


def collect_records(runs: pd.DataFrame, kind: str) -> pd.DataFrame:
    """The ``kind`` records (variance, alignment or metrics) of every run, tagged with ``run_dir``, ``seed``
    and the run's setting columns. A run whose file cannot be read is left out with a warning."""
    if kind not in RECORD_FILES:
        raise ValueError(f"record kind {kind!r} is not known; allowed: {', '.join(RECORD_FILES)}")
    if "run_dir" not in runs or runs["run_dir"].isna().any():
        raise ValueError(f"{RECORD_FILES[kind]} is read from run directories; "
                         "these runs (from wandb?) have none")
    tags = runs[["run_dir", *(["seed"] if "seed" in runs else []), *setting_columns(runs), SETTING_KEYS]]
    frames = []
    for run in tags.to_dict("records"):
        try:
            frame = read_records(Path(run["run_dir"]), kind)
        except DamagedFile as error:
            skip(run["run_dir"], str(error))
            continue
        for column, value in run.items():
            frame[column] = [value] * len(frame)  # a list, so a tuple value stays one value
        frames.append(frame)
    if not frames:
        raise ValueError(f"none of the {len(tags)} runs has a readable {RECORD_FILES[kind]}")
    return pd.concat(frames, ignore_index=True)
