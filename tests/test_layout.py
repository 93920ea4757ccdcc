"""The shape of the project: conf/ installed as varshift.conf (editable and from a wheel), nothing installed under
a generic name, every default in one home, one home per check, and command lines that answer without torch."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from importlib.resources import files
from pathlib import Path

import pytest
import torch
from omegaconf import MISSING, OmegaConf

from varshift import theory
from varshift.checks import flag, fraction, one_of, whole_number
from varshift.config.schema import Config, schema_fields
from varshift.data import DeviceLoader
from varshift.models import build_model
from varshift.paths import REPO_DIR, conf_file


def run_python(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=600,
                            env={**os.environ, **(env or {})})
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return result


def smoke_run(fashion_root: Path, run_dir: Path) -> list[str]:
    return ["scale=smoke", "trainer.epochs=1", "trainer.threads=1", f"dataset.root={fashion_root}",
            "dataset.download=false", f"hydra.run.dir={run_dir}"]


# -- conf/ is the package varshift.conf --

def test_the_editable_install_reads_the_checkouts_conf_folder_so_edits_take_effect_at_once():
    assert Path(str(files("varshift.conf"))).resolve() == (REPO_DIR / "conf").resolve()
    assert not (REPO_DIR / "varshift" / "conf").exists()


def test_the_installed_packages_are_the_varshift_packages_on_disk():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11 and later
    pyproject = tomllib.loads((REPO_DIR / "pyproject.toml").read_text())
    packages = pyproject["tool"]["setuptools"]["packages"]
    on_disk = sorted("varshift" + ("." + ".".join(p.parent.relative_to(REPO_DIR / "varshift").parts)
                                   if p.parent != REPO_DIR / "varshift" else "")
                     for p in (REPO_DIR / "varshift").rglob("__init__.py"))
    assert sorted(packages) == sorted([*on_disk, "varshift.conf"])
    assert all(name == "varshift" or name.startswith("varshift.") for name in packages)
    assert pyproject["tool"]["setuptools"]["package-dir"] == {"varshift.conf": "conf"}


@pytest.fixture(scope="module")
def wheel_install(tmp_path_factory) -> Path:
    """varshift's wheel installed into a folder of its own, outside the checkout (its dependencies are this
    environment's)."""
    root = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", str(REPO_DIR),
                    "-w", str(root / "dist")], check=True, capture_output=True, timeout=300)
    wheel = next((root / "dist").glob("varshift-*.whl"))
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(root / "site"),
                    str(wheel)], check=True, capture_output=True, timeout=300)
    return root / "site"


def test_the_wheel_installs_only_varshift_with_its_configuration_and_data(wheel_install):
    assert sorted(p.name for p in wheel_install.iterdir() if not p.name.endswith(".dist-info")) == ["bin", "varshift"]
    assert (wheel_install / "varshift" / "conf" / "experiment" / "fig4.yaml").is_file()
    assert (wheel_install / "varshift" / "analysis" / "paper_numbers.csv").is_file()


def test_a_wheel_installed_outside_the_checkout_composes_and_runs_a_smoke_run(wheel_install, fashion_root, tmp_path):
    env = {"PYTHONPATH": str(wheel_install)}
    where = run_python("-c", "import varshift, varshift.conf; print(varshift.__file__); print(varshift.conf.__file__)",
                       cwd=tmp_path, env=env)
    assert all(line.startswith(str(wheel_install)) for line in where.stdout.split())
    run_python(str(wheel_install / "bin" / "varshift-train"), *smoke_run(fashion_root, tmp_path / "run"),
               cwd=tmp_path, env=env)
    assert (tmp_path / "run" / "summary.json").is_file() and (tmp_path / "run" / "report.md").is_file()
    listed = run_python(str(wheel_install / "bin" / "varshift-analysis"), "fig4", str(tmp_path / "run"), "--out",
                        str(tmp_path / "out"), cwd=tmp_path, env=env)
    assert "fig4: 1 runs" in listed.stdout


def test_a_users_own_analysis_module_does_not_shadow_varshifts(fashion_root, tmp_path):
    (tmp_path / "analysis.py").write_text("raise SystemExit('the user module was imported')\n")
    run_python("-m", "varshift.cli", *smoke_run(fashion_root, tmp_path / "run"), cwd=tmp_path)
    assert (tmp_path / "run" / "report.md").is_file()


# -- one home per default --

def default_options() -> dict[str, str]:
    """The option each group of conf/config.yaml's defaults list picks when nothing is overridden; the recipe is the
    default model's."""
    chosen = {}
    for entry in OmegaConf.to_container(OmegaConf.create(conf_file("config.yaml").read_text()))["defaults"]:
        if not isinstance(entry, dict):
            continue
        for group, option in entry.items():
            if isinstance(option, str) and "/" not in group and not group.startswith("override"):
                chosen[group] = option
    chosen["recipe"] = chosen["model"]
    return chosen


def schema_default(path: list[str]):
    """The schema's default at the dotted ``path`` (MISSING where the schema leaves it to a group)."""
    schema = Config
    for key in path[:-1]:
        schema = schema_fields(schema)[key]
        if not dataclasses.is_dataclass(schema):  # inside a free-form dict (model.kwargs): no schema default
            return MISSING
    field = {f.name: f for f in dataclasses.fields(schema)}[path[-1]]
    if field.default is not dataclasses.MISSING:
        value = field.default
    elif field.default_factory is not dataclasses.MISSING:
        value = field.default_factory()
    else:
        return MISSING
    return value.value if hasattr(value, "value") else value


def leaves(tree, prefix=()) -> list[tuple[list[str], object]]:
    if isinstance(tree, dict):
        return [leaf for key, value in tree.items() for leaf in leaves(value, (*prefix, key))]
    return [(list(prefix), tree)]


def test_no_default_option_gives_a_key_another_default_than_the_schema():
    conflicts = []
    sources = {"config.yaml": ((), conf_file("config.yaml"))}
    for group, option in default_options().items():
        sources[f"{group}/{option}.yaml"] = ((group,), conf_file(group, option))
    for name, (package, path) in sources.items():
        text = path.read_text()
        tree = OmegaConf.to_container(OmegaConf.create(text))
        tree.pop("defaults", None)
        tree.pop("hydra", None)
        prefix = () if "@package _global_" in text else package
        for keys, value in leaves(tree, prefix):
            try:
                default = schema_default(keys)
            except KeyError:
                continue
            if default is not MISSING and default != value:
                conflicts.append(f"{name}: {'.'.join(keys)}={value!r}, schema {default!r}")
    assert default_options()["dropout"] == "bernoulli" and "scale" in default_options()
    assert not conflicts


def test_no_two_configuration_files_are_the_same():
    texts = {}
    for path in sorted(Path(str(files("varshift.conf"))).rglob("*.yaml")):
        texts.setdefault(path.read_text(), []).append(path.name)
    assert [names for names in texts.values() if len(names) > 1] == []


# -- one set of checks; a rate checked once --

@pytest.mark.parametrize("check,value,message", [
    (lambda v: whole_number("batch_size", v), 0, "batch_size=0 is not allowed: a whole number >= 1"),
    (lambda v: whole_number("seed", v, 0), True, "seed=True is not allowed: a whole number >= 0"),
    (lambda v: fraction("compression", v), 1.5, "compression=1.5 is not allowed: a number in (0, 1]"),
    (lambda v: flag("hidden_bn", v), "yes", "hidden_bn='yes' is not allowed: true or false"),
    (lambda v: one_of("block", v, ("basic", "bottleneck")), "wide", "block='wide' is not allowed: one of basic"),
])
def test_every_check_names_the_key_the_value_and_what_is_allowed(check, value, message):
    with pytest.raises(ValueError) as error:
        check(value)
    assert str(error.value).startswith(message)


def test_a_dropout_rate_is_checked_once_per_layer_built_and_never_in_a_forward_pass(monkeypatch):
    calls = []
    check_rate = theory.check_rate
    monkeypatch.setattr(theory, "check_rate", lambda kind, rate: calls.append(rate) or check_rate(kind, rate))
    model = build_model("small_cnn", in_channels=1, dropout={"kind": "bernoulli", "rate": 0.3}, position="before_bn")
    layers = sum(module.__class__.__name__ == "BernoulliDropout" for module in model.modules())
    assert layers == 5 and calls == [0.3] * layers
    model.train()(torch.randn(4, 1, 28, 28))
    assert len(calls) == layers


def test_the_loader_gives_batches_in_the_memory_format_it_is_asked_for():
    images, labels = torch.randint(0, 256, (6, 3, 4, 4), dtype=torch.uint8), torch.arange(6)
    common = dict(batch_size=3, mean=[0.5] * 3, std=[0.5] * 3, crop_padding=1, flip=True)
    plain = list(DeviceLoader(images, labels, **common))
    last = list(DeviceLoader(images, labels, **common, memory_format=torch.channels_last))
    for (x, _), (y, _) in zip(plain, last, strict=True):
        assert x.is_contiguous() and y.is_contiguous(memory_format=torch.channels_last)
        assert not y.is_contiguous() and torch.equal(x, y)


# -- command lines answer without torch or scipy.stats (seconds to import on a 2-core machine) --

@pytest.mark.parametrize("command", [
    "from varshift.cli import main; sys.argv = ['varshift-train', '--help']",
    "from varshift.cli import main; sys.argv = ['varshift-train', '--presets']",
    "from varshift.analysis.cli import main; sys.argv = ['varshift-analysis', '--help']",
])
def test_help_and_presets_answer_without_importing_torch_or_scipy_stats(command, tmp_path):
    code = (f"import sys; {command}\ntry:\n    main()\nexcept SystemExit:\n    pass\n"
            "print('HEAVY', sorted(m for m in sys.modules if m.split('.')[0] == 'torch' or m == 'scipy.stats'))")
    result = run_python("-c", code, cwd=tmp_path)
    assert "usage" in result.stdout.lower() or "fig4" in result.stdout
    assert result.stdout.strip().endswith("HEAVY []")


def test_the_schema_imports_no_torch(tmp_path):
    result = run_python("-c", "import sys, varshift.config.schema, varshift.cli; "
                              "print(any(m.split('.')[0] == 'torch' for m in sys.modules))", cwd=tmp_path)
    assert result.stdout.strip() == "False"


def test_make_install_says_what_each_step_installs_before_it_runs(tmp_path):
    """pip runs quietly for minutes: the Makefile announces each step. Run for real, with a stand-in python that
    creates the venv's python as a copy of itself and installs nothing."""
    stand_in = tmp_path / "python3"
    stand_in.write_text('#!/bin/sh\n[ "$1 $2" = "-m venv" ] && mkdir -p "$3/bin" && cp "$0" "$3/bin/python"\nexit 0\n')
    stand_in.chmod(0o755)
    venv = tmp_path / "venv"
    result = subprocess.run(["make", "--no-print-directory", "install", f"VENV={venv}", f"PYTHON={stand_in}",
                             "TORCH=torch==2.14.1 torchvision==0.29.1"],
                            cwd=REPO_DIR, capture_output=True, text=True, check=True)
    lines = result.stdout.splitlines()
    pip_torch = lines.index(f"{venv}/bin/python -m pip install --quiet torch==2.14.1 torchvision==0.29.1")
    assert "installing torch==2.14.1 torchvision==0.29.1" in lines[pip_torch - 1]
    assert "a few minutes" in lines[pip_torch - 1]
    assert "installing varshift (editable)" in lines[pip_torch + 1]
    assert lines[-1] == f"varshift is installed in {venv}: {venv}/bin/varshift-train --help to start"
