"""A run that is the same computation as one already complete in another sweep is not trained again.

Two configs are the same computation (:func:`computation`) when they train the same network from the same seed on the
same data with the same schedule: whatever their experiment preset (``experiment_name``), the scale's sweep axes
(``scale.*``), how the end-of-run probe is made (``probe.batches``, ``probe.recalibrate*``, the neutral keys), and
where a dropout sits that draws no noise (kind none, or rate 0: every such network computes what the one without dropout
computes). The no-dropout baseline is thus one computation at every position of Figure 4 and in Tables 3, 4 and 6, and
Table 3's runs are Figure 4's at rate 0.5.

A job of a sweep (its directory ``<root>/<experiment>/<scale>/<job>``, as ``hydra.sweep.dir`` lays them out) looks for
such a run in the sweeps beside its own (``<root>/*/<scale>/*``). When it finds one, it starts from that run's last
checkpoint, written after its last epoch, with its own config: the trainer then has no epoch left to train and makes
the end-of-run measurement with the job's own config and model (the flags that differ by position, such as
``fed_by_dropout``, are the job's), so its results are bit-identical to training it. Runs that probe during training
(``probe.every``) are not reused: their per-epoch probes are measured on the run's own model.
"""

from __future__ import annotations

from pathlib import Path

from varshift.identity import CONFIG_FILE, SUMMARY_FILE, flat_config, readable_mapping
from varshift.training import checkpoint
from varshift.vocabulary import is_neutral

# keys that cannot change a run's training, only its end-of-run measurement or where it is filed
MEASUREMENT_KEYS = ("experiment_name", "probe.batches", "probe.recalibrate", "probe.recalibrate_batches")
SILENT_DROPOUT = {"dropout.kind": "none", "dropout.rate": 0.0, "dropout.channelwise": False, "dropout.position": "none"}
SWEEP_MARKER = "multirun.yaml"  # Hydra writes it into every sweep folder


def computation(cfg: dict) -> dict:
    """The keys of ``cfg`` (flattened) that decide what its training computes, with a silent dropout as none."""
    flat = {key: value for key, value in flat_config(cfg).items()
            if not is_neutral(key) and key not in MEASUREMENT_KEYS and not key.startswith("scale.")}
    if flat["dropout.kind"] == "none" or float(flat["dropout.rate"]) == 0.0:
        flat.update(SILENT_DROPOUT)
    return flat


def reusable(cfg: dict) -> bool:
    return not cfg["probe"]["every"]


def complete_config(run_dir: Path) -> dict | None:
    """The config of a complete run directory with a checkpoint, or None (unfinished, damaged, or another kind)."""
    summary, config = readable_mapping(run_dir / SUMMARY_FILE), readable_mapping(run_dir / CONFIG_FILE)
    if summary is None or summary.get("status") != "complete" or config is None:
        return None
    return config if (run_dir / checkpoint.CHECKPOINT).exists() else None


def find_same_computation(cfg: dict, run_dir: Path) -> Path | None:
    """A complete run of a sweep beside ``run_dir``'s whose training is the same computation as ``cfg``'s, or None."""
    run_dir = Path(run_dir).resolve()
    if not reusable(cfg) or not (run_dir.parent / SWEEP_MARKER).exists():
        return None
    wanted = computation(cfg)
    for candidate in sorted(run_dir.parents[2].glob(f"*/{run_dir.parent.name}/*/{SUMMARY_FILE}")):
        source = candidate.parent
        config = None if source == run_dir else complete_config(source)
        if config is not None and reusable(config) and computation(config) == wanted:
            return source
    return None


def start_from_same_computation(cfg: dict, run_dir: Path) -> Path | None:
    """In a fresh ``run_dir`` (no checkpoint yet), write the last checkpoint of a complete run of the same computation
    with ``cfg`` in it, so that the trainer resumes after its last epoch; returns that run, or None."""
    if (Path(run_dir) / checkpoint.CHECKPOINT).exists():
        return None
    source = find_same_computation(cfg, run_dir)
    if source is None:
        return None
    state = checkpoint.load_checkpoint(source / checkpoint.CHECKPOINT)
    state["config"] = cfg
    state["recorder"]["wandb_id"] = None  # this run is not the source's wandb run: it gets one of its own
    checkpoint.save_checkpoint(Path(run_dir) / checkpoint.CHECKPOINT, state)
    print(f"{run_dir}: the same training as {source} (complete); measuring it with this run's config")
    return source
