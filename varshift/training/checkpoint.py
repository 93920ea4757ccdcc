"""A run directory's config and checkpoint: written once and atomically, read back only when intact and when the
config is the same.

``checkpoint.pt`` carries a sha256 of its content (``varshift.io.write_verified``), so a truncated or damaged one is
named, never trained from. ``config.yaml`` is written once, before the first epoch; a rerun whose config differs
in a key that is not neutral (``varshift.vocabulary.is_neutral``) is refused.
"""

from __future__ import annotations

from io import BytesIO
from pathlib import Path

import torch
import yaml

from varshift.identity import CONFIG_FILE, flat_config
from varshift.io import CorruptFile, atomic_write_text, read_verified, write_verified
from varshift.vocabulary import NEUTRAL_KEYS, is_neutral

CHECKPOINT = "checkpoint.pt"


def save_checkpoint(path: Path, state: dict) -> None:
    buffer = BytesIO()
    torch.save(state, buffer)
    write_verified(path, buffer.getvalue())


def load_checkpoint(path: Path) -> dict:
    """The state a run saved in ``path``, after checking its content hash, with its tensors on the CPU (where the
    RNG states must be; ``load_state_dict`` moves the model's and the optimizer's to their device)."""
    try:
        payload = read_verified(path)
    except CorruptFile as error:
        raise CorruptFile(f"checkpoint {error}; delete it to start the run again") from None
    return torch.load(BytesIO(payload), map_location="cpu", weights_only=False)


def check_same_config(saved: dict, cfg: dict, source: Path) -> None:
    """Refuse ``cfg`` where it differs from the config ``saved`` in ``source`` in a key that is not neutral."""
    old, new = flat_config(saved), flat_config(cfg)
    changed = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k) and not is_neutral(k))
    if changed:
        details = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in changed)
        raise ValueError(f"{source} was written with another config ({details}); only {', '.join(NEUTRAL_KEYS)} "
                         "may change: resume with the same config or choose a new run directory (hydra.run.dir=...)")


def write_config(run_dir: Path, cfg: dict) -> None:
    """``config.yaml``, the run directory's config: written once, before the first epoch."""
    path = Path(run_dir) / CONFIG_FILE
    if not path.exists():
        atomic_write_text(path, yaml.safe_dump(cfg, sort_keys=False))
