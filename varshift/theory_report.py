"""``varshift-theory``: the closed-form variance shift as figures, CSV and a short table.

Case (a) plots ``Var_test / Var_train`` against the rate for the three dropout kinds at unit means
``c`` (default 0 and 1); case (b) plots it against ``d cos^2(theta)`` for several drop ratios, showing
the shift vanish as the layer widens.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from varshift import theory  # noqa: E402
from varshift.analysis.plotting import drawn_titles, figure_caption, set_caption  # noqa: E402
from varshift.io import atomic_write, atomic_write_text  # noqa: E402

KIND_LABELS = {"bernoulli": "Bernoulli, drop ratio q", "gaussian": "Gaussian, s² = q/(1−q)",
               "uniform": "Uout, width β"}
TABLE_POINTS = (("bernoulli", 0.1), ("bernoulli", 0.5), ("gaussian", 0.1), ("gaussian", 0.5),
                ("uniform", 0.1), ("uniform", 0.5))


def case_a_frame(means: Sequence[float], var: float, points: int) -> pd.DataFrame:
    rows = []
    for kind in KIND_LABELS:
        top = 1.0 if kind == "uniform" else 0.9
        for rate in np.linspace(0.0, top, points):
            for mean in means:
                rows.append({"kind": kind, "rate": rate, "mean": mean, "var": var,
                             "noise_variance": theory.noise_variance(kind, rate),
                             "shift_ratio": theory.shift_ratio(kind, rate, mean, var)})
    return pd.DataFrame(rows)


def case_b_frame(rates: Sequence[float], kind: str, var: float, rho: float, max_d_cos2: float,
                 points: int) -> pd.DataFrame:
    d_cos2 = np.geomspace(1.0, max_d_cos2, points)
    frames = [pd.DataFrame({"kind": kind, "rate": rate, "var": var, "rho": rho, "d_cos2": d_cos2,
                            "shift_ratio": theory.shift_ratio_weighted(kind, rate, 0.0, var, d_cos2, 1.0, rho)})
              for rate in rates]
    return pd.concat(frames, ignore_index=True)


def summary_table(var: float) -> pd.DataFrame:
    rows = []
    for kind, rate in TABLE_POINTS:
        ratio = theory.shift_ratio(kind, rate, 0.0, var)
        rows.append({"kind": kind, "rate": rate, "noise variance s2": theory.noise_variance(kind, rate),
                     "Var_test/Var_train (c=0)": ratio, "paper statistic max(r, 1/r)": 1.0 / ratio,
                     "Var_test/Var_train (c=1)": theory.shift_ratio(kind, rate, 1.0, var)})
    return pd.DataFrame(rows)


def save_figure(grid, out: Path, stem: str, formats: Sequence[str]) -> list[Path]:
    """The figure in each of ``formats`` and its caption as ``stem.txt`` (drawn above it only with ``--title``)."""
    paths = [atomic_write(out / f"{stem}.{fmt}",
                          lambda tmp, fmt=fmt: grid.savefig(tmp, format=fmt, dpi=150, bbox_inches="tight"))
             for fmt in formats]
    matplotlib.pyplot.close(grid.figure)
    return [*paths, atomic_write_text(out / f"{stem}.txt", figure_caption(grid.figure) + "\n")]


def plot_case_a(df: pd.DataFrame, out: Path, formats: Sequence[str]) -> list[Path]:
    data = df.assign(kind=df["kind"].map(KIND_LABELS), mean=df["mean"].map(lambda c: f"c = {c:g}"))
    grid = sns.relplot(data=data, x="rate", y="shift_ratio", hue="kind", style="kind", col="mean", kind="line",
                       height=3.6)
    grid.set_axis_labels("rate: drop ratio q (β for Uout)", "Var_test / Var_train")
    grid.set_titles(col_template="{col_name}")
    grid.legend.set_title(None)
    set_caption(grid.figure, f"Case (a), a dropout directly before BN (Eq. 8): the variance of the BN input in test "
                             f"mode over that in train mode, against the rate, for a unit of mean c and variance v = "
                             f"{df['var'].iloc[0]:g}. Gaussian dropout at its default noise variance s² = q/(1−q) is "
                             "Bernoulli's curve.")
    return save_figure(grid, out, "theory_case_a", formats)


def plot_case_b(df: pd.DataFrame, out: Path, formats: Sequence[str]) -> list[Path]:
    data = df.assign(rate=df["rate"].map(lambda r: f"{r:g}"))
    rates = list(dict.fromkeys(data["rate"]))
    grid = sns.relplot(data=data, x="d_cos2", y="shift_ratio", hue="rate", kind="line", height=3.6, aspect=1.4,
                       palette=dict(zip(rates, sns.color_palette("Blues", len(rates) + 2)[2:], strict=True)))
    grid.set(xscale="log")
    grid.set_axis_labels("d·cos²θ (fan-in d times alignment cos²θ)", "Var_test / Var_train")
    kind, rho = df["kind"].iloc[0], df["rho"].iloc[0]
    symbol = "β" if kind == "uniform" else "q"
    grid.legend.set_title("β" if kind == "uniform" else "drop ratio q")
    set_caption(grid.figure, f"Case (b), {KIND_LABELS[kind].split(',')[0]} dropout → weight layer → BN (Eq. 14, "
                             f"correlation ρ = {rho:g} between the layer's inputs, c = 0): the ratio of test- to "
                             f"train-mode variance of the BN input against d·cos²θ, one curve per {symbol}; the wider "
                             "and the more aligned the layer, the smaller the shift.")
    return save_figure(grid, out, "theory_case_b", formats)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="varshift-theory", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("results/theory"),
                        help="folder for the figures, CSV files and table (default: %(default)s)")
    parser.add_argument("--means", type=float, nargs="+", default=[0.0, 1.0],
                        help="unit means c for case (a), one panel each (default: %(default)s)")
    parser.add_argument("--var", type=float, default=1.0, help="unit variance v (default: %(default)s)")
    parser.add_argument("--case-b-kind", choices=list(KIND_LABELS), default="bernoulli",
                        help="dropout kind of the case (b) figure (default: %(default)s)")
    parser.add_argument("--case-b-rates", type=float, nargs="+", default=[0.1, 0.3, 0.5, 0.7],
                        help="rates drawn in the case (b) figure (default: %(default)s)")
    parser.add_argument("--rho", type=float, default=0.5,
                        help="correlation rho between the inputs of the weight layer (default: %(default)s)")
    parser.add_argument("--max-d-cos2", type=float, default=200.0,
                        help="largest d cos^2(theta) on the case (b) axis (default: %(default)s)")
    parser.add_argument("--points", type=int, default=101, help="points per curve (default: %(default)s)")
    parser.add_argument("--formats", nargs="+", choices=["png", "pdf", "svg"], default=["png", "pdf"],
                        help="figure formats (default: %(default)s)")
    parser.add_argument("--title", action="store_true",
                        help="draw each figure's caption above it (by default only written beside it, as .txt)")
    args = parser.parse_args(argv)
    if args.var <= 0:
        parser.error(f"--var must be > 0, got {args.var}")
    if not 0.0 <= args.rho <= 1.0:
        parser.error(f"--rho must be in [0, 1], got {args.rho}")
    if args.max_d_cos2 <= 1.0:
        parser.error(f"--max-d-cos2 must be > 1, got {args.max_d_cos2}")
    if args.points < 2:
        parser.error(f"--points must be >= 2, got {args.points}")
    for rate in args.case_b_rates:
        try:
            theory.check_rate(args.case_b_kind, rate)
        except ValueError as err:
            parser.error(f"--case-b-rates: {err}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    sns.set_theme(style="whitegrid")
    case_a = case_a_frame(args.means, args.var, args.points)
    case_b = case_b_frame(args.case_b_rates, args.case_b_kind, args.var, args.rho, args.max_d_cos2, args.points)
    table = summary_table(args.var)
    atomic_write_text(args.out / "theory_case_a.csv", case_a.to_csv(index=False))
    atomic_write_text(args.out / "theory_case_b.csv", case_b.to_csv(index=False))
    markdown = table.to_markdown(index=False, floatfmt=".6g") + "\n"
    atomic_write_text(args.out / "theory_table.md", markdown)
    with drawn_titles(args.title):
        written = plot_case_a(case_a, args.out, args.formats) + plot_case_b(case_b, args.out, args.formats)
    print(markdown)
    print(f"wrote {len(written) // (len(args.formats) + 1)} figures ({', '.join(args.formats)} and their captions as "
          f"txt), 2 CSV files and theory_table.md to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
