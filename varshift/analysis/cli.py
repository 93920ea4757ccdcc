"""``varshift-analysis <artifact> RUN_DIRS... --out DIR``: one paper table or figure from finished runs.

RUN_DIRS are run directories and multirun folders in any mix (searched recursively); ``--wandb PROJECT``
reads the runs of a wandb project instead, which gives their summaries only: enough for table3, table4
and table6, while the figures and table1 need the per-layer files of run directories. Tables and figures
of test error report the final epoch's, or with ``--epoch best`` the best epoch's.

``varshift-analysis report RUN_DIR`` writes one run's report.md (curves, shift, results) into RUN_DIR.

Every file is written atomically: an analysis stopped by Ctrl-C or ``kill`` leaves the files it finished and no
half-written or temporary one; a file-system fault (``--out`` naming a file, a read-only or full disk) is one
line naming the path, what could not be done and what to do.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import signal
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from varshift.io import fault_message
from varshift.paths import results_dir, sweep_dir
from varshift.vocabulary import EPOCHS, SCALES


@dataclass(frozen=True)
class Artifact:
    help: str
    makers: tuple[str, ...]  # "module:function" under varshift.analysis, imported when the artifact is made
    epoch: bool = False  # whether it reports test error, of the final or the best epoch (--epoch)


ARTIFACTS = {
    "fig1": Artifact("the toy case and the per-layer shift with and without dropout before BN (runs of fig4)",
                     ("figures:fig1",), epoch=True),
    "fig4": Artifact("per-layer variance shift curves and test error bars per drop ratio, with tables",
                     ("figures:fig4",), epoch=True),
    "fig5": Artifact("training-data accuracy per epoch in train mode versus eval mode", ("figures:fig5",)),
    "table1": Artifact("mean cos^2 and d cos^2 of the conv layers (and Figure 3)", ("tables:table1", "figures:fig3")),
    "fig3": Artifact("cos^2 per conv layer and d cos^2 against d", ("figures:fig3",)),
    "table3": Artifact("test error of the final model before and after BN recalibration", ("tables:table3",)),
    "table4": Artifact("test error per drop ratio of dropout after all BN layers", ("tables:table4",), epoch=True),
    "table5": Artifact("top-1 and top-5 test error on ImageNet with and without dropout after all BN layers",
                       ("tables:table5",)),
    "table6": Artifact("test error per beta of uniform dropout (Uout)", ("tables:table6",), epoch=True),
    "per-class": Artifact("test accuracy per class, of the final model and after BN recalibration",
                          ("per_class:per_class",)),
    "theory-vs-measured": Artifact("moving variance of the BN layers a dropout feeds against the theory (Eq. 8, 14)",
                                   ("theory_figure:theory_vs_measured",)),
    "decomposition": Artifact("each BN layer's shift taken apart: theory (Eq. 8, 14) x chain factor, per layer",
                              ("decomposition:decomposition",)),
    "shift-over-training": Artifact("the shift of every BN layer against the epoch (runs with probe.every)",
                                    ("over_training:shift_over_training",)),
    "channel-shift": Artifact("the distribution over channels of each BN layer's shift (runs with probe.per_channel)",
                              ("over_training:channel_shift",)),
}
REPORT_HELP = "one run's report.md (accuracy curves, per-layer shift, results) written into its directory"


def maker(name: str) -> Callable:
    module, function = name.split(":")
    return getattr(importlib.import_module(f"varshift.analysis.{module}"), function)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="varshift-analysis", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="artifact", required=True, metavar="artifact", help="what to make")
    for name, artifact in ARTIFACTS.items():
        command = commands.add_parser(name, help=artifact.help, description=artifact.help)
        command.add_argument("run_dirs", nargs="*", type=Path, help="run directories and/or multirun folders")
        command.add_argument("--out", type=Path, required=True, help="folder for the figures, tables and CSV files")
        command.add_argument("--wandb", metavar="PROJECT", help="read the runs of this wandb project instead")
        command.add_argument("--entity", help="wandb entity of --wandb (default: your default entity)")
        if artifact.epoch:
            command.add_argument("--epoch", choices=list(EPOCHS), default="final",
                                 help="the test error of the final epoch (default) or of the best epoch")
        command.add_argument("--title", action="store_true",
                             help="draw each figure's caption above it (by default it is only written beside it, "
                                  "as <figure>.txt, for a paper's own caption)")
    report = commands.add_parser("report", help=REPORT_HELP, description=REPORT_HELP)
    report.add_argument("run_dir", type=Path, help="the directory of one finished run")
    return parser


@contextlib.contextmanager
def interrupted_by_sigterm() -> Iterator[None]:
    """SIGTERM (``kill``, ``timeout``) raises KeyboardInterrupt inside, as Ctrl-C does, so that a file being written
    is removed instead of left half-written (the atomic writes clean up on the way out)."""
    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def warnings_as_lines(prog: str) -> Iterator[None]:
    """Inside, a warning (a run skipped, and why) is one line ``<prog>: warning: ...``, not Python's two lines of
    source."""
    previous = warnings.formatwarning
    warnings.formatwarning = lambda message, *args, **kwargs: f"{prog}: warning: {message}\n"
    try:
        yield
    finally:
        warnings.formatwarning = previous


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    prog = f"{parser.prog} {args.artifact}"
    try:
        with interrupted_by_sigterm(), warnings_as_lines(prog):
            if args.artifact == "report":
                print(maker("report:write_run_report")(args.run_dir))
                return 0
            if bool(args.run_dirs) == bool(args.wandb):
                parser.error("give either run folders or --wandb PROJECT (one of the two)")
            if args.entity and not args.wandb:
                parser.error("--entity only goes with --wandb")
            collect = maker("collect:collect_wandb" if args.wandb else "collect:collect")
            runs = collect(args.wandb, args.entity) if args.wandb else collect(args.run_dirs)
            options = {"epoch": args.epoch} if ARTIFACTS[args.artifact].epoch else {}
            from varshift.analysis.plotting import drawn_titles  # matplotlib: once there is something to draw

            with drawn_titles(args.title):
                written = [path for name in ARTIFACTS[args.artifact].makers
                           for path in maker(name)(runs, args.out, **options)]
    except ValueError as err:
        parser.exit(2, f"{prog}: error: {err}\n")
    except OSError as err:
        if (message := fault_message(err)) is None:
            raise
        parser.exit(2, f"{prog}: error: {message}\n")
    except KeyboardInterrupt:
        parser.exit(130, f"{prog}: interrupted; the files written are complete, and none is left half-written\n")
    for path in written:
        print(path)
    print(f"{args.artifact}: {len(runs)} runs, {len(written)} files in {args.out}")
    return 0


def from_sweep(artifact: str, experiment: str, argv: Sequence[str] | None = None) -> int:
    """The command line of a checkout's analysis script (``analysis/<artifact>.py``): ``artifact`` made from the
    runs of ``experiment``'s sweep at ``--scale``, into ``results/<artifact>/<scale>/``."""
    parser = argparse.ArgumentParser(
        prog=f"analysis/{artifact.replace('-', '_')}.py",
        description=f"{ARTIFACTS[artifact].help}: made from multirun/<experiment>/<scale> (the runs of "
                    f"experiments/<experiment>.py), written to results/{artifact}/<scale>/.")
    parser.add_argument("--scale", choices=SCALES, default="demo", help=f"{' | '.join(SCALES)} (default: demo)")
    parser.add_argument("--experiment", default=experiment, help=f"whose runs to read (default: {experiment})")
    if ARTIFACTS[artifact].epoch:
        parser.add_argument("--epoch", choices=list(EPOCHS), default="final",
                            help="the test error of the final epoch (default) or of the best epoch")
    args = parser.parse_args(argv)
    epoch = ["--epoch", args.epoch] if ARTIFACTS[artifact].epoch else []
    return main([artifact, str(sweep_dir(args.experiment, args.scale)), "--out",
                 str(results_dir(artifact, args.scale)), *epoch])
