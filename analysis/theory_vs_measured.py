"""The moving variance of the BN layers a dropout feeds against the paper's theory (Eq. 8, 14), from the runs of
Figure 4's recipe (``experiments/fig4.py``) or of any other sweep (``--experiment``).

    python analysis/theory_vs_measured.py --scale laptop      # multirun/fig4/laptop -> results/theory-vs-measured/
"""

import sys

from varshift.analysis.cli import from_sweep

if __name__ == "__main__":
    raise SystemExit(from_sweep("theory-vs-measured", "fig4", sys.argv[1:]))
