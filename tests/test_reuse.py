"""A sweep's job whose training is complete in a sweep beside it is not trained again, and its results are those of
training it: the no-dropout baseline of Figure 4 (rate 0 before BN) serves Table 4 (rate 0 at the head)."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from varshift.training import Trainer, reuse, run

SMOKE = ("trainer.epochs=2", "trainer.threads=1", "model.kwargs.channels=[4,8]", "model.kwargs.hidden=8")


def sweep_job(root, experiment: str, job: str):
    sweep = root / "multirun" / experiment / "smoke"
    sweep.mkdir(parents=True, exist_ok=True)
    (sweep / "multirun.yaml").write_text("{}\n")  # Hydra writes it into every sweep folder
    return sweep / job


TIMES = ("wall_time_s", "versions", "seconds", "images_per_s")  # how long it took, not what it computed


def summary_numbers(run_dir) -> dict:
    summary = json.loads((run_dir / "summary.json").read_text())
    return {key: value for key, value in summary.items() if key not in TIMES}


def epoch_numbers(run_dir) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{key: value for key, value in row.items() if key not in TIMES} for row in rows]


def test_a_complete_run_of_the_same_computation_is_measured_not_trained(make_config, tmp_path, monkeypatch):
    baseline = make_config("experiment_name=fig4", "dropout.rate=0.0", "dropout.position=before_bn", *SMOKE)
    wanted = make_config("experiment_name=table4", "dropout.rate=0.0", "dropout.position=head",
                         "probe.batches=3", *SMOKE)
    assert reuse.computation(baseline) == reuse.computation(wanted)
    source = sweep_job(tmp_path, "fig4", "dropout.rate=0.0,dropout.position=before_bn")
    run(baseline, source)

    trained_here = tmp_path / "alone"
    run(wanted, trained_here)  # not a sweep's job: trained

    def no_training(self):
        raise AssertionError("the job trained an epoch")

    monkeypatch.setattr(Trainer, "train_epoch", no_training)
    job = sweep_job(tmp_path, "table4", "dropout.rate=0.0")
    run(wanted, job)
    assert summary_numbers(job) == summary_numbers(trained_here)
    assert epoch_numbers(job) == epoch_numbers(trained_here)
    assert (job / "variance.csv").read_text() == (trained_here / "variance.csv").read_text()
    # measured with the job's own model: no BN is fed by a dropout at the head, all three before BN
    assert not pd.read_csv(job / "variance.csv")["fed_by_dropout"].any()
    assert pd.read_csv(source / "variance.csv")["fed_by_dropout"].sum() == 3 * 2  # final and recalibrated


@pytest.mark.parametrize(("change", "same"), [
    (("dropout.rate=0.1", "dropout.position=before_bn"), False),  # a noise: another computation
    (("dropout.rate=0.0", "dropout.position=before_conv", "seed=1"), False),
    (("dropout=none", "probe.recalibrate=false", "probe.per_channel=true"), True),
    (("dropout.rate=0.0", "dropout.position=head", "optim.lr=0.02"), False),
])
def test_the_same_computation_ignores_what_cannot_change_training(make_config, change, same):
    baseline = make_config("dropout.rate=0.0", "dropout.position=before_bn", *SMOKE)
    assert (reuse.computation(make_config(*change, *SMOKE)) == reuse.computation(baseline)) is same


def test_runs_probed_during_training_are_not_reused(make_config, tmp_path):
    probed = make_config("dropout.rate=0.0", "probe.every=1", *SMOKE)
    source = sweep_job(tmp_path, "fig5", "a")
    run(probed, source)
    assert reuse.find_same_computation(probed, sweep_job(tmp_path, "other", "b")) is None


def test_a_reused_run_gets_a_wandb_run_of_its_own(make_config, tmp_path):
    """The copied checkpoint carries the source's history; the source's wandb run id must not come with it, or the
    job would write into the source's wandb run."""
    from varshift.training.checkpoint import CHECKPOINT, load_checkpoint, save_checkpoint

    baseline = make_config("experiment_name=fig4", "dropout.rate=0.0", *SMOKE)
    source = sweep_job(tmp_path, "fig4", "a")
    run(baseline, source)
    state = load_checkpoint(source / CHECKPOINT)
    state["recorder"]["wandb_id"] = "the-source-s-run"
    save_checkpoint(source / CHECKPOINT, state)
    job = sweep_job(tmp_path, "table4", "b")
    job.mkdir()
    assert reuse.start_from_same_computation(make_config("experiment_name=table4", "dropout.rate=0.0", *SMOKE),
                                             job) == source.resolve()
    assert load_checkpoint(job / CHECKPOINT)["recorder"]["wandb_id"] is None
