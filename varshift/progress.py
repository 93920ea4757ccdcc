"""What a run shows while it trains: one line per epoch and a summary table at the end, both through ``logging``.

Under ``varshift-train`` Hydra's job logging sends them to the console and to ``cli.log``; called from Python
(tests, notebooks), :func:`console_fallback` shows them on stderr when no logging handler would. The progress
bars of the passes (tqdm, ``trainer.progress``) are drawn on stderr by the trainer and never reach a log.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator

from tabulate import tabulate


def epoch_line(row: dict, epochs: int) -> str:
    """``epoch 2/10: train loss 0.5123, accuracy 81.23% | test ... | lr 0.05 | 12,345 images/s`` (one metrics row)."""
    parts = [f"epoch {row['epoch']}/{epochs}: train loss {row['train_loss']:.4f}, accuracy {row['train_acc']:.2f}%",
             f"test loss {row['test_loss']:.4f}, accuracy {row['test_acc']:.2f}%"
             + (f", top-5 {row['test_top5_acc']:.2f}%" if "test_top5_acc" in row else "")]
    if "val_acc" in row:
        parts.append(f"validation loss {row['val_loss']:.4f}, accuracy {row['val_acc']:.2f}%")
    if "mean_shift" in row:
        parts.append(f"mean shift {row['mean_shift']:.4f}")
    parts += [f"lr {row['lr']:.4g}", f"{row['images_per_s']:,.0f} images/s"]
    return " | ".join(parts)


def summary_table(summary: dict, images_per_s: float) -> str:
    """The results of a complete run (``summary.json``) as a two-column text table."""
    rows = [("test error (%), final epoch", f"{summary['test_error']:.2f}"),
            ("test error (%), best epoch", f"{100.0 - summary['best_test_acc']:.2f}")]
    if "test_top5_error" in summary:
        rows.append(("top-5 test error (%), final epoch", f"{summary['test_top5_error']:.2f}"))
    if "test_error_recalibrated" in summary:
        rows.append(("test error (%) after BN recalibration", f"{summary['test_error_recalibrated']:.2f}"))
    if "test_top5_error_recalibrated" in summary:
        rows.append(("top-5 test error (%) after BN recalibration", f"{summary['test_top5_error_recalibrated']:.2f}"))
    rows += [("mean shift over BN layers", f"{summary['mean_shift']:.4f}"),
             ("largest shift of a BN layer", f"{summary['max_shift']:.4f}")]
    if "mean_shift_recalibrated" in summary:
        rows.append(("mean shift after BN recalibration", f"{summary['mean_shift_recalibrated']:.4f}"))
    rows += [("epochs", str(summary["epochs"])), ("wall time (s)", f"{summary['wall_time_s']:.1f}"),
             ("training images/s", f"{images_per_s:,.0f}")]
    return tabulate(rows, headers=("result", "value"), colalign=("left", "right"), disable_numparse=True)


@contextlib.contextmanager
def console_fallback(logger: logging.Logger) -> Iterator[None]:
    """Show ``logger``'s INFO records on stderr for the block, unless a logging handler is configured already.

    Without a handler Python shows WARNING and above only (``logging.lastResort``); the progress lines are INFO.
    """
    if logger.hasHandlers():
        yield
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    level = logger.level
    logger.addHandler(handler)
    if level == logging.NOTSET:
        logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
