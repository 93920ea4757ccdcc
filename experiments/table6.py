"""Table 6: Uout (uniform noise, beta 0-0.5) at Dropout-(b).

The paper's claim: the variance-stable noise gives small gains without the shift of Bernoulli dropout.
``python experiments/table6.py --scale demo``
"""

from recipe import main

if __name__ == "__main__":
    raise SystemExit(main("table6", ["table6"]))
