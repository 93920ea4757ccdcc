"""``python -m analysis <artifact> RUN_DIRS... --out DIR``: one paper table or figure from finished runs.

RUN_DIRS are run directories and multirun folders in any mix (searched recursively); ``--wandb PROJECT``
reads the runs of a wandb project instead, which gives their summaries only: enough for table3, table4
and table6, while the figures and table1 need the per-layer files of run directories.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from analysis import figures, tables
from analysis.collect import collect, collect_wandb

ARTIFACTS = {
    "fig4": (figures.fig4,),
    "fig5": (figures.fig5,),
    "table1": (tables.table1, figures.fig3),
    "fig3": (figures.fig3,),
    "table3": (tables.table3,),
    "table4": (tables.table4,),
    "table6": (tables.table6,),
    "theory-vs-measured": (figures.theory_vs_measured,),
}
HELP = {
    "fig4": "per-layer variance shift curves and test error bars per drop ratio, with tables",
    "fig5": "training-data accuracy per epoch in train mode versus eval mode",
    "table1": "mean cos^2 and d cos^2 of the conv layers (and Figure 3)",
    "fig3": "cos^2 per conv layer and d cos^2 against d",
    "table3": "test error before and after BN recalibration",
    "table4": "test error per drop ratio of dropout after all BN layers",
    "table6": "test error per beta of uniform dropout (Uout)",
    "theory-vs-measured": "measured mean shift before BN against the case (a) theory",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m analysis", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="artifacts:\n" + "\n".join(f"  {name:20s}{text}" for name, text in HELP.items()))
    parser.add_argument("artifact", choices=list(ARTIFACTS), help="what to make (see below)")
    parser.add_argument("run_dirs", nargs="*", type=Path, help="run directories and/or multirun folders")
    parser.add_argument("--out", type=Path, required=True,
                        help="folder for the figures, tables and CSV files")
    parser.add_argument("--wandb", metavar="PROJECT", help="read the runs of this wandb project instead")
    parser.add_argument("--entity", help="wandb entity of --wandb (default: your default entity)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if bool(args.run_dirs) == bool(args.wandb):
        parser.error("give either run folders or --wandb PROJECT (one of the two)")
    if args.entity and not args.wandb:
        parser.error("--entity only goes with --wandb")
    try:
        runs = collect_wandb(args.wandb, args.entity) if args.wandb else collect(args.run_dirs)
        written = [path for make in ARTIFACTS[args.artifact] for path in make(runs, args.out)]
    except ValueError as err:
        parser.exit(2, f"{parser.prog} {args.artifact}: error: {err}\n")
    for path in written:
        print(path)
    print(f"{args.artifact}: {len(runs)} runs, {len(written)} files in {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
