"""Table 5: ImageNet, one dropout of 0.2 after all BN layers (before the classifier) or none; top-1/top-5 error.

The paper's claim: a dropout after every BN does not shift the variance, and on ImageNet it helps a little.
The data are the ImageNet-layout folder in dataset.root (train/<class>/*.JPEG, val/<class>/*.JPEG):
``python experiments/table5.py --scale paper dataset.root=/data/imagenet`` (three networks, 2 ratios, 5 seeds);
``python -m varshift.data.sample DIR`` writes a 10-class folder for ``--scale smoke dataset.root=DIR``.
"""

from recipe import main

if __name__ == "__main__":
    raise SystemExit(main("table5", ["table5"]))
