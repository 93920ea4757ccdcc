"""The experiment presets (``varshift/conf/experiment/<name>.yaml``): what each reproduces, the command that
runs it."""

from __future__ import annotations

from pathlib import Path

from varshift.paths import CONF_DIR, REPO_DIR


def preset_description(path: Path) -> str:
    """The preset file's first comment line that is not a Hydra directive (``# @package _global_``)."""
    for line in path.read_text().splitlines():
        if line.startswith("#") and not line.startswith("# @"):
            return line.lstrip("# ").rstrip()
    return ""


def preset_command(name: str) -> str:
    """The preset's recipe (its multirun and its analysis) when it has one, else its multirun."""
    if (REPO_DIR / "experiments" / f"{name}.py").exists():
        return f"python experiments/{name}.py --scale demo"
    return f"varshift-train -m experiment={name} scale=demo"


def preset_lines() -> list[str]:
    """One line per preset, sorted by name: name, description, command."""
    paths = sorted((CONF_DIR / "experiment").glob("*.yaml"))
    width = max((len(path.stem) for path in paths), default=0)
    return [f"{path.stem:<{width}}  {preset_description(path)}  [{preset_command(path.stem)}]" for path in paths]
