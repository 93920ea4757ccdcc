"""Table 4: one dropout after all BN layers (before the classifier), drop 0-0.5.

The paper's claim: dropout placed after every BN does not hurt and often helps a little.
``python experiments/table4.py --scale demo``
"""

from recipe import main

if __name__ == "__main__":
    raise SystemExit(main("table4", ["table4"]))
