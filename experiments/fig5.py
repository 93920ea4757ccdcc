"""Figure 5: accuracy on the training data in train mode versus eval mode, every epoch.

The paper's claim: with Dropout-(a) 0.5 the eval-mode accuracy on the very training data falls below
the train-mode accuracy; without dropout they agree. ``python experiments/fig5.py --scale demo``
"""

from recipe import main

if __name__ == "__main__":
    raise SystemExit(main("fig5", ["fig5"]))
