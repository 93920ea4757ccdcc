"""Top-5 error beside top-1 (evaluate, the run files, the report) and Table 5 end to end: the smoke recipe on the
sample ImageNet folder, and its table beside the paper's numbers."""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
import yaml
from torch import nn

from varshift.analysis import collect
from varshift.analysis.tables import table5
from varshift.paths import REPO_DIR
from varshift.training.loop import evaluate


class LogitTable(nn.Module):
    """Returns row ``i`` of ``logits`` for the input ``i``."""

    def __init__(self, logits: torch.Tensor):
        super().__init__()
        self.logits = nn.Parameter(logits, requires_grad=False)

    def forward(self, x):
        return self.logits[x.long()]


def test_top5_accuracy_counts_the_labels_among_the_five_largest_logits():
    # 7 classes; the label's rank among each image's logits (0: the largest) is 0, 1, 4, 5, 6, 2: top-1 holds one
    # image of six, top-5 the four of rank below 5
    ranks = [0, 1, 4, 5, 6, 2]
    logits = torch.arange(7.0, 0.0, -1.0).repeat(6, 1)  # class c has rank c
    labels = torch.tensor(ranks)
    model = LogitTable(logits)
    batches = [(torch.arange(0, 4), labels[:4]), (torch.arange(4, 6), labels[4:])]
    result = evaluate(model, batches, label="test", progress=False)
    assert result.acc == pytest.approx(100.0 / 6)
    assert result.top5_acc == pytest.approx(400.0 / 6)
    assert result.loss == pytest.approx(F.cross_entropy(logits, labels).item())
    assert evaluate(LogitTable(logits[:, :5]), [(torch.arange(6), labels % 5)], label="test",
                    progress=False).top5_acc is None  # five classes: every label is in the top 5


@pytest.fixture(scope="module")
def table5_smoke(imagenet_root, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("table5")
    result = subprocess.run([sys.executable, str(REPO_DIR / "experiments" / "table5.py"), "--scale", "smoke",
                             "--seeds", "0", f"dataset.root={imagenet_root}", "trainer.epochs=1", "trainer.threads=1",
                             "dataset.workers=0"],  # tiny JPEGs: decoding in the trainer is faster than forking
                            cwd=workdir, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "checked the 2 jobs of experiment=table5 scale=smoke" in result.stdout
    return workdir


def test_the_smoke_recipe_trains_with_and_without_the_head_dropout_and_records_top5(table5_smoke):
    runs = {}
    for summary_file in (table5_smoke / "multirun" / "table5" / "smoke").rglob("summary.json"):
        run = summary_file.parent
        config = yaml.safe_load((run / "config.yaml").read_text())
        assert (config["dataset"]["name"], config["model"]["name"], config["dropout"]["position"]) == (
            "imagenet", "small_cnn", "head")
        data = config["dataset"]
        assert (data["num_classes"], data["size"], data["resize"]) == (10, 32, 36)  # scale.imagenet at smoke
        summary = json.loads(summary_file.read_text())
        last = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
        assert last["test_top5_acc"] >= last["test_acc"]
        assert summary["test_top5_error"] == pytest.approx(100.0 - last["test_top5_acc"])
        assert summary["test_top5_error_recalibrated"] == pytest.approx(100.0 - summary["test_top5_acc_recalibrated"])
        assert "top-5 test accuracy (%), final epoch" in (run / "report.md").read_text()
        runs[config["dropout"]["rate"]] = summary
    assert sorted(runs) == [0.0, 0.2]
    table = pd.read_csv(table5_smoke / "results" / "table5" / "smoke" / "table5.csv")
    for rate, summary in runs.items():
        cells = table[table["dropout.rate"] == rate].set_index("metric")["mean"]
        assert cells.to_dict() == pytest.approx({"top-1 error": summary["test_error"],
                                                 "top-5 error": summary["test_top5_error"]})


def write_run(root, name, model, rate, seed, top1, top5):
    run = root / name
    run.mkdir()
    config = {"experiment_name": "table5", "seed": seed, "dataset": {"name": "imagenet", "size": 224},
              "model": {"name": model}, "dropout": {"kind": "bernoulli", "rate": rate, "channelwise": False,
                                                    "position": "head"}}
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    summary = {"status": "complete", "test_error": top1, "test_top5_error": top5}
    (run / "summary.json").write_text(json.dumps(summary) + "\n")


def test_the_table_puts_top1_and_top5_beside_the_papers_numbers(tmp_path):
    for seed, (top1, top5) in enumerate([(21.0, 5.5), (22.0, 6.5)]):
        write_run(tmp_path, f"a{seed}", "resnet200", 0.0, seed, top1, top5)
        write_run(tmp_path, f"b{seed}", "resnet200", 0.2, seed, top1 - 1, top5 - 1)
    markdown = (tmp_path / "out" / "table5.md")
    table5(collect([tmp_path]), tmp_path / "out")
    row = [line for line in markdown.read_text().splitlines() if "resnet200" in line][0]
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    # mean ± sample std of the two seeds, then the paper's Table 5 (PAPER.md section 4.4)
    assert cells == ["imagenet", "resnet200", "21.50 ± 0.71 (paper 21.70)", "6.00 ± 0.71 (paper 5.80)",
                     "20.50 ± 0.71 (paper 21.48)", "5.00 ± 0.71 (paper 5.55)"]
    assert "224x224 centre crops" in markdown.read_text()
    with pytest.raises(ValueError, match="table5 is about one dropout after all BN layers"):
        write_run(tmp_path, "c", "resnet200", 0.2, 9, 20.0, 5.0)
        (tmp_path / "c" / "config.yaml").write_text((tmp_path / "c" / "config.yaml").read_text().replace(
            "position: head", "position: before_bn"))
        table5(collect([tmp_path]), tmp_path / "out")
