"""varshift's own: channel-wise versus element-wise Bernoulli noise in front of BN.

``python experiments/channelwise.py --scale demo``
"""

from recipe import main

if __name__ == "__main__":
    raise SystemExit(main("channelwise", ["fig4"]))
