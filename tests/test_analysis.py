"""varshift.analysis: fabricated run directories -> DataFrame -> tables and figures holding the right numbers."""

from __future__ import annotations

import json
import re
import statistics
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from varshift.analysis import figures, tables
from varshift.analysis import report as analysis_report
from varshift.analysis.cli import main
from varshift.analysis.collect import collect, collect_records, collect_wandb, find_run_dirs
from varshift.analysis.paper import PAPER_NUMBERS, paper_reference
from varshift.analysis.plotting import figure_caption, run_labels
from varshift.analysis.theory_figure import theory_vs_measured

REPO_DIR = Path(__file__).resolve().parents[1]
CELL = re.compile(r"^(?P<mean>-?\d+\.\d+)(?: ± (?P<std>\d+\.\d+))?(?: \((?P<notes>[^)]*)\))?$")


# -- fabricated run directories (the trainer's contract) --

def make_run(root: Path, name: str, *, seed=0, dataset="cifar10", model="preresnet110", kind="bernoulli",
             rate=0.5, position="before_bn", channelwise=False, experiment="test", lr=0.1, model_kwargs=None,
             status="complete", summary=None, variance=None, metrics=None, alignment=None) -> Path:
    """A run directory as varshift-train writes it; ``status=None`` leaves out summary.json (unfinished).

    The neutral keys (the data folder, the progress bar, the logger) differ from seed to seed, as they may.
    """
    run = root / name
    run.mkdir(parents=True)
    config = {"experiment_name": experiment, "seed": seed,
              "dataset": {"name": dataset, "root": f"/data/copy{seed}", "download": seed == 0},
              "model": {"name": model, "kwargs": {"channels": [8, 16], **(model_kwargs or {})}},
              "dropout": {"kind": kind, "rate": rate, "channelwise": channelwise, "position": position},
              "optim": {"lr": lr, "milestones": [0.5, 0.75]},
              "trainer": {"epochs": 3, "device": "cpu", "progress": seed % 2 == 0},
              "logger": {"wandb": {"mode": "disabled" if seed else "offline"}},
              "scale": {"name": "paper", "datasets": ["cifar10", "cifar100"], "models": ["preresnet110", "wrn28_10"]}}
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    if status is not None:
        full = {"status": status, "epochs": 3, "test_acc": 90.0, "test_error": 10.0, "best_test_acc": 91.0,
                "mean_shift": 1.5, "train_eval_acc": 95.0, "versions": {"torch": "2.14.1"}, **(summary or {})}
        (run / "summary.json").write_text(json.dumps(full) + "\n")
    if variance is not None:
        pd.DataFrame(variance).to_csv(run / "variance.csv", index=False)
    if metrics is not None:
        (run / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in metrics))
    if alignment is not None:
        pd.DataFrame(alignment).to_csv(run / "alignment.csv", index=False)
    return run


def parse_cell(text: str) -> dict:
    match = CELL.match(text.strip())
    assert match, f"cell {text!r} is not 'mean ± std (notes)'"
    notes = [note for note in (match["notes"] or "").split("; ") if note]
    notes = dict(note.split(" ", 1) if " " in note else (note, "") for note in notes)
    return {"mean": match["mean"], "std": match["std"], "notes": notes}


def cells(row: str) -> list[str]:
    """The cells of a Markdown table row (an escaped "\\|" stays inside its cell)."""
    return [cell.strip() for cell in re.split(r"(?<!\\)\|", row)[1:-1]]


def markdown_rows(markdown: str) -> list[dict]:
    """The lines of a Markdown table as dicts keyed by its header."""
    lines = [cells(line) for line in markdown.splitlines() if line.startswith("|")]
    return [dict(zip(lines[0], line, strict=True)) for line in lines[2:]]


def latex_rows(path: Path) -> list[list[str]]:
    body = path.read_text().split("\\midrule\n")[1].split("\\bottomrule")[0]
    lines = body.strip().splitlines()
    return [[c.strip() for c in line.removesuffix("\\\\").split(" & ")] for line in lines]


def hand_stats(values: list[float]) -> tuple[str, str | None]:
    mean = f"{statistics.mean(values):.2f}"
    return mean, (f"{statistics.stdev(values):.2f}" if len(values) > 1 else None)


# -- the paper's numbers (analysis/paper_numbers.csv) --

def csv_numbers() -> dict[tuple, str]:
    frame = pd.read_csv(PAPER_NUMBERS, dtype={"value": str})
    return {(r.artifact, r.dataset, r.model, r.position, r.kind, float(r.rate), r.metric): r.value
            for r in frame.itertuples()}


@pytest.fixture(scope="module")
def paper() -> dict[tuple, str]:
    return csv_numbers()


def test_paper_numbers_csv_holds_every_number_of_the_papers_tables_once():
    frame = pd.read_csv(PAPER_NUMBERS, dtype={"value": str})
    keys = ["artifact", "dataset", "model", "position", "kind", "rate", "metric"]
    assert not frame.duplicated(keys).any()
    # Tables 1, 3, 4, 5, 6, Figure 4 errors and curve means (less the 7 clipped curves), Figure 5
    assert frame.groupby("artifact").size().to_dict() == {"table1": 16, "table3": 32, "table4": 40, "table5": 12,
                                                          "table6": 40, "fig4": 80 + 73, "fig5": 16}
    assert frame["value"].astype(float).gt(0).all()


# -- collect --

def test_collect_reads_run_dirs_and_multirun_folders_and_skips_incomplete_runs(tmp_path):
    multirun = tmp_path / "multirun"
    multirun.mkdir()
    (multirun / "multirun.yaml").write_text("hydra: {}\n")
    make_run(multirun, "0", seed=0, summary={"test_error": 8.0})
    make_run(multirun, "1", seed=1, summary={"test_error": 9.0})
    make_run(multirun, "2", seed=2, status=None)
    single = make_run(tmp_path, "single", seed=3, rate=0.1)
    failed = make_run(tmp_path, "failed", status="running")
    with pytest.warns(UserWarning) as caught:
        runs = collect([multirun, single, failed, multirun / "0"])
    messages = " ".join(str(w.message) for w in caught)
    assert "no summary.json" in messages and "status 'running'" in messages
    assert sorted(runs["seed"]) == [0, 1, 3]
    assert set(runs["run_dir"]) == {str(multirun / "0"), str(multirun / "1"), str(single)}
    row = runs.set_index("seed").loc[3]
    assert (row["dropout.rate"], row["dropout.kind"], row["dataset.name"]) == (0.1, "bernoulli", "cifar10")
    assert row["model.kwargs.channels"] == (8, 16) and row["versions.torch"] == "2.14.1"
    assert row["dataset.root"] == "/data/copy3"
    # the setting: every config key but the seed and the neutral keys (data folder, progress bar, logger)
    assert {"optim.lr", "optim.milestones", "trainer.device", "dataset.name"} <= set(row["setting_keys"])
    assert not {"seed", "dataset.root", "dataset.download", "trainer.progress", "logger.wandb.mode"} & set(
        row["setting_keys"])
    assert list(runs.set_index("seed")["test_error"].loc[[0, 1]]) == [8.0, 9.0]


def test_collect_names_what_is_wrong(tmp_path):
    with pytest.raises(ValueError, match="nowhere.*does not exist"):
        collect([tmp_path / "nowhere"])
    with pytest.raises(ValueError, match="no run directories"):
        collect([tmp_path])
    with pytest.raises(ValueError, match="no run folders given"):
        collect([])
    make_run(tmp_path, "unfinished", status=None)
    with pytest.warns(UserWarning), pytest.raises(ValueError, match="no complete runs"):
        collect([tmp_path])
    assert find_run_dirs([tmp_path]) == [tmp_path / "unfinished"]


def test_collect_records_tags_each_record_with_its_run(tmp_path):
    for seed in (0, 1):
        alignment = {"layer": [0, 1], "name": ["a", "b"], "d": [9, 72], "cos2": [0.1, 0.02 + seed],
                     "d_cos2": [0.9, 1.44]}
        make_run(tmp_path, f"s{seed}", seed=seed, alignment=alignment)
    runs = collect([tmp_path])
    records = collect_records(runs, "alignment")
    assert len(records) == 4 and set(records["model.kwargs.channels"]) == {(8, 16)}
    assert records.groupby("seed")["cos2"].sum().to_dict() == pytest.approx({0: 0.12, 1: 1.12})
    with pytest.raises(ValueError, match="has no variance.csv"):
        collect_records(runs, "variance")
    with pytest.raises(ValueError, match="record kind 'weights' is not known"):
        collect_records(runs, "weights")


def test_collect_wandb_gives_the_columns_of_run_directories(tmp_path, monkeypatch):
    run_dir = make_run(tmp_path, "run", seed=4, rate=0.3)
    from_dirs = collect([run_dir])
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    summary = json.loads((run_dir / "summary.json").read_text())

    class FakeRun:
        def __init__(self, name, status):
            self.path = ["me", "varshift", name]
            self.config = config  # varshift's tracker logs it flattened; nested must work too
            self.summary = {**summary, "status": status, "_step": 3, "mean_shift/final": 1.5}

    class FakeApi:
        def runs(self, path):
            assert path == "me/varshift"
            return [FakeRun("a", "complete"), FakeRun("b", "crashed")]

    monkeypatch.setitem(sys.modules, "wandb", types.SimpleNamespace(Api=FakeApi))
    with pytest.warns(UserWarning, match="me/varshift/b.*'crashed'"):
        from_wandb = collect_wandb("varshift", entity="me")
    assert set(from_wandb.columns) - {"wandb_path"} == set(from_dirs.columns) - {"run_dir"}
    wandb_row = from_wandb.drop(columns="wandb_path").iloc[0].to_dict()
    assert wandb_row == from_dirs.drop(columns="run_dir").iloc[0].to_dict()


# -- tables --

def error_runs(root: Path, artifact: str, kind: str, position: str,
               rates: list[float]) -> dict[tuple, list[float]]:
    """Runs of two networks on two datasets; one setting has a single seed. Returns the errors per cell."""
    rng = np.random.default_rng(0)
    errors = {}
    for dataset in ("cifar10", "cifar100"):
        for model in ("wrn28_10", "preresnet110"):
            for rate in rates:
                seeds = [0] if (dataset, model, rate) == ("cifar10", "wrn28_10", rates[-1]) else [0, 1, 2]
                for seed in seeds:
                    error = float(np.round(rng.uniform(3, 30), 3))
                    errors.setdefault((dataset, model, rate), []).append(error)
                    make_run(root, f"{dataset}-{model}-{rate}-{seed}", seed=seed, dataset=dataset,
                             model=model, kind=kind, rate=rate, position=position, experiment=artifact,
                             summary={"test_error": error})
    return errors


@pytest.mark.parametrize("artifact, kind, position", [("table4", "bernoulli", "head"),
                                                      ("table6", "uniform", "before_conv")])
def test_table_cells_are_the_hand_computed_mean_and_std_beside_the_paper(tmp_path, paper, artifact, kind,
                                                                         position):
    errors = error_runs(tmp_path / "runs", artifact, kind, position, [0.0, 0.2])
    written = getattr(tables, artifact)(collect([tmp_path / "runs"]), tmp_path / "out")
    assert sorted(p.name for p in written) == [f"{artifact}{s}" for s in (".csv", ".md", ".tex", "_stats.csv",
                                                                           "_stats.md")]
    markdown = markdown_rows((tmp_path / "out" / f"{artifact}.md").read_text())
    latex = latex_rows(tmp_path / "out" / f"{artifact}.tex")
    # the paper's row order (Table 4 lists PreResNet before WRN), and every cell
    assert [(r["dataset"], r["model"]) for r in markdown] == [
        (dataset, model) for dataset in ("cifar10", "cifar100") for model in ("preresnet110", "wrn28_10")]
    symbol = {"bernoulli": "q", "uniform": "β"}[kind]  # the paper's drop ratio q, Uout's width β
    for md_row, tex_row in zip(markdown, latex, strict=True):
        for rate, tex_cell in zip((0.0, 0.2), tex_row[2:], strict=True):
            cell = parse_cell(md_row[f"{symbol} = {rate:g}"])
            mean, std = hand_stats(errors[(md_row["dataset"], md_row["model"], rate)])
            assert (cell["mean"], cell["std"]) == (mean, std)
            if std is None:
                assert "n=1" in cell["notes"]
            key = (artifact, md_row["dataset"], md_row["model"], position, kind, rate, "test_error")
            assert cell["notes"]["paper"] == f"{float(paper[key]):.2f}"
            assert tex_cell == md_row[f"{symbol} = {rate:g}"].replace("±", "$\\pm$")
    stats = pd.read_csv(tmp_path / "out" / f"{artifact}.csv")
    one = stats[(stats["dataset.name"] == "cifar100") & (stats["model.name"] == "wrn28_10")
                & (stats["dropout.rate"] == 0.2)].iloc[0]
    values = errors[("cifar100", "wrn28_10", 0.2)]
    assert one["mean"] == pytest.approx(statistics.mean(values)) and one["n"] == 3
    assert one["std"] == pytest.approx(statistics.stdev(values))


def test_table3_shows_error_before_and_after_recalibration_with_the_papers_values(tmp_path, paper):
    expected = {}
    for position in ("before_bn", "before_conv"):
        for seed, (before, after) in enumerate([(32.0, 26.0), (33.5, 27.25)]):
            make_run(tmp_path / "runs", f"{position}-{seed}", seed=seed, dataset="cifar100",
                     model="densenet_bc100", position=position,
                     summary={"test_error": before, "test_error_recalibrated": after})
            expected.setdefault((position, "test error"), []).append(before)
            expected.setdefault((position, "test error, BN recalibrated"), []).append(after)
    tables.table3(collect([tmp_path / "runs"]), tmp_path)
    (row,) = markdown_rows((tmp_path / "table3.md").read_text())
    for (position, metric), values in expected.items():
        words = {"before_bn": "Dropout-(a) before BN", "before_conv": "Dropout-(b) before conv"}[position]
        cell = parse_cell(row[f"{words}, {metric}"])
        assert (cell["mean"], cell["std"]) == hand_stats(values)
        paper_metric = "test_error_recalibrated" if "recalibrated" in metric else "test_error"
        key = ("table3", "cifar100", "densenet_bc100", position, "bernoulli", 0.5, paper_metric)
        assert cell["notes"]["paper"] == paper[key]


def test_table_keeps_different_settings_apart_and_rejects_bad_requests(tmp_path):
    make_run(tmp_path, "bernoulli", kind="bernoulli", summary={"test_error": 5.0})
    make_run(tmp_path, "uniform", kind="uniform", summary={"test_error": 7.0})
    runs = collect([tmp_path])
    with pytest.raises(ValueError, match=r"different settings \(dropout.kind: bernoulli, uniform\)"):
        tables.table(runs, ["dataset.name"], [], "test_error")
    by_kind = tables.table(runs, ["dataset.name"], ["dropout.kind"], "test_error")
    assert markdown_rows(by_kind.markdown) == [{"dataset": "cifar10", "Bernoulli": "5.00 (n=1)",
                                                "Uout": "7.00 (n=1)"}]
    tables.artifact_table(runs, ["dataset.name"], [], "test_error", tmp_path, "extra", "kinds become rows")
    assert [r["dropout"] for r in markdown_rows((tmp_path / "extra.md").read_text())] == ["Bernoulli", "Uout"]
    with pytest.raises(ValueError, match="column 'speed' is not in the runs"):
        tables.table(runs, ["dataset.name"], [], "speed")
    with pytest.raises(ValueError, match="value column 'dropout.kind' is not numeric"):
        tables.table(runs, ["dataset.name"], [], "dropout.kind")
    with pytest.raises(ValueError, match="at least one row"):
        tables.table(runs, [], ["dropout.kind"], "test_error")
    with pytest.raises(ValueError, match="must name each column once"):
        tables.table(runs, ["dropout.kind"], ["dropout.kind"], "test_error")
    with pytest.raises(ValueError, match="no run has a value of 'recalibrated'"):
        tables.table(runs.assign(recalibrated=np.nan), ["dropout.kind"], [], "recalibrated")
    with pytest.raises(ValueError, match="decimals must be >= 0, got -1"):
        tables.table(runs, ["dropout.kind"], [], "test_error", decimals=-1)
    with pytest.raises(ValueError, match="no numbers for artifact 'table2'"):
        paper_reference("table2", "test_error")
    with pytest.raises(ValueError, match="has no metric"):
        paper_reference("table4", "top1_error")


# -- figures --

def shift_rows(shifts: list[float], stage: str = "final", fed: list[bool] | None = None,
               input_mean: float = 0.0, input_var: float = 1.0) -> dict:
    layers = range(len(shifts))
    return {"stage": stage, "epoch": 3, "layer": list(layers), "name": [f"bn{i}" for i in layers],
            "moving_var": 1.0, "real_var": 1.0, "train_var": 1.0, "shift": shifts, "input_mean": input_mean,
            "input_var": input_var, "fed_by_dropout": fed or [False] * len(shifts)}


def test_fig4_plots_the_final_per_layer_shift_and_the_error_with_tables(tmp_path, paper):
    expected_means = {}
    for position in ("before_bn", "before_conv"):
        for rate in (0.0, 0.5):
            for seed in (0, 1):
                shifts = [1.0 + rate * (layer + 1) * (seed + 1) / (2 if position == "before_conv" else 1)
                          for layer in range(4)]
                variance = pd.concat([pd.DataFrame(shift_rows(shifts)),
                                      pd.DataFrame(shift_rows([9.0] * 4, "probe"))])
                make_run(tmp_path / "runs", f"{position}-{rate}-{seed}", seed=seed, rate=rate,
                         position=position, variance=variance,
                         summary={"mean_shift": float(np.mean(shifts)), "test_error": 5 + rate})
                expected_means.setdefault((position, rate), []).append(float(np.mean(shifts)))
    runs = collect([tmp_path / "runs"])
    written = figures.fig4(runs, tmp_path / "out")
    for stem in ("fig4_shift", "fig4_error"):
        assert (tmp_path / "out" / f"{stem}.png").read_bytes()[:4] == b"\x89PNG"
        assert (tmp_path / "out" / f"{stem}.pdf").read_bytes()[:5] == b"%PDF-"
    # two figures (PNG, PDF, CSV, caption TXT), two tables (MD, TeX, CSV) with their statistics (MD, CSV)
    assert len(written) == 18
    assert (tmp_path / "out" / "fig4_shift.txt").read_text().startswith("Figure 4: variance shift of every BN layer")
    plotted = pd.read_csv(tmp_path / "out" / "fig4_shift.csv")
    assert len(plotted) == 8 * 4 and (plotted["shift"] < 9.0).all()  # the final stage only, not the probes
    curve = plotted[(plotted["panel"] == "Dropout-(b) before conv | cifar10")
                    & (plotted["dropout"] == "Bernoulli q = 0.5") & (plotted["seed"] == 1)]
    assert list(curve["shift"]) == pytest.approx([1.5, 2.0, 2.5, 3.0])
    errors = pd.read_csv(tmp_path / "out" / "fig4_error.csv")
    assert sorted(errors["test_error"]) == [5.0] * 4 + [5.5] * 4
    (before_bn, before_conv) = markdown_rows((tmp_path / "out" / "fig4_mean_shift.md").read_text())
    for row, position in ((before_bn, "before_bn"), (before_conv, "before_conv")):
        cell = parse_cell(row["q = 0.5"])
        values = expected_means[(position, 0.5)]
        assert cell["mean"] == f"{statistics.mean(values):.3f}"
        assert cell["std"] == f"{statistics.stdev(values):.3f}"
        key = ("fig4", "cifar10", "preresnet110", position, "bernoulli", 0.5, "mean_shift")
        # PreResNet's Dropout-(b) 0.5 curve is clipped in the paper's plot: no paper value
        assert (key in paper) == (position == "before_bn")
        assert cell["notes"].get("paper") == (f"{float(paper[key]):.3f}" if key in paper else None)
    grid = figures.shift_curves(plotted, runs, "Figure 4")
    axis = grid.axes.flat[0]
    assert (axis.get_xlabel(), axis.get_ylabel()) == ("BN layer index", "variance shift\nmax(real/moving, moving/real)")
    assert [t.get_text() for t in grid.legend.texts] == ["no dropout", "Bernoulli q = 0.5"]
    assert "range (min to max, n = 2)" in figure_caption(grid.figure)  # two seeds per setting
    figures.plt.close(grid.figure)


def test_fig5_takes_the_last_eval_mode_accuracy_from_the_summary(tmp_path, paper):
    for rate in (0.0, 0.5):
        metrics = [{"epoch": 1, "train_acc": 50.0, "test_acc": 40.0, "train_eval_acc": 45.0 - 10 * rate},
                   {"epoch": 2, "train_acc": 70.0 - rate, "test_acc": 60.0},
                   {"epoch": 3, "train_acc": 90.0 - rate, "test_acc": 80.0}]
        make_run(tmp_path / "runs", f"r{rate}", rate=rate, dataset="cifar100", metrics=metrics,
                 summary={"train_eval_acc": 85.0 - 20 * rate})
    figures.fig5(collect([tmp_path / "runs"]), tmp_path / "out")
    plotted = pd.read_csv(tmp_path / "out" / "fig5.csv")
    eval_mode = plotted[(plotted["mode"] == "eval mode") & (plotted["dropout"] == "Bernoulli q = 0.5")]
    assert list(zip(eval_mode["epoch"], eval_mode["accuracy"], strict=True)) == [(1, 40.0), (3, 75.0)]
    assert len(plotted[plotted["mode"] == "train mode"]) == 6
    (row,) = markdown_rows((tmp_path / "out" / "fig5_final.md").read_text())
    cell = parse_cell(row["q = 0.5, eval mode"])
    assert cell["mean"] == "75.00" and "n=1" in cell["notes"]
    key = ("fig5", "cifar100", "preresnet110", "before_bn", "bernoulli", 0.5, "train_eval_acc")
    assert cell["notes"]["paper"] == f"{float(paper[key]):.2f}"
    assert parse_cell(row["q = 0, train mode"])["mean"] == "90.00"
    grid = figures.training_accuracy(plotted, collect([tmp_path / "runs"]), "Figure 5")
    assert all(float(tick).is_integer() for ax in grid.axes.flat for tick in ax.get_xticks())
    assert [t.get_text() for t in grid.legend.texts][:3] == ["dropout", "no dropout", "Bernoulli q = 0.5"]
    figures.plt.close(grid.figure)


def test_table1_averages_conv_layers_then_seeds_and_fig3_plots_them(tmp_path, paper):
    per_run = []
    for seed in (0, 1, 2):
        cos2 = [0.05 + 0.01 * seed, 0.03, 0.01 * (seed + 1)]
        d = [27, 144, 144]
        make_run(tmp_path / "runs", f"s{seed}", seed=seed, kind="none", rate=0.0, position="none",
                 alignment={"layer": [0, 1, 2], "name": ["c0", "c1", "c2"], "d": d, "cos2": cos2,
                            "d_cos2": [a * b for a, b in zip(d, cos2, strict=True)]})
        per_run.append((statistics.mean(cos2), statistics.mean(a * b for a, b in zip(d, cos2, strict=True))))
    written = tables.table1(collect([tmp_path / "runs"]), tmp_path / "out")
    written += figures.fig3(collect([tmp_path / "runs"]), tmp_path / "out")
    assert {p.name for p in written} >= {"table1.md", "fig3_cos2.png", "fig3_d_cos2.pdf", "fig3_cos2.csv"}
    (row,) = markdown_rows((tmp_path / "out" / "table1.md").read_text())
    for index, metric in enumerate(("cos²θ", "d·cos²θ")):
        cell = parse_cell(row[f"dataset = cifar10, {metric}"])
        values = [r[index] for r in per_run]
        assert cell["mean"] == f"{statistics.mean(values):.5f}"
        assert cell["std"] == f"{statistics.stdev(values):.5f}"
        key = ("table1", "cifar10", "preresnet110", "none", "none", 0.0, ("cos2", "d_cos2")[index])
        assert cell["notes"]["paper"] == f"{float(paper[key]):.5f}"
    assert "d$\\cdot$cos$^2$$\\theta$" in (tmp_path / "out" / "table1.tex").read_text()
    plotted = pd.read_csv(tmp_path / "out" / "fig3_d_cos2.csv")
    assert len(plotted) == 9
    grid = figures.alignment_curves(plotted, "layer", "cos2", "layer", "cos2", "t")
    assert all(float(tick).is_integer() for tick in grid.axes.flat[0].get_xticks())
    assert "range (min to max, n = 3)" in figure_caption(grid.figure)  # three seeds
    figures.plt.close(grid.figure)


def theory_rows(shifts: list[float], feeds: list[str], clean_var: float, noise: float, moving_factor: float,
                real_var: float) -> dict:
    """Final probe rows with the theory's terms: the fed layers' moving variance is the theory's, clean + noise,
    times ``moving_factor``."""
    rows = shift_rows(shifts, fed=[feed == "direct" for feed in feeds])
    fed = [feed in ("direct", "weight") for feed in feeds]
    rows.update(feed=feeds, sources=["drop" if f else "" for f in fed], real_var=real_var,
                clean_var=[clean_var if f else np.nan for f in fed],
                noise_predicted=[noise if f else np.nan for f in fed],
                moving_var=[(clean_var + noise) * moving_factor if f else 1.0 for f in fed])
    return rows


def test_theory_vs_measured_sets_the_fed_layers_moving_variance_against_the_theory_and_the_chain(tmp_path):
    # layers 1 (directly) and 3 (through a conv) are fed by a dropout; the others are downstream or not reached
    feeds = ["none", "direct", "downstream", "weight"]
    cases = (("bernoulli", 0.5, 0, 1.10), ("bernoulli", 0.5, 1, 0.90), ("uniform", 0.6, 0, 1.0))
    for kind, rate, seed, factor in cases:
        make_run(tmp_path / "runs", f"{kind}-{seed}", kind=kind, rate=rate, seed=seed,
                 variance=theory_rows([50.0, 2.5, 50.0, 2.5], feeds, clean_var=1.5, noise=0.6, moving_factor=factor,
                                      real_var=1.2))
    make_run(tmp_path / "runs", "head", position="head",
             variance=theory_rows([50.0] * 4, ["none"] * 4, clean_var=1.0, noise=0.0, moving_factor=1.0, real_var=1.0))
    theory_vs_measured(collect([tmp_path / "runs"]), tmp_path / "out")
    plotted = pd.read_csv(tmp_path / "out" / "theory_vs_measured.csv")
    assert sorted(set(plotted["layer"])) == [1, 3] and set(plotted["feed"]) == {"direct", "weight"}
    np.testing.assert_allclose(plotted["predicted_moving"], 1.5 + 0.6)
    rows = {(r["dropout"], r["drop ratio q (β for Uout)"]): r for r in markdown_rows(
        (tmp_path / "out" / "theory_vs_measured_table.md").read_text())}
    cell = "dataset = cifar10, model = preresnet110, Dropout-(a) before BN, {}".format
    bernoulli = rows[("Bernoulli", "0.5")]
    theory, chain = parse_cell(bernoulli[cell("theory factor")]), parse_cell(bernoulli[cell("chain factor")])
    error = parse_cell(bernoulli[cell("moving variance vs theory (%)")])
    assert (theory["mean"], theory["std"]) == (f"{2.1 / 1.5:.3f}", "0.000")  # (clean + noise) / clean
    assert (chain["mean"], chain["std"]) == (f"{1.5 / 1.2:.3f}", "0.000")  # clean / real
    assert (error["mean"], error["std"]) == ("0.000", f"{statistics.stdev([10.0, -10.0]):.3f}")


def test_theory_vs_measured_needs_the_theorys_terms_of_the_probe(tmp_path):
    make_run(tmp_path, "old", variance=shift_rows([1.2, 1.3], fed=[True, False]))
    with pytest.raises(ValueError, match="written by an older varshift"):
        theory_vs_measured(collect([tmp_path]), tmp_path / "out")


# -- what a run's setting is; damaged runs --

def test_analysis_imports_no_torch():
    code = ("import sys, varshift.analysis, varshift.analysis.figures, varshift.analysis.tables, "
            "varshift.analysis.theory_figure, varshift.analysis.report, varshift.analysis.cli, "
            "varshift.analysis.callbacks; print(sorted(m for m in sys.modules if m.split('.')[0] == 'torch'))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_DIR, check=True)
    assert result.stdout.strip() == "[]"


def test_runs_that_differ_in_any_config_key_but_the_seed_and_the_neutral_ones_are_different_settings(tmp_path):
    for lr, errors in ((0.1, (5.0, 6.0)), (0.01, (9.0, 11.0))):
        for seed, error in enumerate(errors):
            make_run(tmp_path, f"lr{lr}-{seed}", lr=lr, seed=seed, summary={"test_error": error})
    runs = collect([tmp_path])
    with pytest.raises(ValueError, match=r"different settings \(optim.lr: 0.01, 0.1\)"):
        tables.table(runs, ["dataset.name"], ["dropout.rate"], "test_error")
    tables.artifact_table(runs, ["dataset.name"], ["dropout.rate"], "test_error", tmp_path, "by_lr", "lr")
    cells = {row["optim.lr"]: parse_cell(row["q = 0.5"]) for row in markdown_rows((tmp_path / "by_lr.md").read_text())}
    assert {lr: (c["mean"], c["std"]) for lr, c in cells.items()} == {"0.1": hand_stats([5.0, 6.0]),
                                                                     "0.01": hand_stats([9.0, 11.0])}
    assert set(run_labels(runs)["network"]) == {"preresnet110, optim.lr = 0.1", "preresnet110, optim.lr = 0.01"}


def test_keys_that_only_follow_the_network_and_keys_some_runs_lack_neither_split_nor_repeat_rows(tmp_path):
    # each network its own learning rate (its recipe); only WRN has a widen factor
    for model, lr, kwargs in (("preresnet110", 0.1, {}), ("wrn28_10", 0.05, {"widen_factor": 10})):
        for dataset in ("cifar10", "cifar100"):
            for rate in (0.0, 0.5):
                for seed in (0, 1):
                    make_run(tmp_path / "runs", f"{model}-{dataset}-{rate}-{seed}", seed=seed, model=model, lr=lr,
                             model_kwargs=kwargs, dataset=dataset, rate=rate, position="head", experiment="table4",
                             summary={"test_error": 5.0 + rate + seed})
    tables.table4(collect([tmp_path / "runs"]), tmp_path / "out")
    rows = markdown_rows((tmp_path / "out" / "table4.md").read_text())
    assert [(r["dataset"], r["model"]) for r in rows] == [
        (dataset, model) for dataset in ("cifar10", "cifar100") for model in ("preresnet110", "wrn28_10")]
    assert all(parse_cell(r[f"q = {rate}"])["mean"] == f"{5.5 + rate:.2f}" for r in rows for rate in (0, 0.5))


def cut_short(path: Path) -> None:
    text = path.read_text()
    path.write_text(text[: len(text) // 2])


def test_a_run_with_a_cut_short_file_is_named_and_skipped_and_the_others_are_reported(tmp_path):
    metrics = [{"epoch": epoch, "train_acc": 50.0 + epoch, "test_acc": 40.0 + epoch} for epoch in (1, 2, 3)]
    runs_dir = tmp_path / "runs"
    for seed in range(4):
        make_run(runs_dir, f"run{seed}", seed=seed, metrics=metrics, variance=shift_rows([1.1, 1.2, 1.3]))
    cut_short(runs_dir / "run1" / "summary.json")
    cut_short(runs_dir / "run2" / "metrics.jsonl")
    (runs_dir / "run3" / "variance.csv").write_text("stage,epoch,layer\nfinal,3,0\nfin")
    with pytest.warns(UserWarning) as caught:
        runs = collect([runs_dir])
    (message,) = [str(w.message) for w in caught]
    assert str(runs_dir / "run1") in message and "summary.json is cut short" in message
    assert sorted(Path(r).name for r in runs["run_dir"]) == ["run0", "run2", "run3"]
    with pytest.warns(UserWarning, match=r"run2: metrics.jsonl is cut short"):
        figures.fig5(runs, tmp_path / "out")
    assert set(pd.read_csv(tmp_path / "out" / "fig5.csv")["run_dir"]) == {str(runs_dir / "run0"),
                                                                          str(runs_dir / "run3")}
    with pytest.warns(UserWarning, match=r"run3: variance.csv is cut short"):
        figures.fig4(runs, tmp_path / "out")
    assert set(pd.read_csv(tmp_path / "out" / "fig4_shift.csv")["run_dir"]) == {str(runs_dir / "run0"),
                                                                                str(runs_dir / "run2")}
    (runs_dir / "run0" / "summary.json").write_text("{\"status\": \n")
    with pytest.warns(UserWarning) as caught:
        collect([runs_dir])
    assert any(re.search(r"run0: summary.json is damaged \(JSONDecodeError", str(w.message)) for w in caught)


# -- which epoch, which runs, the paper's lower bounds --

def test_tables_report_the_final_epoch_unless_the_best_is_asked_for_and_say_which(tmp_path, capsys):
    for seed, (final, best) in enumerate([(88.0, 90.0), (86.0, 91.0)]):
        make_run(tmp_path / "runs", f"s{seed}", seed=seed, position="head", rate=0.1,
                 summary={"test_acc": final, "test_error": 100 - final, "best_test_acc": best})
    for epoch, accuracies in (("final", [88.0, 86.0]), ("best", [90.0, 91.0])):
        out = tmp_path / epoch
        args = ["table4", str(tmp_path / "runs"), "--out", str(out)] + (["--epoch", "best"] if epoch == "best" else [])
        assert main(args) == 0
        text = (out / "table4.md").read_text()
        assert f"at the {epoch} epoch" in text.splitlines()[0]
        (row,) = markdown_rows(text)
        assert (parse_cell(row["q = 0.1"])["mean"], parse_cell(row["q = 0.1"])["std"]) == hand_stats(
            [100 - a for a in accuracies])
    with pytest.raises(SystemExit):
        main(["fig5", str(tmp_path / "runs"), "--out", str(tmp_path), "--epoch", "best"])
    assert "unrecognized arguments: --epoch" in capsys.readouterr().err


def test_table4_and_table6_refuse_runs_of_another_position_or_kind(tmp_path):
    make_run(tmp_path, "before_bn", position="before_bn")
    make_run(tmp_path, "head", position="head")
    runs = collect([tmp_path])
    with pytest.raises(ValueError, match="table4 is about one dropout after all BN layers.*position before_bn"):
        tables.table4(runs, tmp_path / "out")
    with pytest.raises(ValueError, match="table6 is about uniform dropout.*kind bernoulli"):
        tables.table6(runs, tmp_path / "out")
    tables.table4(runs[runs["dropout.position"] == "head"], tmp_path / "out")


def test_lower_bounds_are_the_clipped_curves_and_tables_show_them(tmp_path):
    numbers = pd.read_csv(PAPER_NUMBERS)
    marked = numbers[numbers["lower_bound"]]
    stored = set(zip(marked["dataset"], marked["model"], marked["position"], marked["rate"], strict=True))
    # the two PreResNet curve means whose curve reaches the clipped top of the paper's axis
    assert stored == {("cifar100", "preresnet110", "before_bn", 0.5), ("cifar10", "preresnet110", "before_conv", 0.3)}
    assert set(marked["metric"]) == {"mean_shift"}
    dataset, model, position, rate = sorted(stored)[0]
    make_run(tmp_path / "runs", "run", dataset=dataset, model=model, position=position, rate=rate,
             variance=shift_rows([1.0, 2.0]), summary={"mean_shift": 1.5})
    figures.fig4(collect([tmp_path / "runs"]), tmp_path / "out")
    (row,) = markdown_rows((tmp_path / "out" / "fig4_mean_shift.md").read_text())
    reference = numbers[(numbers["dataset"] == dataset) & (numbers["position"] == position)
                        & (numbers["rate"] == rate) & (numbers["model"] == model) & (numbers["metric"] == "mean_shift")]
    assert parse_cell(row[f"q = {rate:g}"])["notes"]["paper"] == f"≥{reference['value'].iloc[0]:.3f}"


# -- figures of mixed folders --

def test_figures_of_a_mixed_folder_label_facet_and_scale_what_they_show(tmp_path):
    demo = [("none", 0.0, "none", [1.0, 1.0, 1.0]), ("bernoulli", 0.5, "before_bn", [1.5, 2.0, 100.0]),
            ("uniform", 0.5, "before_bn", [1.1, 1.1, 1.2]), ("bernoulli", 0.5, "head", [1.0, 1.0, 1.0])]
    for kind, rate, position, shifts in demo:
        make_run(tmp_path / "runs", f"demo-{kind}-{position}", kind=kind, rate=rate, position=position,
                 experiment="demo", variance=shift_rows(shifts), summary={"test_error": 10 + sum(shifts)})
    for rate in (0.0, 0.5):
        make_run(tmp_path / "runs", f"fig4-{rate}", rate=rate, position="before_conv", experiment="fig4",
                 variance=shift_rows([1.0, 1.0 + rate, 1.0]))
    runs = collect([tmp_path / "runs"])
    figures.fig4(runs, tmp_path / "out")
    plotted = pd.read_csv(tmp_path / "out" / "fig4_shift.csv")
    baseline = plotted[plotted["run_dir"].str.endswith("demo-none-none")]
    # the run without dropout is the reference in each panel of its network, as the paper's 0.0 curve
    assert set(baseline["panel"]) == {"Dropout-(a) before BN | cifar10", "dropout after all BN | cifar10"}
    assert set(baseline["dropout"]) == {"no dropout"}
    assert set(plotted["network"]) == {"preresnet110, experiment = demo", "preresnet110, experiment = fig4"}
    text = (tmp_path / "out" / "fig4_test_error.md").read_text()
    assert text.startswith("**Figure 4: test error (%) at the final epoch. Runs of Demo + Figure 4.**")
    rows = markdown_rows(text)
    keys = [(r["position"], r["dropout"]) for r in rows]
    assert keys == [("no dropout", "no dropout"), ("Dropout-(a) before BN", "Bernoulli"),
                    ("Dropout-(a) before BN", "Uout"), ("Dropout-(b) before conv", "Bernoulli"),
                    ("dropout after all BN", "Bernoulli")]
    assert [sum(cell != "–" for key, cell in r.items() if key.startswith("q or β = ")) for r in rows] == [1, 1, 1, 2, 1]

    grid = figures.shift_curves(plotted, runs, "Figure 4 caption.")
    assert figure_caption(grid.figure) == "Figure 4 caption."  # one seed per setting: no note on the bands
    assert {t.get_text() for t in grid.legend.texts} == {"no dropout", "Bernoulli q = 0.5", "Uout β = 0.5"}
    shown = {key: ax for key, ax in grid.axes_dict.items() if ax.get_visible()}
    assert set(shown) == set(zip(plotted["network"], plotted["panel"], strict=True))
    assert len(shown) < len(grid.axes_dict)  # the empty facets are hidden
    assert len({ax.get_ylim() for ax in shown.values()}) == 1
    assert {ax.get_yscale() for ax in shown.values()} == {"log"}  # the shifts span 1 to 100
    assert all(float(tick).is_integer() for ax in shown.values() for tick in ax.get_xticks())
    figures.plt.close(grid.figure)
    narrow = figures.shift_curves(plotted[plotted["shift"] < 30], runs, "narrow")
    assert {ax.get_yscale() for ax in narrow.axes.flat} == {"linear"}
    figures.plt.close(narrow.figure)


# -- Figure 1, one run's report --

def test_fig1_shows_the_papers_network_with_and_without_dropout_before_bn_and_their_accuracy(tmp_path):
    for model, dataset in (("densenet_bc100", "cifar100"), ("wrn28_10", "cifar10")):
        for rate in (0.0, 0.3, 0.5):
            for seed in (0, 1):
                make_run(tmp_path / "runs", f"{model}-{rate}-{seed}", model=model, dataset=dataset, rate=rate,
                         seed=seed, experiment="fig4", variance=shift_rows([1.0 + rate * seed, 1.0 + rate]),
                         summary={"test_acc": 80.0 - 10 * rate - seed, "test_error": 20.0 + 10 * rate + seed,
                                  "best_test_acc": 81.0 - 10 * rate})
    make_run(tmp_path / "runs", "head", model="densenet_bc100", dataset="cifar100", position="head",
             variance=shift_rows([1.0, 1.0]))
    written = figures.fig1(collect([tmp_path / "runs"]), tmp_path / "out")
    assert sorted(p.name for p in written) == ["fig1.csv", "fig1.pdf", "fig1.png", "fig1.txt"]
    assert (tmp_path / "out" / "fig1.txt").read_text().startswith("Figure 1: top, the toy case")
    everything = pd.read_csv(tmp_path / "out" / "fig1.csv")
    plotted, toy = everything[everything["panel"] == "shift"], everything[everything["panel"] == "toy"]
    # the toy case, simulated (200,000 draws: the variances are within 1% of 1/p and 1)
    for mode, variance in (("train", lambda p: 1 / p), ("test", lambda p: 1.0)):
        rows = toy[toy["mode"].str.startswith(mode)]
        assert rows["variance"].to_numpy() == pytest.approx([variance(p) for p in rows["retain ratio p"]], rel=0.03)
    # the paper's DenseNet on CIFAR-100 only, at drop ratio 0 and 0.5, before BN
    assert set(zip(plotted["model.name"], plotted["dataset.name"], strict=True)) == {("densenet_bc100", "cifar100")}
    assert sorted(set(plotted["dropout.rate"])) == [0.0, 0.5] and len(plotted) == 2 * 2 * 2
    curves = set(plotted["curve"])
    assert curves == {f"no dropout, test accuracy {statistics.mean([80.0, 79.0]):.2f}%",
                      f"Bernoulli q = 0.5 before each BN, test accuracy {statistics.mean([75.0, 74.0]):.2f}%"}
    figures.fig1(collect([tmp_path / "runs"]), tmp_path / "best", epoch="best")
    assert "Bernoulli q = 0.5 before each BN, test accuracy 76.00%" in set(
        pd.read_csv(tmp_path / "best" / "fig1.csv")["curve"])
    with pytest.raises(ValueError, match="fig1 needs runs with Bernoulli dropout before BN"):
        figures.fig1(collect([tmp_path / "runs" / "head"]), tmp_path / "out")


def test_a_run_report_holds_its_curves_its_shift_and_its_results(tmp_path, capsys):
    metrics = [{"epoch": epoch, "train_acc": 60.0 + epoch, "test_acc": 50.0 + epoch} for epoch in (1, 2, 3)]
    variance = pd.concat([pd.DataFrame(shift_rows([2.0, 1.5, 1.2], fed=[True, False, True])),
                          pd.DataFrame(shift_rows([1.0, 1.01, 1.0], "recalibrated"))])
    run = make_run(tmp_path, "run", metrics=metrics, variance=variance,
                   summary={"test_acc": 53.0, "best_test_acc": 53.5, "test_acc_recalibrated": 55.25})
    assert main(["report", str(run)]) == 0
    report = run / "report.md"
    assert capsys.readouterr().out.strip() == str(report)
    text = report.read_text()
    for image in re.findall(r"!\[[^]]*\]\(([^)]+)\)", text):
        assert (run / image).read_bytes()[:4] == b"\x89PNG"
    assert len(re.findall(r"\.png\)", text)) == 2
    results = {row["result"]: row["value"] for row in markdown_rows(text)}
    assert (results["test accuracy (%), final epoch"], results["test accuracy (%), best epoch"],
            results["test accuracy (%) after BN recalibration"]) == ("53", "53.5", "55.25")
    assert "preresnet110 on cifar10, Bernoulli q = 0.5 (Dropout-(a) before BN), seed 0" in text
    with pytest.warns(UserWarning, match="no summary.json"), pytest.raises(ValueError, match="no complete runs"):
        analysis_report.write_run_report(make_run(tmp_path, "unfinished", status=None))


def test_per_class_accuracy_is_tabled_per_setting_and_class_and_in_the_run_report(tmp_path, capsys):
    """Two seeds of one setting and a baseline; the cells are the hand-computed mean ± std over seeds; a class
    without test images (null in summary.json) has no line in the table and a dash in the report."""
    for seed, final, recalibrated in ((0, [90.0, 10.0, None], [92.0, 60.0, None]),
                                      (1, [80.0, 30.0, None], [88.0, 70.0, None])):
        make_run(tmp_path / "runs", f"before_bn{seed}", seed=seed, summary={
            "test_acc_per_class": final, "test_acc_recalibrated_per_class": recalibrated})
    baseline = make_run(tmp_path / "runs", "none", kind="none", rate=0.0, position="none", summary={
        "test_acc_per_class": [95.0, 94.0, None], "test_acc_recalibrated_per_class": [95.5, 94.5, None]},
        metrics=[{"epoch": 1, "train_acc": 60.0, "test_acc": 50.0}], variance=shift_rows([1.0, 1.01]))
    assert main(["per-class", str(tmp_path / "runs"), "--out", str(tmp_path / "out")]) == 0
    rows = markdown_rows((tmp_path / "out" / "per_class.md").read_text())
    dropout = [row for row in rows if row["dropout"] == "Bernoulli"]
    assert [(row["class"], row["final model"], row["BN recalibrated"]) for row in dropout] == [
        ("0", "85.00 ± 7.07", "90.00 ± 2.83"), ("1", "20.00 ± 14.14", "65.00 ± 7.07")]
    assert [row["final model"] for row in rows if row["dropout"] == "no dropout"] == ["95.00 (n=1)", "94.00 (n=1)"]
    assert main(["report", str(baseline)]) == 0
    text = (baseline / "report.md").read_text()
    assert "## Test accuracy per class" in text
    assert "| 1 | 94.00 | 94.50 |" in text and "| 2 | – | – |" in text
    with pytest.raises(SystemExit):
        main(["per-class", str(make_run(tmp_path, "old")), "--out", str(tmp_path / "out")])
    assert "has no test_acc_per_class (written by an older varshift)" in capsys.readouterr().err


# -- command line --

def test_command_line_writes_an_artifact_and_reports_bad_input(tmp_path, capsys):
    error_runs(tmp_path / "runs", "table4", "bernoulli", "head", [0.1])
    assert main(["table4", str(tmp_path / "runs"), "--out", str(tmp_path / "out")]) == 0
    assert "table4: 10 runs, 5 files" in capsys.readouterr().out  # the table (md, tex, csv), its statistics (md, csv)
    assert markdown_rows((tmp_path / "out" / "table4.md").read_text())[0]["q = 0.1"].endswith("(paper 4.96)")
    with pytest.raises(SystemExit) as exit_info:
        main(["table4", str(tmp_path / "missing"), "--out", str(tmp_path / "out")])
    assert exit_info.value.code == 2 and "missing' does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["table4", "--out", str(tmp_path / "out")])
    assert "give either run folders or --wandb" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["table9", str(tmp_path / "runs"), "--out", str(tmp_path / "out")])
    assert "invalid choice: 'table9'" in capsys.readouterr().err


# -- figures and tables for a paper --

def png_height(path: Path) -> int:
    return int.from_bytes(path.read_bytes()[20:24], "big")  # PNG's IHDR: width, then height


def test_figures_have_no_title_unless_asked_their_captions_name_the_artifact_and_its_runs(tmp_path, capsys):
    for seed in (0, 1):
        for rate in (0.0, 0.5):
            make_run(tmp_path / "runs", f"{rate}-{seed}", seed=seed, rate=rate, experiment="fig4",
                     variance=shift_rows([1.0 + rate, 1.0 + 2 * rate]),
                     summary={"test_error_recalibrated": 9.0})
    assert main(["fig4", str(tmp_path / "runs"), "--out", str(tmp_path / "plain")]) == 0
    assert main(["fig4", str(tmp_path / "runs"), "--out", str(tmp_path / "titled"), "--title"]) == 0
    caption = (tmp_path / "plain" / "fig4_shift.txt").read_text()
    assert caption == ("Figure 4: variance shift of every BN layer after training (1 = no shift). Lines: the mean "
                       "over seeds; bands: their range (min to max, n = 2).\n")
    assert (tmp_path / "plain" / "fig4_error.txt").read_text().endswith(
        "Bars: the mean over seeds; error bars: their range (min to max, n = 2).\n")
    assert (tmp_path / "titled" / "fig4_shift.txt").read_text() == caption
    for stem in ("fig4_shift", "fig4_error"):  # the caption is drawn above the figure only when asked
        assert png_height(tmp_path / "titled" / f"{stem}.png") > png_height(tmp_path / "plain" / f"{stem}.png") + 40
    # Table 3 made from Figure 4's runs is Table 3, from the runs of Figure 4, in the paper's words
    assert main(["table3", str(tmp_path / "runs"), "--out", str(tmp_path / "plain")]) == 0
    text = (tmp_path / "plain" / "table3.md").read_text()
    assert text.startswith("**Table 3: test error (%) of the final model before and after BN recalibration. "
                           "Runs of Figure 4.**")
    assert "| dataset   | model        | drop ratio q   | Dropout-(a) before BN, test error   |" in text
    assert "Table 3: test error" in (tmp_path / "plain" / "table3.tex").read_text()  # the LaTeX caption


def test_shift_bands_are_the_range_over_seeds_and_never_dip_below_one(tmp_path):
    """Seeds measuring 1.0 and 3.0 at a layer: mean 2, std 1.41, so mean - std = 0.59 would fall below the
    statistic's floor of 1; the range over the seeds is [1, 3]."""
    for seed, shifts in ((0, [1.0, 1.0]), (1, [3.0, 1.2])):
        make_run(tmp_path / "runs", f"s{seed}", seed=seed, variance=shift_rows(shifts))
    runs = collect([tmp_path / "runs"])
    data = run_labels(runs).merge(collect_records(runs, "variance"), on="run_dir")
    grid = figures.shift_curves(data, runs, "caption")
    (band,) = grid.axes.flat[0].collections[:1]
    low, high = band.get_paths()[0].vertices[:, 1].min(), band.get_paths()[0].vertices[:, 1].max()
    figures.plt.close(grid.figure)
    assert (low, high) == (1.0, 3.0)


def test_the_rates_of_one_kind_are_shades_of_one_palette_darker_as_the_rate_grows(tmp_path):
    from matplotlib.colors import rgb_to_hsv

    from varshift.analysis.plotting import NO_DROPOUT_COLOUR, dropout_palette

    for kind, rate in (("none", 0.0), ("bernoulli", 0.1), ("bernoulli", 0.3), ("bernoulli", 0.5), ("uniform", 0.1),
                       ("uniform", 0.3)):
        make_run(tmp_path, f"{kind}-{rate}", kind=kind, rate=rate)
    palette = dropout_palette(collect([tmp_path]))
    assert palette["no dropout"] == NO_DROPOUT_COLOUR
    for labels in (["Bernoulli q = 0.1", "Bernoulli q = 0.3", "Bernoulli q = 0.5"], ["Uout β = 0.1", "Uout β = 0.3"]):
        hues, values = zip(*((rgb_to_hsv(palette[label])[0], rgb_to_hsv(palette[label])[2]) for label in labels),
                           strict=True)
        assert max(hues) - min(hues) < 0.05  # one hue
        assert list(values) == sorted(values, reverse=True)  # darker as the rate grows
    blue, orange = (rgb_to_hsv(palette[label])[0] for label in ("Bernoulli q = 0.1", "Uout β = 0.1"))
    assert abs(blue - orange) > 0.2  # another kind, another hue
