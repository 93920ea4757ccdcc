"""Where varshift finds its Hydra configuration (the repository's ``conf/`` folder)."""

from pathlib import Path

REPO_DIR = Path(__file__).resolve().parent.parent
CONF_DIR = REPO_DIR / "conf"
