"""File-system faults made for real (a full tmpfs, a read-only bind mount, a real kill): each ends a command in one
line naming the path, the operation and what to do, nothing is left half-written, and what needs no write (a
complete run's rerun) still works. The mounts need root; where mounting is not permitted the test is skipped."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import yaml

from varshift import training
from varshift.analysis.cli import main as analysis_main
from varshift.audit.cli import main as audit_main
from varshift.data import load_dataset
from varshift.errors import DatasetNotFoundError
from varshift.io import TMP_SUFFIX, FileFault, atomic_write_text

DEADLINE_S = 120  # a hang guard for the subprocesses, not a measurement
BASE = ("scale=smoke", "dataset.download=false", "trainer.device=cpu", "trainer.threads=1")


def mount(*args: str | Path) -> bool:
    return subprocess.run(["mount", *map(str, args)], capture_output=True).returncode == 0


@pytest.fixture
def read_only(tmp_path):
    """(source, view): a folder, and a read-only bind mount of it; what is put in the source is seen read-only."""
    source, view = tmp_path / "source", tmp_path / "read_only"
    source.mkdir()
    view.mkdir()
    if not mount("--bind", source, view):
        pytest.skip("mounting is not permitted here")
    try:
        if not mount("-o", "remount,ro,bind", view):
            pytest.skip("a read-only remount is not permitted here")
        yield source, view
    finally:
        subprocess.run(["umount", str(view)], check=True)


@pytest.fixture
def small_disk(tmp_path):
    """A 200 KiB tmpfs: room for a run's config.yaml, not for its first checkpoint."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if not mount("-t", "tmpfs", "-o", "size=200k", "tmpfs", disk):
        pytest.skip("mounting is not permitted here")
    yield disk
    subprocess.run(["umount", str(disk)], check=True)


def train_cli(fashion_root: Path, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "HYDRA_FULL_ERROR": "0", "VARSHIFT_DEBUG": "0"}
    return subprocess.run([sys.executable, "-m", "varshift.cli", *BASE, f"dataset.root={fashion_root}",
                           "trainer.progress=false", *args], capture_output=True, text=True, env=env, cwd=cwd,
                          timeout=DEADLINE_S)


def one_line(stderr: str, prog: str = "varshift-train") -> str:
    """The single line of ``stderr``, which must be ``<prog>: error: ...``."""
    assert stderr.startswith(f"{prog}: error: ") and stderr.count("\n") == 1, stderr
    return stderr


def temporary_files(folder: Path) -> list[Path]:
    return sorted(folder.rglob(f".*{TMP_SUFFIX}"))


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, fashion_root) -> Path:
    """One complete smoke run, trained here (its figures and tables need real records)."""
    from hydra import compose, initialize_config_module

    from varshift.config import register_schema, to_plain, validate
    from varshift.paths import CONF_PACKAGE

    register_schema()
    with initialize_config_module(config_module=CONF_PACKAGE, version_base="1.3"):
        cfg = compose("config", overrides=[*BASE, f"dataset.root={fashion_root}", "trainer.epochs=1",
                                           "trainer.progress=false"])
    run_dir = tmp_path_factory.mktemp("finished") / "run"
    training.run(validate(to_plain(cfg)), run_dir)
    return run_dir


# -- a read-only file system --

def test_a_complete_run_is_skipped_on_a_read_only_file_system_and_a_new_one_is_one_line(make_config, fashion_root,
                                                                                        read_only):
    source, view = read_only
    done = source / "done"
    done.mkdir()
    (done / "config.yaml").write_text(yaml.safe_dump(make_config("trainer.threads=1", "trainer.epochs=1")))
    (done / "summary.json").write_text(json.dumps({"status": "complete", "test_acc": 50.0, "mean_shift": 1.5}))

    rerun = train_cli(fashion_root, "trainer.epochs=1", f"hydra.run.dir={view / 'done'}")
    assert rerun.returncode == 0 and "is complete; skipping it" in rerun.stdout, rerun.stderr

    # the current folder read-only: the run directory (outputs/...) cannot be created
    here = train_cli(fashion_root, cwd=view)
    assert here.returncode == 2
    assert "outputs: Read-only file system" in one_line(here.stderr) and "writable" in here.stderr

    # a new run in an existing read-only folder: its lock file cannot be created (the same one-line report)
    with pytest.raises(FileFault) as caught:
        training.run(make_config(), view)
    assert str(caught.value) == (f"cannot create the lock file {view / '.lock'}: Read-only file system; choose a "
                                 "folder on a writable file system")


def test_the_atomic_write_on_a_read_only_file_system_names_the_write_not_its_cleanup(read_only):
    source, view = read_only
    (source / "summary.json").write_text("previous\n")
    with pytest.raises(FileFault) as caught:
        atomic_write_text(view / "summary.json", "new\n")
    assert caught.value.errno == errno.EROFS
    assert str(caught.value).startswith(f"cannot write {view / 'summary.json'}: Read-only file system; its previous "
                                        "version is kept")
    assert (source / "summary.json").read_text() == "previous\n"


def test_analysis_and_audit_into_a_read_only_folder_or_onto_a_file_are_one_line(finished_run, read_only, tmp_path,
                                                                              capsys, monkeypatch):
    source, view = read_only
    shutil.copytree(finished_run, source / "run")

    def analysis_error(*argv: str) -> str:
        with pytest.raises(SystemExit) as caught:
            analysis_main(list(argv))
        assert caught.value.code == 2
        return capsys.readouterr().err.splitlines()[-1]

    assert analysis_error("report", str(view / "run")).startswith(
        f"varshift-analysis report: error: cannot write {view / 'run' / 'report_accuracy.png'}: Read-only file system")
    assert analysis_error("table3", str(finished_run), "--out", str(view / "tables")).startswith(
        f"varshift-analysis table3: error: cannot create the folder {view / 'tables'}: Read-only file system")
    a_file = tmp_path / "results.txt"
    a_file.write_text("not a folder\n")
    assert analysis_error("table3", str(finished_run), "--out", str(a_file)).startswith(
        f"varshift-analysis table3: error: cannot create the folder {a_file}: File exists; something else is already "
        "there: move it away or choose another path")

    # what the analysis skips is a warning of one line, not Python's two lines of source (shown as Python shows a
    # warning outside pytest, which records them)
    monkeypatch.setattr(warnings, "showwarning", lambda message, category, filename, lineno, file=None, line=None:
                        sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line)))
    (source / "gone").symlink_to(tmp_path / "deleted")
    assert analysis_main(["table3", str(source), "--out", str(tmp_path / "tables")]) == 0
    assert capsys.readouterr().err == (f"varshift-analysis table3: warning: skipping {source / 'gone'}: it is a broken "
                                       f"link (to {tmp_path / 'deleted'})\n")

    assert audit_main(["small_cnn:dataset=fashion_mnist", "--out", str(view / "audit")]) == 2
    err = capsys.readouterr().err
    assert err == (f"varshift-audit: error: cannot create the folder {view / 'audit'}: Read-only file system; choose a "
                   "folder on a writable file system\n")


# -- a full disk --

def test_a_full_disk_ends_the_run_in_one_line_and_leaves_no_temporary_file(fashion_root, small_disk):
    result = train_cli(fashion_root, "trainer.epochs=1", f"hydra.run.dir={small_disk / 'run'}")
    assert result.returncode == 2
    assert (f"no space left on {small_disk / 'run'} (No space left on device) while writing checkpoint.pt; free space "
            "there") in one_line(result.stderr)
    assert yaml.safe_load((small_disk / "run" / "config.yaml").read_text())["trainer"]["epochs"] == 1
    assert temporary_files(small_disk) == []


# -- a killed analysis --

SLOW_SAVEFIG = """
import sys, time
import matplotlib.figure
from varshift.analysis.cli import main

def savefig(self, fname, *args, **kwargs):
    print("writing", fname, flush=True)
    time.sleep(60)

matplotlib.figure.Figure.savefig = savefig
sys.exit(main(sys.argv[1:]))
"""


def test_an_analysis_killed_while_writing_leaves_no_temporary_file(finished_run, tmp_path):
    run_dir = shutil.copytree(finished_run, tmp_path / "run")
    process = subprocess.Popen([sys.executable, "-c", SLOW_SAVEFIG, "report", str(run_dir)], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()
        assert line.startswith("writing ") and TMP_SUFFIX in line, line + process.stderr.read()
        assert temporary_files(run_dir)  # the write under way
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=DEADLINE_S)
    finally:
        process.kill()
    assert process.returncode == 130
    assert stderr.endswith("varshift-analysis report: interrupted; the files written are complete, and none is left "
                           "half-written\n"), stderr
    assert temporary_files(run_dir) == []


# -- the data root --

def test_a_data_root_that_is_a_file_is_called_a_file(tmp_path, monkeypatch):
    a_file = tmp_path / "fashion.tar"
    a_file.write_bytes(b"not a folder")
    monkeypatch.setenv("VARSHIFT_DATA", str(a_file))
    with pytest.raises(DatasetNotFoundError, match=rf"the data root {a_file} \(chosen by dataset.root or "
                                                   r"VARSHIFT_DATA\) is a file, not a folder"):
        load_dataset("fashion_mnist", a_file)
