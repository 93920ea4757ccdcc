"""varshift's own: Gaussian dropout with the Bernoulli noise variance, at Dropout-(a) and (b).

Theory: the shift depends only on the noise variance, so Gaussian dropout shifts as Bernoulli does.
``python experiments/gaussian.py --scale demo``
"""

from recipe import main

if __name__ == "__main__":
    raise SystemExit(main("gaussian", ["fig4"]))
