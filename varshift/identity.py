"""A run's identity: its setting (every flattened config key but the seed and the neutral keys, see
:func:`varshift.vocabulary.setting_keys`) and its seed, whatever its folder is called.

Two folders whose configs have one identity hold the same run: ``varshift-train -m dropout.rate=0.1`` and
``varshift-train -m dropout.rate=0.1 seed=0`` name their folders differently but train the same network on the
same data with the same seed. The analysis counts such a run once, and a sweep does not train it again
(:func:`complete_twin`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

from varshift.config.schema import schema_defaults
from varshift.io import DamagedFile, read_mapping
from varshift.vocabulary import SEED_KEY, flatten, setting_keys

CONFIG_FILE, SUMMARY_FILE = "config.yaml", "summary.json"


class RunIdentity(NamedTuple):
    setting: tuple[tuple[str, Any], ...]  # (key, value) pairs, sorted by key; lists as tuples
    seed: Any


def frozen(value: Any) -> Any:
    """``value`` with its lists as tuples, so that it can be hashed."""
    return tuple(map(frozen, value)) if isinstance(value, (list, tuple)) else value


def flat_config(config: dict) -> dict:
    """``config`` (nested, plain) flattened, with each key it lacks (it was written before the key existed) at the
    value that keeps what varshift did before it: the schema's default, or None where a group sets it (a new
    option is off unless asked for). Runs trained before an upgrade stay the same runs."""
    flat = flatten(config)
    return {**{key: value for key, value in schema_defaults().items() if key not in flat}, **flat}


def run_identity(config: dict) -> RunIdentity:
    """The identity of the run whose (nested, plain) config is ``config``."""
    flat = flat_config(config)
    return RunIdentity(tuple(sorted((key, frozen(flat[key])) for key in setting_keys(flat))), flat.get(SEED_KEY))


def readable_mapping(path: Path) -> dict | None:
    """The mapping in ``path``; None when it is missing or cannot be read (a neighbour's problem, not ours)."""
    try:
        return read_mapping(path)
    except (OSError, DamagedFile):
        return None


def complete_twin(run_dir: Path, config: dict, sweep_dir: Path) -> Path | None:
    """Another folder of ``sweep_dir``, at the depth of ``run_dir``, that holds a complete run with the identity of
    ``config``; None if there is none (or ``run_dir`` is not in ``sweep_dir``)."""
    run_dir, sweep_dir = Path(run_dir).absolute(), Path(sweep_dir).absolute()
    if not run_dir.is_relative_to(sweep_dir) or run_dir == sweep_dir:
        return None
    identity = run_identity(config)
    depth = len(run_dir.relative_to(sweep_dir).parts)
    for folder in sorted(sweep_dir.glob("/".join(["*"] * depth))):
        if folder == run_dir or not folder.is_dir():
            continue
        summary = readable_mapping(folder / SUMMARY_FILE)
        if summary is None or summary.get("status") != "complete":
            continue
        saved = readable_mapping(folder / CONFIG_FILE)
        if saved is not None and run_identity(saved) == identity:
            return folder
    return None
