"""Find and fix the variance shift in any model: which dropout-like layers feed which BN layers, the shift
varshift's theory predicts and, with data, the shift measured before and after BN recalibration; and
dropout left on in eval mode.

>>> from varshift.audit import audit
>>> report = audit(torchvision.models.densenet121(drop_rate=0.2), input_shape=(3, 64, 64))
>>> report.sites[["site", "verdict", "bn_layers", "predicted_shift"]]
>>> report.exit_code   # 0: nothing found, 1: a shifting dropout or dropout active in eval mode

The command line is ``varshift-audit`` (:mod:`varshift.audit.cli`).
"""

__all__ = ["AuditReport", "audit"]


def __getattr__(name: str):
    """``audit`` and ``AuditReport``, imported (with torch) when first used: ``varshift-audit --help`` needs neither."""
    if name in __all__:
        from varshift.audit import auditor

        return getattr(auditor, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
