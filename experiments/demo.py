"""The demo behind ``make demo``: the small CNN on Fashion-MNIST without dropout, and with Bernoulli
and uniform dropout before BN and at the head; per-layer shift plot and a table of test accuracy
before and after BN recalibration. ``python experiments/demo.py --scale demo``
"""

from recipe import main

BASELINE = ["dropout=none", "dropout.rate=0", "dropout.position=none"]

if __name__ == "__main__":
    raise SystemExit(main("demo", ["fig4", "table3"], extra_sweeps=[BASELINE]))
