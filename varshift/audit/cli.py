"""``varshift-audit TARGET``: audit a model for the variance shift between dropout and BN, gate a CI on it."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from varshift.audit.auditor import audit
from varshift.audit.report import console_text, csv_text, markdown_text
from varshift.audit.targets import FORMS, TargetError, load_target
from varshift.io import atomic_write_text, fault_message

DESCRIPTION = """\
Audit a model for the variance shift between dropout and batch normalization (Li et al., CVPR 2019).

Finds every dropout-like layer (nn.Dropout*, AlphaDropout, varshift's dropout layers, torchvision's
StochasticDepth, timm-style DropPath, and functional F.dropout calls) and the BN layers its output reaches
before any other BN. A dropout that feeds a BN is 'shifting': BN learns the variance of the noisy training
activations and applies it at test time. For each (dropout, BN) pair the audit gives the shift varshift's
theory predicts, on random-normal batches of the input shape, and the fixes. It also runs the model twice
in eval mode and reports where the outputs first differ (F.dropout left with training=True).

Exit status: 0 no shift and no eval-mode dropout, 1 either found, 2 a bad TARGET or option.
"""
EPILOG = f"""\
{FORMS}.
Keys of a varshift model: position, kind, rate, channelwise (its dropout), dataset, and the family's sizes.
examples:
  varshift-audit torchvision.models:densenet121:drop_rate=0.2
  varshift-audit torchvision.models:efficientnet_b0 --input-shape 3,64,64 --out audit/
  varshift-audit small_cnn:position=before_bn,kind=uniform,rate=0.1
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
    parser = argparse.ArgumentParser(prog="varshift-audit", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("target", metavar="TARGET", help="the model: a varshift model name or module:callable")
    parser.add_argument("--input-shape", type=input_shape, metavar="C,H,W",
                        help="one input without the batch dimension (default: the dataset's shape for varshift "
                             "models, the model's input_shape attribute, else 3,224,224)")
    parser.add_argument("--batches", type=positive_int, default=2, metavar="N",
                        help="random-normal batches for the statistics of the prediction (default: 2)")
    parser.add_argument("--batch-size", type=positive_int, default=8, help="inputs per batch (default: 8)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random-normal batches (default: 0)")
    parser.add_argument("--out", type=Path, metavar="DIR", help="also write DIR/audit.md and DIR/audit.csv")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        target = load_target(args.target)
    except TargetError as error:
        print(f"varshift-audit: error: {error}", file=sys.stderr)
        return 2
    shape = args.input_shape or target.input_shape
    try:
        report = audit(target.model, input_shape=shape, batch_size=args.batch_size, num_batches=args.batches,
                       seed=args.seed)
    except (RuntimeError, ValueError) as error:
        print(f"varshift-audit: error: {args.target} does not run on inputs of shape "
              f"{args.batch_size}x{'x'.join(map(str, shape))} ({error}); set --input-shape", file=sys.stderr)
        return 2
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
