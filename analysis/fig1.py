"""Figure 1 of the paper: the toy case of the variance shift, and the per-layer shift of one network with and
without dropout before BN, from the runs of Figure 4's recipe (``experiments/fig4.py``).

    python analysis/fig1.py --scale demo      # reads multirun/fig4/demo, writes results/fig1/demo/
"""

import sys

from varshift.analysis.cli import from_sweep

if __name__ == "__main__":
    raise SystemExit(from_sweep("fig1", "fig4", sys.argv[1:]))
