"""``varshift-audit TARGET``: audit a model for the variance shift between dropout and BN, gate a CI on it.

Torch, the model and the data are loaded when an audit runs, not for ``--help``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from varshift.audit.targets import FORMS, TargetError, UserCodeError
from varshift.vocabulary import DATASET_NAMES

PROG = "varshift-audit"
DESCRIPTION = """\
Audit a model for the variance shift between dropout and batch normalization (Li et al., CVPR 2019).

Finds every dropout-like layer (nn.Dropout*, AlphaDropout, varshift's dropout layers, torchvision's
StochasticDepth, timm-style DropPath, and functional F.dropout calls) and the BN layers its output reaches
before any other BN. A dropout that feeds a BN is 'shifting': BN learns the variance of the noisy training
activations and applies it at test time. For each (dropout, BN) pair the audit gives the shift varshift's
theory predicts, from the statistics of random-normal batches of the input shape (or of real training images,
--data, with which it also measures the shift before and after BN recalibration), and the fixes that suit the
kind of drop. It also runs the model twice in eval mode and reports where the outputs first differ
(F.dropout left with training=True).

Exit status: 0 no shift and no eval-mode dropout, 1 either found, 2 the audit could not be made: a bad TARGET,
option or --data, or the model's own code failed (importing it, building it, its forward pass), named in one line.
"""
EPILOG = f"""\
{FORMS}.
Keys of a varshift model: position, kind, rate, channelwise (its dropout), dataset, and the family's sizes.
examples:
  varshift-audit torchvision.models:densenet121:drop_rate=0.2
  varshift-audit torchvision.models:efficientnet_b0 --input-shape 3,64,64 --out audit/
  varshift-audit small_cnn:position=before_bn,kind=uniform,rate=0.1 --data fashion_mnist
  varshift-audit models/net.py:build:width=64 --data /data/imagenet/train --threads 4
"""


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 1")
    return value


def input_shape(text: str) -> tuple[int, ...]:
    try:
        return tuple(positive_int(part) for part in text.split(","))
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated shape without the batch, "
                                         "e.g. 3,224,224") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("target", metavar="TARGET",
                        help="the model: a varshift model name, path/to/file.py:callable or module:callable")
    parser.add_argument("--input-shape", type=input_shape, metavar="C,H,W",
                        help="one input without the batch dimension (default: the dataset's shape for varshift "
                             "models and --data DATASET, the model's input_shape attribute, else 3,224,224)")
    parser.add_argument("--data", metavar="DATASET",
                        help=f"real training images instead of random-normal batches: a varshift dataset "
                             f"({', '.join(DATASET_NAMES)}) or a folder of class folders of images (resized to "
                             "--input-shape, ImageNet normalisation); the shift is then also measured, before and "
                             "after BN recalibration")
    parser.add_argument("--batches", type=positive_int, default=2, metavar="N",
                        help="batches for the statistics of the prediction (default: 2)")
    parser.add_argument("--batch-size", type=positive_int, default=8, help="inputs per batch (default: 8)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the random-normal batches, or of the images drawn from --data (default: 0)")
    parser.add_argument("--threads", type=positive_int, metavar="N", help="torch threads (default: torch's own)")
    parser.add_argument("--out", type=Path, metavar="DIR", help="also write DIR/audit.md and DIR/audit.csv")
    parser.add_argument("--debug", action="store_true", help="show the traceback of a failure")
    return parser


def fail(message: str) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return 2


def run_audit(args: argparse.Namespace):
    """Load the target and the data and audit; TargetError, UserCodeError or DataError for what goes wrong."""
    import torch

    from varshift.audit.auditor import audit
    from varshift.audit.data import data_batches
    from varshift.audit.targets import load_target

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    varshift_data = args.data if args.data in DATASET_NAMES else None
    target = load_target(args.target, input_shape=args.input_shape, dataset=varshift_data)
    batches = None
    if args.data is not None:
        batches = data_batches(args.data, input_shape=args.input_shape or target.input_shape,
                               batch_size=args.batch_size, num_batches=args.batches, seed=args.seed)
    shape = tuple(batches[0].shape[1:]) if batches else target.input_shape
    try:
        return audit(target.model, batches, input_shape=shape, batch_size=args.batch_size,
                     num_batches=args.batches, seed=args.seed)
    except Exception as error:  # the audit runs the model: what fails there is the model's forward pass
        raise UserCodeError(f"the forward pass of the model on inputs of shape "
                            f"{args.batch_size}x{'x'.join(map(str, shape))}", error,
                            "" if batches else "set --input-shape if the model takes another shape") from error


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from varshift.audit.data import DataError
    from varshift.audit.report import console_text, csv_text, markdown_text
    from varshift.io import atomic_write_text, fault_message

    try:
        report = run_audit(args)
    except (TargetError, UserCodeError, DataError) as error:
        if args.debug:
            raise
        return fail(f"{args.target}: {error}")
    print(console_text(report, args.target), end="")
    if args.out is not None:
        try:
            for path in (atomic_write_text(args.out / "audit.md", markdown_text(report, args.target)),
                         atomic_write_text(args.out / "audit.csv", csv_text(report))):
                print(f"wrote {path}")
        except OSError as error:
            if (message := fault_message(error)) is None:
                raise
            print(f"varshift-audit: error: {message}", file=sys.stderr)
            return 2
    return report.exit_code
