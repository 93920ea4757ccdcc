"""varshift's own: the case-(b) shift falls as the layer widens (Wide ResNet widen factor).

Theory (Eq. 14): Var_test / Var_train -> 1 as d cos^2(theta) grows. At paper scale WRN-28 on CIFAR, at smoke
and demo WRN-10 on Fashion-MNIST (``conf/scale/``). ``python experiments/width.py --scale demo``
"""

from recipe import main

if __name__ == "__main__":
    raise SystemExit(main("width", ["fig4", "table1"]))
