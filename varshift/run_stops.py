"""How a run stops itself before its end: the exceptions the trainer raises and ``varshift-train`` reports in one line.

Apart from the trainer, so that reporting them does not import it (and torch's model code) at start-up.
"""


class TrainingDiverged(FloatingPointError):
    """A loss, a parameter, a BN statistic or a variance probe became NaN or infinite."""


class ParentExited(RuntimeError):
    """The process that started the run has exited (the run was started with ``stop_with_parent``)."""
