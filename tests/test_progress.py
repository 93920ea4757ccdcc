"""What a run shows: a line per epoch and a summary table (logging), bars on stderr, and report.md at the end."""

from __future__ import annotations

import json
import logging
import subprocess
import sys

from hydra.core.utils import JobReturn, JobStatus
from omegaconf import OmegaConf

from varshift import training
from varshift.analysis.callbacks import RunReport
from varshift.progress import console_fallback

BAR_NAMES = ("epoch 1/2", "test", "training data, eval mode", "variance probe (final)", "BN recalibration")


def run_logged(make_config, tmp_path, caplog, *overrides):
    caplog.set_level(logging.INFO, logger="varshift")
    summary = training.run(make_config("trainer.epochs=2", *overrides), tmp_path)
    return summary, [record.getMessage() for record in caplog.records if record.name == "varshift.training.trainer"]


def test_a_run_logs_one_line_per_epoch_and_a_summary_table(make_config, tmp_path, caplog, capsys):
    summary, messages = run_logged(make_config, tmp_path, caplog)
    metrics = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert len(messages) == 3
    for message, row in zip(messages[:2], metrics, strict=True):
        assert message.startswith(f"epoch {row['epoch']}/2: train loss {row['train_loss']:.4f}")
        assert f"test loss {row['test_loss']:.4f}, accuracy {row['test_acc']:.2f}%" in message
        assert f"| lr {row['lr']:.4g} |" in message and message.endswith(f"{row['images_per_s']:,.0f} images/s")
    table = messages[-1]
    assert table.startswith(f"{tmp_path} complete:\n")
    assert f"{summary['test_error']:.2f}" in table and f"{summary['test_error_recalibrated']:.2f}" in table
    assert f"{summary['max_shift']:.4f}" in table and "training images/s" in table
    assert "batch/s" not in capsys.readouterr().err  # smoke scale: trainer.progress=false draws no bar


def test_progress_bars_go_to_stderr_and_not_to_the_log(make_config, tmp_path, caplog, capsys):
    _, messages = run_logged(make_config, tmp_path, caplog, "trainer.progress=true")
    err = capsys.readouterr().err
    for name in BAR_NAMES:
        assert f"{name}:" in err, name
    assert not any("batch/s" in message for message in messages)


def test_info_lines_reach_stderr_when_logging_is_not_configured(capsys):
    logger = logging.getLogger("varshift.test_progress")
    logger.propagate = False  # as if no handler were configured anywhere
    try:
        logger.info("hidden")
        with console_fallback(logger):
            logger.info("shown")
        logger.info("hidden again")
    finally:
        logger.propagate = True
    assert capsys.readouterr().err == "shown\n"
    assert not logger.handlers and logger.level == logging.NOTSET


def job_config(run_dir):
    return OmegaConf.create({"hydra": {"runtime": {"output_dir": str(run_dir)}}})


def test_a_report_that_cannot_be_written_is_a_warning(tmp_path, caplog):
    callback, config = RunReport(), job_config(tmp_path)
    callback.on_job_start(config)
    (tmp_path / "summary.json").write_text(json.dumps({"status": "complete"}))  # and no other run file
    callback.on_job_end(config, JobReturn(status=JobStatus.COMPLETED))
    assert not (tmp_path / "report.md").exists()
    assert [record.levelname for record in caplog.records] == ["WARNING"]
    assert "varshift-analysis report" in caplog.records[0].getMessage()


def test_the_command_line_writes_the_report_and_logs_to_cli_log(fashion_root, tmp_path):
    result = subprocess.run([sys.executable, "-m", "varshift.cli", "scale=smoke", f"dataset.root={fashion_root}",
                             "dataset.download=false", "trainer.device=cpu", "trainer.epochs=1",
                             "trainer.progress=true", f"hydra.run.dir={tmp_path}"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "summary.json").read_text())
    report = (tmp_path / "report.md").read_text()
    assert f"| test accuracy (%), final epoch | {summary['test_acc']:.4g} |" in report
    assert (tmp_path / "report_shift.png").stat().st_size > 0
    log = (tmp_path / "cli.log").read_text()
    assert "epoch 1/1: train loss" in log and "test error (%), final epoch" in log and "wrote" in log
    assert "epoch 1/1: train loss" in result.stdout
    assert "variance probe (final):" in result.stderr and "batch/s" not in log
