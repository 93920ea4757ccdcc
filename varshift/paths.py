"""Where varshift finds its Hydra configuration: the package ``varshift.conf`` (the checkout's top-level ``conf/``,
installed under that name), read through ``importlib.resources``, so that a checkout, an editable install and a
wheel all find it the same way. Hydra composes it from ``pkg://varshift.conf``."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

CONF_PACKAGE = "varshift.conf"
CONF_SEARCH_PATH = f"pkg://{CONF_PACKAGE}"
REPO_DIR = Path(__file__).resolve().parent.parent  # a checkout's root (README.md, experiments/); not in a wheel


def conf_file(group: str, name: str | None = None):
    """The file ``<group>/<name>.yaml`` of the configuration (``conf_file("config.yaml")`` for a top-level file)."""
    folder = files(CONF_PACKAGE)
    return folder / group if name is None else folder / group / f"{name}.yaml"


def conf_options(group: str) -> list[str]:
    """The options of a config group (``experiment``: ``channelwise``, ``demo``, ...), sorted."""
    return sorted(entry.name.removesuffix(".yaml") for entry in conf_file(group).iterdir()
                  if entry.name.endswith(".yaml"))


def sweep_dir(experiment: str, scale: str) -> Path:
    """Where a preset's sweep writes its runs (``conf/config.yaml``: ``hydra.sweep.dir``), relative to the
    folder the sweep was started in."""
    return Path("multirun") / experiment / scale


def results_dir(artifact: str, scale: str) -> Path:
    """Where a recipe or an analysis script writes an artifact's figures and tables."""
    return Path("results") / artifact / scale
