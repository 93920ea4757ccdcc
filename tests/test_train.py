"""varshift-train: complete run directories, resume, divergence, config errors, multirun."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pandas as pd
import pytest
import torch

from varshift import training
from varshift.training import CHECKPOINT, CONFIG_FILE, Trainer, TrainingDiverged, load_checkpoint
from varshift.training.loop import evaluate
from varshift.training.optim import lr_factor

RUN_FILES = (CONFIG_FILE, "metrics.jsonl", "variance.csv", "alignment.csv", "summary.json", CHECKPOINT)
TIMING_KEYS = ("seconds", "images_per_s")


def read_metrics(run_dir):
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in row.items() if k not in TIMING_KEYS} for row in rows]


def test_a_run_writes_every_file_with_consistent_content(make_config, tmp_path):
    cfg = make_config("trainer.epochs=2", "probe.every=1", "dropout.rate=0.5", "dropout.position=before_bn")
    summary = training.run(cfg, tmp_path)
    for name in RUN_FILES:
        assert (tmp_path / name).stat().st_size > 0, name
    metrics = read_metrics(tmp_path)
    assert [row["epoch"] for row in metrics] == [1, 2]
    assert "train_eval_acc" in metrics[0]  # probed after epoch 1, the last epoch is probed as "final"
    variance = pd.read_csv(tmp_path / "variance.csv")
    assert list(variance["stage"].unique()) == ["probe", "final", "recalibrated"]
    final = variance[variance["stage"] == "final"]
    assert summary["mean_shift"] == pytest.approx(final["shift"].mean())
    assert (variance["shift"] >= 1.0).all()
    assert summary["test_acc"] == metrics[-1]["test_acc"]
    assert summary["test_error_recalibrated"] == pytest.approx(100 - summary["test_acc_recalibrated"])
    alignment = pd.read_csv(tmp_path / "alignment.csv")
    assert ((alignment["cos2"] > 0) & (alignment["cos2"] <= 1)).all()
    assert json.loads((tmp_path / "summary.json").read_text())["status"] == "complete"
    # per-class accuracy of the final model and after BN recalibration: averaged with the class sizes of the test
    # data, it is the test accuracy of the same model
    labels = torch.cat([y for _, y in Trainer(cfg, tmp_path / "unused").loaders.test])
    sizes = torch.bincount(labels, minlength=10).double()
    for per_class, accuracy in (("test_acc_per_class", "test_acc"),
                                ("test_acc_recalibrated_per_class", "test_acc_recalibrated")):
        assert len(summary[per_class]) == 10 and all(0 <= value <= 100 for value in summary[per_class])
        weighted = float((torch.tensor(summary[per_class], dtype=torch.float64) * sizes).sum() / sizes.sum())
        assert weighted == pytest.approx(summary[accuracy], abs=1e-9)


def test_evaluate_counts_the_accuracy_of_each_class():
    """A classifier that always answers class 1, on labels 0, 1, 1, 2, 1 (none of class 3): class 1 all right,
    0 and 2 all wrong, class 3 without images NaN."""
    always_one = torch.nn.Linear(1, 4)
    with torch.no_grad():
        always_one.weight.zero_()
        always_one.bias.copy_(torch.tensor([0.0, 1.0, 0.0, 0.0]))
    batches = [(torch.zeros(2, 1), torch.tensor([0, 1])), (torch.zeros(3, 1), torch.tensor([1, 2, 1]))]
    loss, accuracy, _, per_class = evaluate(always_one, batches, label="test", progress=False, per_class=True)
    assert accuracy == pytest.approx(60.0)
    assert per_class[:3] == [0.0, 100.0, 0.0] and math.isnan(per_class[3])
    assert evaluate(always_one, batches, label="test", progress=False) == (loss, accuracy, None, None)


def test_the_demo_network_learns_the_small_dataset(make_config, tmp_path):
    cfg = make_config("trainer.epochs=3", "dropout=none", "dataset.subset=null")
    summary = training.run(cfg, tmp_path)
    assert summary["test_acc"] > 60.0  # 10 classes: chance is 10%


def test_a_killed_run_resumes_to_the_same_results(make_config, tmp_path, monkeypatch):
    cfg = make_config("trainer.epochs=2", "probe.every=1")
    uninterrupted = tmp_path / "uninterrupted"
    expected = training.run(cfg, uninterrupted)

    killed = tmp_path / "killed"
    original = Trainer.train_epoch

    def die_in_epoch_two(self):
        if self.epoch == 2:
            raise KeyboardInterrupt("killed")
        return original(self)

    monkeypatch.setattr(Trainer, "train_epoch", die_in_epoch_two)
    with pytest.raises(KeyboardInterrupt):
        training.run(cfg, killed)
    assert len(read_metrics(killed)) == 1 and not (killed / "summary.json").exists()
    monkeypatch.setattr(Trainer, "train_epoch", original)
    resumed = training.run(cfg, killed)

    assert read_metrics(killed) == read_metrics(uninterrupted)
    pd.testing.assert_frame_equal(pd.read_csv(killed / "variance.csv"), pd.read_csv(uninterrupted / "variance.csv"))
    for key in ("test_acc", "test_acc_recalibrated", "mean_shift", "mean_shift_recalibrated", "train_eval_acc"):
        assert resumed[key] == expected[key], key


def test_a_complete_run_is_skipped_and_a_changed_config_is_refused(make_config, tmp_path, monkeypatch):
    cfg = make_config("trainer.epochs=1")
    first = training.run(cfg, tmp_path)
    monkeypatch.setattr(Trainer, "run", lambda self: pytest.fail("a complete run was trained again"))
    assert training.run(cfg, tmp_path) == first
    monkeypatch.undo()
    (tmp_path / "summary.json").unlink()
    other = make_config("trainer.epochs=1", "dropout.rate=0.3")
    with pytest.raises(ValueError, match=r"dropout.rate: 0.5 -> 0.3"):
        training.run(other, tmp_path)


def test_a_nan_loss_stops_with_a_clear_message_and_keeps_the_last_good_checkpoint(make_config, tmp_path,
                                                                                  monkeypatch):
    cfg = make_config("trainer.epochs=3")
    original = Trainer.train_epoch

    def nan_in_epoch_two(self):
        row = original(self)
        return {**row, "train_loss": float("nan")} if self.epoch == 2 else row

    monkeypatch.setattr(Trainer, "train_epoch", nan_in_epoch_two)
    with pytest.raises(TrainingDiverged, match=r"in epoch 2: the training loss became nan.*last good checkpoint "
                                               r"\(epoch 1\)"):
        training.run(cfg, tmp_path)
    assert load_checkpoint(tmp_path / CHECKPOINT)["epoch"] == 1
    assert len(read_metrics(tmp_path)) == 1


def test_l1_and_nesterov_and_cosine_run(make_config, tmp_path):
    cfg = make_config("trainer.epochs=2", "optim.l1=1e-5", "optim.nesterov=true", "optim.schedule=cosine")
    training.run(cfg, tmp_path)
    lrs = [row["lr"] for row in read_metrics(tmp_path)]
    assert lrs == pytest.approx([cfg["optim"]["lr"], cfg["optim"]["lr"] * 0.5])


def test_multistep_schedule_follows_the_milestones():
    factor = lr_factor({"schedule": "multistep", "milestones": [0.4939024390, 0.7439024390],
                              "gamma": 0.1}, epochs=164)
    assert [factor(e) for e in (0, 80, 81, 121, 122, 163)] == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])


def test_validation_split_and_early_stopping(make_config, tmp_path):
    cfg = make_config("trainer.epochs=2", "dataset.val_split=0.2", "trainer.early_stopping.patience=5")
    training.run(cfg, tmp_path)
    assert all("val_acc" in row for row in read_metrics(tmp_path))
    trainer = Trainer.__new__(Trainer)
    trainer.cfg, trainer.best_val_acc, trainer.epochs_without_improvement = cfg, -1.0, 0
    cfg["trainer"]["early_stopping"]["patience"] = 2
    assert [trainer.update_early_stopping(a) for a in (50, 60, 55, 58, 70)] == [True, True, True, False, True]


@pytest.mark.parametrize("override,message", [
    ("dropout.rate=-0.1", r"dropout.rate=-0.1.*\[0, 1\)"),
    ("dropout=uniform dropout.rate=1.5", r"dropout.rate=1.5.*\[0, 1\]"),
    ("model.name=resnet18", r"model.name='resnet18'.*preresnet110"),
    ("optim.lr=0", r"optim.lr=0.0.*> 0"),
    ("optim.milestones=[0.8,0.2]", r"optim.milestones.*increasing fractions"),
    ("dataset.subset=2.5", r"dataset.subset=2.5.*fraction in \(0, 1\]"),
    ("trainer.early_stopping.patience=3", r"patience=3.*val_split > 0"),
    ("trainer.device=tpu", r"trainer.device='tpu'.*auto, cpu, cuda"),
])
def test_bad_values_fail_before_training_naming_key_value_and_allowed(make_config, override, message):
    with pytest.raises(ValueError, match=message):
        make_config(*override.split())


def run_cli(*args, env_extra=None):
    env = {**os.environ, "HYDRA_FULL_ERROR": "0", **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "varshift.cli", *args], capture_output=True, text=True, env=env,
                          timeout=600)


@pytest.mark.parametrize("override,expected", [
    ("dropout.position=befor_bn", ["befor_bn", "before_bn", "before_conv", "head"]),
    ("model=resnet18", ["model/resnet18", "preresnet110", "small_cnn"]),
    ("dropout.rate=-0.1", ["dropout.rate=-0.1", "[0, 1)"]),
    ("+trainer.epoch=2", ["trainer.epoch=2", "epochs, batch_size"]),
])
def test_the_command_line_reports_bad_configs(fashion_root, tmp_path, override, expected):
    result = run_cli("scale=smoke", f"dataset.root={fashion_root}", f"hydra.run.dir={tmp_path}", override)
    assert result.returncode == 2
    assert result.stderr.startswith("varshift-train: error: ") and result.stderr.count("\n") == 1, result.stderr
    for text in expected:
        assert text in result.stderr, result.stderr
    assert not any(tmp_path.iterdir())


def test_multirun_of_two_jobs_writes_two_complete_run_directories(fashion_root, tmp_path):
    result = run_cli("-m", "scale=smoke", f"dataset.root={fashion_root}", "dataset.download=false",
                     "trainer.device=cpu", "trainer.epochs=1", "seed=0,1", f"hydra.sweep.dir={tmp_path}")
    assert result.returncode == 0, result.stderr
    run_dirs = sorted(p.parent for p in tmp_path.rglob("summary.json"))
    assert [d.name for d in run_dirs] == ["seed=0,trainer.device=cpu,trainer.epochs=1",
                                          "seed=1,trainer.device=cpu,trainer.epochs=1"]
    for run_dir in run_dirs:
        for name in RUN_FILES:
            assert (run_dir / name).stat().st_size > 0, (run_dir, name)
        assert len(read_metrics(run_dir)) == 1
