"""varshift-train's Hydra configuration, installed as the package ``varshift.conf`` (``pkg://varshift.conf``)."""
