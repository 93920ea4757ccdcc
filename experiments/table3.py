"""Table 3: drop 0.5 at Dropout-(a) and (b), test error before and after BN recalibration.

The paper's claim: re-estimating the BN statistics with dropout off recovers accuracy in every cell.
``python experiments/table3.py --scale demo``
"""

from recipe import main

if __name__ == "__main__":
    raise SystemExit(main("table3", ["table3"]))
