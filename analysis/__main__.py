"""``python -m analysis <artifact> RUN_DIRS... --out DIR``: one paper table or figure from finished runs.

RUN_DIRS are run directories and multirun folders in any mix (searched recursively); ``--wandb PROJECT``
reads the runs of a wandb project instead, which gives their summaries only: enough for table3, table4
and table6, while the figures and table1 need the per-layer files of run directories. Tables and figures
of test error report the final epoch's, or with ``--epoch best`` the best epoch's.

``python -m analysis report RUN_DIR`` writes one run's report.md (curves, shift, results) into RUN_DIR.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from analysis import figures, tables
from analysis.collect import collect, collect_wandb
from analysis.report import write_run_report
from analysis.theory_figure import theory_vs_measured


@dataclass(frozen=True)
class Artifact:
    help: str
    makers: tuple[Callable, ...]
    epoch: bool = False  # whether it reports test error, of the final or the best epoch (--epoch)


ARTIFACTS = {
    "fig1": Artifact("the toy case and the per-layer shift with and without dropout before BN (runs of fig4)",
                     (figures.fig1,), epoch=True),
    "fig4": Artifact("per-layer variance shift curves and test error bars per drop ratio, with tables",
                     (figures.fig4,), epoch=True),
    "fig5": Artifact("training-data accuracy per epoch in train mode versus eval mode", (figures.fig5,)),
    "table1": Artifact("mean cos^2 and d cos^2 of the conv layers (and Figure 3)", (tables.table1, figures.fig3)),
    "fig3": Artifact("cos^2 per conv layer and d cos^2 against d", (figures.fig3,)),
    "table3": Artifact("test error of the final model before and after BN recalibration", (tables.table3,)),
    "table4": Artifact("test error per drop ratio of dropout after all BN layers", (tables.table4,), epoch=True),
    "table6": Artifact("test error per beta of uniform dropout (Uout)", (tables.table6,), epoch=True),
    "theory-vs-measured": Artifact("shift of the BN layers fed by a dropout against the theory (Eq. 7-8)",
                                   (theory_vs_measured,)),
}
REPORT_HELP = "one run's report.md (accuracy curves, per-layer shift, results) written into its directory"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m analysis", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="artifact", required=True, metavar="artifact", help="what to make")
    for name, artifact in ARTIFACTS.items():
        command = commands.add_parser(name, help=artifact.help, description=artifact.help)
        command.add_argument("run_dirs", nargs="*", type=Path, help="run directories and/or multirun folders")
        command.add_argument("--out", type=Path, required=True, help="folder for the figures, tables and CSV files")
        command.add_argument("--wandb", metavar="PROJECT", help="read the runs of this wandb project instead")
        command.add_argument("--entity", help="wandb entity of --wandb (default: your default entity)")
        if artifact.epoch:
            command.add_argument("--epoch", choices=list(tables.EPOCHS), default="final",
                                 help="the test error of the final epoch (default) or of the best epoch")
    report = commands.add_parser("report", help=REPORT_HELP, description=REPORT_HELP)
    report.add_argument("run_dir", type=Path, help="the directory of one finished run")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.artifact == "report":
            print(write_run_report(args.run_dir))
            return 0
        if bool(args.run_dirs) == bool(args.wandb):
            parser.error("give either run folders or --wandb PROJECT (one of the two)")
        if args.entity and not args.wandb:
            parser.error("--entity only goes with --wandb")
        runs = collect_wandb(args.wandb, args.entity) if args.wandb else collect(args.run_dirs)
        options = {"epoch": args.epoch} if ARTIFACTS[args.artifact].epoch else {}
        written = [path for make in ARTIFACTS[args.artifact].makers for path in make(runs, args.out, **options)]
    except ValueError as err:
        parser.exit(2, f"{parser.prog} {args.artifact}: error: {err}\n")
    for path in written:
        print(path)
    print(f"{args.artifact}: {len(runs)} runs, {len(written)} files in {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
