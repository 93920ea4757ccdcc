"""Figure 4: per-layer variance shift and test error, Bernoulli drop 0-0.7 at Dropout-(a) and (b).

The paper's claims: the shift grows with the drop ratio; Dropout-(b) (before_conv) shifts far less than
Dropout-(a) (before_bn); test error follows the shift. ``python experiments/fig4.py --scale demo``
"""

from recipe import main

if __name__ == "__main__":
    raise SystemExit(main("fig4", ["fig4"]))
