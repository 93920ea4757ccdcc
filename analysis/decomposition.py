"""Every BN layer's shift taken apart by the theory (its dropout's share by Eq. 8 or 14, and the chain factor of the
dropouts further up), from the runs of Figure 4's recipe (``experiments/fig4.py``) or of any other sweep
(``--experiment``).

    python analysis/decomposition.py --scale laptop      # multirun/fig4/laptop -> results/decomposition/laptop/
"""

import sys

from varshift.analysis.cli import from_sweep

if __name__ == "__main__":
    raise SystemExit(from_sweep("decomposition", "fig4", sys.argv[1:]))
