"""The experiment presets (``conf/experiment/<name>.yaml``): what each reproduces, the command that runs it."""

from __future__ import annotations

from varshift.paths import REPO_DIR, conf_file, conf_options


def preset_description(text: str) -> str:
    """The first comment line of a preset's YAML ``text`` that is not a Hydra directive (``# @package _global_``)."""
    for line in text.splitlines():
        if line.startswith("#") and not line.startswith("# @"):
            return line.lstrip("# ").rstrip()
    return ""


def preset_command(name: str, scale: str = "demo") -> str:
    """The preset's recipe (its multirun and its analysis) when it has one, else its multirun."""
    if (REPO_DIR / "experiments" / f"{name}.py").exists():
        return f"python experiments/{name}.py --scale {scale}"
    return f"varshift-train -m experiment={name} scale={scale}"


def preset_lines() -> list[str]:
    """One line per preset, sorted by name: name, description, command."""
    names = conf_options("experiment")
    width = max((len(name) for name in names), default=0)
    return [f"{name:<{width}}  {preset_description(conf_file('experiment', name).read_text())}  "
            f"[{preset_command(name)}]" for name in names]
