"""wandb as its users expect, read back from the offline run's own records (the ``.wandb`` file), not from a mock."""

from __future__ import annotations

import json
import os
import signal
import struct
from pathlib import Path

import pytest

from varshift import training
from varshift.errors import RunInterrupted
from varshift.tracking import wandb_group
from varshift.training import Trainer, checkpoint, load_checkpoint

# The .wandb file is a LevelDB-style log (the format of wandb's former datastore.py): a 7-byte header (":W&B",
# magic 0xBEE1, version), then 32 KiB blocks of chunks, each a 7-byte header (crc32, length, type) and a piece of
# a serialized wandb.proto Record; type 1 is a whole record, 2/3/4 its first, middle and last pieces.
FILE_HEADER, CHUNK_HEADER, BLOCK = struct.Struct("<4sHB"), struct.Struct("<IHB"), 32 * 1024
FULL, LAST = 1, 4


def wandb_records(path: Path) -> list:
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    ident, magic, _ = FILE_HEADER.unpack_from(data)
    assert (ident, magic) == (b":W&B", 0xBEE1)
    records, position, pieces = [], FILE_HEADER.size, b""
    while position + CHUNK_HEADER.size <= len(data):
        if BLOCK - position % BLOCK < CHUNK_HEADER.size:  # a block's tail too short for a chunk header is padding
            position += BLOCK - position % BLOCK
            continue
        _, length, kind = CHUNK_HEADER.unpack_from(data, position)
        start = position + CHUNK_HEADER.size
        pieces += data[start:start + length]
        position = start + length
        if kind in (FULL, LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pieces)
            records.append(record)
            pieces = b""
    return records


def offline_run(folder: Path) -> dict:
    """What one offline wandb session recorded: its run record, metric definitions, history rows, summary."""
    (path,) = folder.glob("*.wandb")
    records = wandb_records(path)
    run = next(r.run for r in records if r.WhichOneof("record_type") == "run")

    def key(item) -> str:
        return item.key or "/".join(item.nested_key)

    history = [{key(item): json.loads(item.value_json) for item in r.history.item}
               for r in records if r.WhichOneof("record_type") == "history"]
    summary = {}
    for r in records:
        if r.WhichOneof("record_type") == "summary":
            summary.update({key(item): json.loads(item.value_json) for item in r.summary.update})
    return {"run": run, "config": {key(item): json.loads(item.value_json) for item in run.config.update},
            "metrics": [r.metric for r in records if r.WhichOneof("record_type") == "metric"],
            "history": history, "summary": summary}


def sessions(run_dir: Path) -> list[dict]:
    """The offline sessions in the order they started (folder names have one-second timestamps)."""
    runs = [offline_run(folder) for folder in (run_dir / "wandb").glob("offline-run-*")]
    return sorted(runs, key=lambda session: session["run"].start_time.ToNanoseconds())


def interrupt_in_epoch(epoch: int, monkeypatch) -> None:
    original = Trainer.train_epoch

    def train_epoch(self):
        if self.epoch == epoch:
            os.kill(os.getpid(), signal.SIGINT)
        return original(self)

    monkeypatch.setattr(Trainer, "train_epoch", train_epoch)


def test_wandb_groups_tags_and_namespaces_a_run_and_a_resume_continues_the_same_wandb_run(
        make_config, tmp_path, monkeypatch, capsys, recwarn):
    pytest.importorskip("wandb")
    monkeypatch.delenv("WANDB_MODE", raising=False)
    setting = ["trainer.epochs=2", "probe.every=1"]
    cfg = make_config(*setting, "logger=wandb", "logger.wandb.mode=offline", "logger.wandb.tags=[mine]")
    # session 1 is interrupted in epoch 1, before any checkpoint: session 2 starts from scratch; it is interrupted in
    # epoch 2 and session 3 resumes it
    for epoch in (1, 2):
        with monkeypatch.context() as patch:
            interrupt_in_epoch(epoch, patch)
            with pytest.raises(RunInterrupted):
                training.run(cfg, tmp_path)
    training.run(cfg, tmp_path)
    scratch, first, resumed = sessions(tmp_path)
    kept_id = load_checkpoint(tmp_path / checkpoint.CHECKPOINT)["recorder"]["wandb_id"]
    assert first["run"].run_id == resumed["run"].run_id == kept_id != scratch["run"].run_id

    run = first["run"]
    assert run.run_group == wandb_group(cfg) and "small_cnn fashion_mnist bernoulli 0.5 before_bn" in run.run_group
    assert wandb_group(make_config(*setting, "seed=1")) == wandb_group(cfg)  # the seeds of one setting are a group
    assert wandb_group(make_config(*setting, "optim.lr=0.01")) != wandb_group(cfg)
    assert run.job_type == cfg["experiment_name"]
    assert list(run.tags) == [f"experiment={cfg['experiment_name']}", "scale=smoke", "kind=bernoulli",
                              "position=before_bn", "mine"]
    assert first["config"]["dropout.rate"] == 0.5 and "dropout.rate" not in resumed["config"]  # logged once
    for session in (first, resumed):
        steps = {metric.glob_name: metric.step_metric for metric in session["metrics"] if metric.glob_name}
        assert steps == {f"{namespace}/*": "epoch" for namespace in ("train", "val", "test", "shift", "recalibrated")}

    (epoch_1,) = [row for row in first["history"] if "train/acc" in row]
    assert epoch_1["epoch"] == 1 and {"train/loss", "train/lr", "test/acc", "test/loss", "shift/mean"} <= set(epoch_1)
    layers = {key for row in first["history"] for key in row if key.startswith("shift/features.")}
    assert "shift/features.0.bn" in layers  # the probe after epoch 1, one metric per BN layer
    rows = resumed["history"]
    assert [row["epoch"] for row in rows if "train/acc" in row] == [2]
    final = next(row for row in rows if "shift/per_layer/_type" in row)  # a media value: its fields, nested
    assert final["epoch"] == 2 and final["shift/per_layer/_type"] == "table-file"
    assert any(row.get("shift/per_layer_chart_table/_type") == "table-file" for row in rows)  # its line chart
    assert any("recalibrated/shift/features.0.bn" in row for row in rows)
    assert any("recalibrated/test_acc" in row for row in rows)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert resumed["summary"]["test_acc"] == summary["test_acc"] and "epoch" not in resumed["summary"]
    assert "reinit" not in capsys.readouterr().err and not [w for w in recwarn if "reinit" in str(w.message)]
