"""Table 1 / Figure 3: cos^2(theta) and d cos^2(theta) of every conv layer of networks without dropout.

The paper's claim: cos^2 stays in (0.01, 0.1), so d cos^2 grows with the fan-in d (widest: WRN).
``python experiments/table1.py --scale demo``
"""

from recipe import main

if __name__ == "__main__":
    raise SystemExit(main("table1", ["table1"]))
