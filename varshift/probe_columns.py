"""The columns of a variance probe's tables (:func:`varshift.probes.measure_variance_shift`, ``variance.csv``): one
home for the names, importable without torch (the run files and the analysis read them)."""

QUANTITIES = ["moving_var", "real_var", "train_var", "shift", "input_mean", "input_var"]
# the theory's terms of a layer fed by dropouts (varshift.probes explains each)
THEORY = ["noise_predicted", "noise_measured", "clean_var", "noise_variance", "source_mean", "source_var", "rho",
          "weight_norm2", "d_cos2", "alignment"]
LAYER_COLUMNS = ["layer", "name", *QUANTITIES, "fed_by_dropout", "feed", "sources", *THEORY]
CHANNEL_COLUMNS = ["layer", "name", "channel", *QUANTITIES, "fed_by_dropout", "feed", "sources", *THEORY]
# the quantities whose layer value is the channel mean of the per-channel ones
CHANNEL_MEANS = ["moving_var", "real_var", "train_var", "input_var", "noise_predicted", "noise_measured", "clean_var"]
