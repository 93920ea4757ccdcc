"""analysis/: fabricated run directories -> DataFrame -> tables and figures holding the right numbers."""

from __future__ import annotations

import json
import re
import statistics
import sys
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from analysis import figures, tables
from analysis.__main__ import main
from analysis.collect import collect, collect_records, collect_wandb, find_run_dirs
from analysis.paper import PAPER_NUMBERS, paper_reference
from varshift import theory

PAPER_MD = Path(__file__).resolve().parents[2] / "shared" / "PAPER.md"
CELL = re.compile(r"^(?P<mean>-?\d+\.\d+)(?: ± (?P<std>\d+\.\d+))?(?: \((?P<notes>[^)]*)\))?$")


# -- fabricated run directories (the trainer's contract) --

def make_run(root: Path, name: str, *, seed=0, dataset="cifar10", model="preresnet110", kind="bernoulli",
             rate=0.5, position="before_bn", channelwise=False, experiment="test", status="complete",
             summary=None, variance=None, metrics=None, alignment=None) -> Path:
    """A run directory as varshift-train writes it; ``status=None`` leaves out summary.json (unfinished)."""
    run = root / name
    (run / ".hydra").mkdir(parents=True)
    config = {"experiment_name": experiment, "seed": seed,
              "dataset": {"name": dataset, "root": "${oc.env:VARSHIFT_DATA,data}"},
              "model": {"name": model, "kwargs": {"channels": [8, 16]}},
              "dropout": {"kind": kind, "rate": rate, "channelwise": channelwise, "position": position},
              "trainer": {"epochs": 3, "device": "cpu"},
              "scale": {"name": "paper", "datasets": [dataset], "models": [model]}}
    (run / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    if status is not None:
        full = {"status": status, "epochs": 3, "test_acc": 90.0, "test_error": 10.0, "mean_shift": 1.5,
                "train_eval_acc": 95.0, "versions": {"torch": "2.14.1"}, **(summary or {})}
        (run / "summary.json").write_text(json.dumps(full))
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


def markdown_rows(markdown: str) -> list[dict]:
    """The lines of a Markdown table as dicts keyed by its header."""
    lines = [[c.strip() for c in line.strip("|").split("|")] for line in markdown.splitlines()
             if line.startswith("|")]
    return [dict(zip(lines[0], line, strict=True)) for line in lines[2:]]


def latex_rows(path: Path) -> list[list[str]]:
    body = path.read_text().split("\\midrule\n")[1].split("\\bottomrule")[0]
    lines = body.strip().splitlines()
    return [[c.strip() for c in line.removesuffix("\\\\").split(" & ")] for line in lines]


def hand_stats(values: list[float]) -> tuple[str, str | None]:
    mean = f"{statistics.mean(values):.2f}"
    return mean, (f"{statistics.stdev(values):.2f}" if len(values) > 1 else None)


# -- the paper's numbers, read from PAPER.md itself --

NETS = {"PreResNet": "preresnet110", "ResNeXt": "resnext29_8x64d", "WRN": "wrn28_10",
        "DenseNet": "densenet_bc100"}
DATASETS = {"C10": "cifar10", "C100": "cifar100"}
POSITIONS = {"(a)": "before_bn", "(b)": "before_conv"}


def md_tables(text: str) -> list[list[list[str]]]:
    """Every Markdown table of PAPER.md: its header and rows as lists of cells."""
    found, current = [], None
    for line in text.splitlines():
        if not line.startswith("|"):
            current = None
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if current is None:
            current = [cells]
            found.append(current)
        elif not set("".join(cells)) <= set("-: "):
            current.append(cells)
    return found


def number(cell: str) -> str | None:
    match = re.match(r"(\d+\.\d+)", cell)
    return match and match[1]


def paper_md_numbers(text: str) -> dict[tuple, str]:
    numbers = {}

    def put(artifact, dataset, model, position, kind, rate, metric, cell):
        if number(cell):
            numbers[(artifact, dataset, model, position, kind, float(rate), metric)] = number(cell)

    for header, *rows in md_tables(text):  # each table is told apart by its header
        if header[1] == "C10 (cosθ)²":
            columns = [(d, m) for d in ("cifar10", "cifar100") for m in ("cos2", "d_cos2")]
            for net, *cells in rows:
                for (dataset, metric), cell in zip(columns, cells, strict=True):
                    put("table1", dataset, NETS[net], "none", "none", 0.0, metric, cell)
        elif header[:2] == ["net", "setting"]:
            for net, setting, *cells in rows:
                position, dataset = setting.split()
                for rate, cell in zip(header[2:], cells, strict=True):
                    put("fig4", DATASETS[dataset], NETS[net], POSITIONS[position], "bernoulli", rate,
                        "mean_shift", cell)
        elif header[0] == "panel":
            for panel, *cells in rows:
                net, position, dataset = panel.split()
                for column, cell in zip(header[1:], cells, strict=True):
                    rate, mode = column.split()
                    put("fig5", DATASETS[dataset], NETS[net], POSITIONS[position], "bernoulli", rate,
                        {"train-mode": "train_acc", "eval-mode": "train_eval_acc"}[mode], cell)
        elif header[:2] == ["setting", "net"]:
            setting = None
            for first, net, *cells in rows:
                setting = first.removeprefix("Dropout-").split() if first else setting
                for rate, cell in zip(header[2:], cells, strict=True):
                    put("fig4", DATASETS[setting[1]], NETS[net], POSITIONS[setting[0]], "bernoulli", rate,
                        "test_error", cell)
        elif header[1] == "(a) 0.5":
            for net, *cells in rows:
                for column, cell in zip(header[1:], cells, strict=True):
                    position, label = column.split()
                    put("table3", DATASETS[header[0]], NETS[net], POSITIONS[position], "bernoulli", 0.5,
                        "test_error_recalibrated" if label.endswith("Adjust") else "test_error", cell)
        elif header[0].endswith(("drop ratio", "β")):
            artifact, position, kind = (("table4", "head", "bernoulli") if header[0].endswith("drop ratio")
                                        else ("table6", "before_conv", "uniform"))
            dataset = DATASETS[header[0].split()[0]]
            for net, *cells in rows:
                for rate, cell in zip(header[1:], cells, strict=True):
                    put(artifact, dataset, NETS[net], position, kind, rate, "test_error", cell)
    return numbers


def csv_numbers() -> dict[tuple, str]:
    frame = pd.read_csv(PAPER_NUMBERS, dtype={"value": str})
    return {(r.artifact, r.dataset, r.model, r.position, r.kind, float(r.rate), r.metric): r.value
            for r in frame.itertuples()}


@pytest.fixture(scope="module")
def paper() -> dict[tuple, str]:
    """The paper's numbers from PAPER.md where it is at hand, else from paper_numbers.csv."""
    return paper_md_numbers(PAPER_MD.read_text()) if PAPER_MD.exists() else csv_numbers()


def test_paper_numbers_csv_holds_exactly_the_numbers_of_paper_md():
    if not PAPER_MD.exists():
        pytest.skip(f"{PAPER_MD} is not here")
    expected, stored = paper_md_numbers(PAPER_MD.read_text()), csv_numbers()
    # Tables 1, 3, 4, 6, Figure 4 errors and curve means (less the 7 clipped curves), Figure 5
    assert len(expected) == 16 + 32 + 40 + 40 + 80 + 73 + 16
    assert stored == expected


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
    assert row["dataset.root"] == "${oc.env:VARSHIFT_DATA,data}"  # kept as written, not resolved
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
    config = yaml.safe_load((run_dir / ".hydra" / "config.yaml").read_text())
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
    assert sorted(p.name for p in written) == [f"{artifact}.{s}" for s in ("csv", "md", "tex")]
    markdown = markdown_rows((tmp_path / "out" / f"{artifact}.md").read_text())
    latex = latex_rows(tmp_path / "out" / f"{artifact}.tex")
    # the paper's row order (Table 4 lists PreResNet before WRN), and every cell
    assert [(r["dataset"], r["model"]) for r in markdown] == [
        (dataset, model) for dataset in ("cifar10", "cifar100") for model in ("preresnet110", "wrn28_10")]
    for md_row, tex_row in zip(markdown, latex, strict=True):
        for rate, tex_cell in zip((0.0, 0.2), tex_row[2:], strict=True):
            cell = parse_cell(md_row[f"rate={rate:g}"])
            mean, std = hand_stats(errors[(md_row["dataset"], md_row["model"], rate)])
            assert (cell["mean"], cell["std"]) == (mean, std)
            if std is None:
                assert "n=1" in cell["notes"]
            key = (artifact, md_row["dataset"], md_row["model"], position, kind, rate, "test_error")
            assert cell["notes"]["paper"] == f"{float(paper[key]):.2f}"
            assert tex_cell == md_row[f"rate={rate:g}"].replace("±", "$\\pm$")
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
            expected.setdefault((position, "error"), []).append(before)
            expected.setdefault((position, "error, BN recalibrated"), []).append(after)
    tables.table3(collect([tmp_path / "runs"]), tmp_path)
    (row,) = markdown_rows((tmp_path / "table3.md").read_text())
    for (position, metric), values in expected.items():
        cell = parse_cell(row[f"position={position}, {metric}"])
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
    assert markdown_rows(by_kind.markdown) == [{"dataset": "cifar10", "kind=bernoulli": "5.00 (n=1)",
                                                "kind=uniform": "7.00 (n=1)"}]
    tables.artifact_table(runs, ["dataset.name"], [], "test_error", tmp_path, "extra", "kinds become rows")
    assert [r["kind"] for r in markdown_rows((tmp_path / "extra.md").read_text())] == ["bernoulli", "uniform"]
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
    with pytest.raises(ValueError, match="no numbers for artifact 'table5'"):
        paper_reference("table5", "test_error")
    with pytest.raises(ValueError, match="has no metric"):
        paper_reference("table4", "top1_error")


# -- figures --

def shift_rows(shifts: list[float], stage: str = "final") -> dict:
    layers = range(len(shifts))
    return {"stage": stage, "epoch": 3, "layer": list(layers), "name": [f"bn{i}" for i in layers],
            "moving_var": 1.0, "real_var": 1.0, "train_var": 1.0, "shift": shifts}


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
    assert len(written) == 12
    plotted = pd.read_csv(tmp_path / "out" / "fig4_shift.csv")
    assert len(plotted) == 8 * 4 and (plotted["shift"] < 9.0).all()  # the final stage only, not the probes
    curve = plotted[(plotted["panel"] == "Dropout-(b) before_conv | cifar10")
                    & (plotted["dropout"] == "bernoulli 0.5") & (plotted["seed"] == 1)]
    assert list(curve["shift"]) == pytest.approx([1.5, 2.0, 2.5, 3.0])
    errors = pd.read_csv(tmp_path / "out" / "fig4_error.csv")
    assert sorted(errors["test_error"]) == [5.0] * 4 + [5.5] * 4
    (before_bn, before_conv) = markdown_rows((tmp_path / "out" / "fig4_mean_shift.md").read_text())
    for row, position in ((before_bn, "before_bn"), (before_conv, "before_conv")):
        cell = parse_cell(row["rate=0.5"])
        values = expected_means[(position, 0.5)]
        assert cell["mean"] == f"{statistics.mean(values):.3f}"
        assert cell["std"] == f"{statistics.stdev(values):.3f}"
        key = ("fig4", "cifar10", "preresnet110", position, "bernoulli", 0.5, "mean_shift")
        # PreResNet's Dropout-(b) 0.5 curve is clipped in the paper's plot: no paper value
        assert (key in paper) == (position == "before_bn")
        assert cell["notes"].get("paper") == (f"{float(paper[key]):.3f}" if key in paper else None)
    grid = figures.shift_curves(plotted)
    axis = grid.axes.flat[0]
    assert (axis.get_xlabel(), axis.get_ylabel()) == ("BN layer index", "max(real/moving, moving/real)")
    assert [t.get_text() for t in grid.legend.texts] == ["bernoulli 0", "bernoulli 0.5"]
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
    eval_mode = plotted[(plotted["mode"] == "eval mode") & (plotted["dropout"] == "bernoulli 0.5")]
    assert list(zip(eval_mode["epoch"], eval_mode["accuracy"], strict=True)) == [(1, 40.0), (3, 75.0)]
    assert len(plotted[plotted["mode"] == "train mode"]) == 6
    (row,) = markdown_rows((tmp_path / "out" / "fig5_final.md").read_text())
    cell = parse_cell(row["rate=0.5, eval mode"])
    assert cell["mean"] == "75.00" and "n=1" in cell["notes"]
    key = ("fig5", "cifar100", "preresnet110", "before_bn", "bernoulli", 0.5, "train_eval_acc")
    assert cell["notes"]["paper"] == f"{float(paper[key]):.2f}"
    assert parse_cell(row["rate=0, train mode"])["mean"] == "90.00"


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
        cell = parse_cell(row[f"dataset=cifar10, {metric}"])
        values = [r[index] for r in per_run]
        assert cell["mean"] == f"{statistics.mean(values):.5f}"
        assert cell["std"] == f"{statistics.stdev(values):.5f}"
        key = ("table1", "cifar10", "preresnet110", "none", "none", 0.0, ("cos2", "d_cos2")[index])
        assert cell["notes"]["paper"] == f"{float(paper[key]):.5f}"
    assert "d$\\cdot$cos$^2$$\\theta$" in (tmp_path / "out" / "table1.tex").read_text()
    assert len(pd.read_csv(tmp_path / "out" / "fig3_d_cos2.csv")) == 9


def test_theory_vs_measured_draws_one_plus_the_noise_variance(tmp_path):
    for kind, rate, shift in (("bernoulli", 0.5, 1.9), ("uniform", 0.5, 1.1), ("bernoulli", 0.5, 2.1)):
        make_run(tmp_path / "runs", f"{kind}-{shift}", kind=kind, rate=rate, seed=int(shift * 10),
                 summary={"mean_shift": shift})
    make_run(tmp_path / "runs", "head", position="head", summary={"mean_shift": 50.0})
    figures.theory_vs_measured(collect([tmp_path / "runs"]), tmp_path / "out")
    plotted = pd.read_csv(tmp_path / "out" / "theory_vs_measured.csv")
    curves = plotted[plotted["source"] == "theory"]
    for kind, rate, shift in curves[["dropout.kind", "dropout.rate", "mean_shift"]].itertuples(index=False):
        assert shift == pytest.approx(1.0 + theory.noise_variance(kind, rate))
    assert curves.groupby("dropout.kind")["dropout.rate"].max().to_dict() == {"bernoulli": 0.5,
                                                                              "uniform": 0.5}
    measured = plotted.loc[plotted["source"] == "measured", "mean_shift"]
    assert sorted(measured) == [1.1, 1.9, 2.1]  # not the run with dropout at the head
    table = (tmp_path / "out" / "theory_vs_measured_table.md").read_text()
    rows = {r["kind"]: r for r in markdown_rows(table)}
    cell = parse_cell(rows["bernoulli"]["dataset=cifar10, model=preresnet110"])
    assert (cell["mean"], cell["std"], cell["notes"]) == ("2.000", f"{statistics.stdev([1.9, 2.1]):.3f}",
                                                          {"theory": "2.000"})
    uniform = parse_cell(rows["uniform"]["dataset=cifar10, model=preresnet110"])
    assert uniform["notes"]["theory"] == f"{1 + 0.5**2 / 3:.3f}"  # Eq. 15: 1 / (3 / (3 + beta^2))


# -- command line --

def test_command_line_writes_an_artifact_and_reports_bad_input(tmp_path, capsys):
    error_runs(tmp_path / "runs", "table4", "bernoulli", "head", [0.1])
    assert main(["table4", str(tmp_path / "runs"), "--out", str(tmp_path / "out")]) == 0
    assert "table4: 10 runs, 3 files" in capsys.readouterr().out
    assert markdown_rows((tmp_path / "out" / "table4.md").read_text())[0]["rate=0.1"].endswith("(paper 4.96)")
    with pytest.raises(SystemExit) as exit_info:
        main(["table4", str(tmp_path / "missing"), "--out", str(tmp_path / "out")])
    assert exit_info.value.code == 2 and "missing' does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["table4", "--out", str(tmp_path / "out")])
    assert "give either run folders or --wandb" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["table9", str(tmp_path / "runs"), "--out", str(tmp_path / "out")])
    assert "invalid choice: 'table9'" in capsys.readouterr().err
