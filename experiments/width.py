"""varshift's own: the case-(b) shift falls as the layer widens (WRN widen factor; CNN channels on a laptop).

Theory (Eq. 14): Var_test / Var_train -> 1 as d cos^2(theta) grows. ``python experiments/width.py --scale demo``
"""

from recipe import main

NARROW_TO_WIDE_CNN = ["model.kwargs.channels=[8,16],[16,32],[32,64],[64,128]"]

if __name__ == "__main__":
    raise SystemExit(main("width", ["fig4", "table1"], {"smoke": NARROW_TO_WIDE_CNN, "demo": NARROW_TO_WIDE_CNN}))
