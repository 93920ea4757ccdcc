"""Where varshift finds its Hydra configuration: ``varshift/conf/``, shipped inside the package, so a plain
``pip install .`` gives a working ``varshift-train``."""

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
CONF_DIR = PACKAGE_DIR / "conf"
REPO_DIR = PACKAGE_DIR.parent  # a checkout's root (README.md, experiments/); not part of an installed package
