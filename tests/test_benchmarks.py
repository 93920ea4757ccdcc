"""benchmarks/throughput.py: a CPU smoke run at tiny sizes, its JSON, and its argument checks."""

from __future__ import annotations

import importlib
import json
import math
from pathlib import Path

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
MODELS = ["preresnet110", "densenet_bc100"]


@pytest.fixture(scope="module")
def throughput():
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(BENCHMARKS))  # the script imports its sibling loader_throughput
        yield importlib.import_module("throughput")


@pytest.fixture(scope="module")
def smoke_run(throughput, tmp_path_factory):
    """One tiny CPU run of two networks with the bf16 accuracy check: (returned report, JSON file)."""
    path = tmp_path_factory.mktemp("bench") / "throughput.json"
    threads = torch.get_num_threads()
    try:
        report = throughput.main(["--tiny", "--device", "cpu", "--models", *MODELS, "--bf16-accuracy",
                                  "--bf16-epochs", "1", "--json", str(path)])
    finally:
        torch.set_num_threads(threads)  # --tiny runs on one thread; later tests keep their own setting
    return report, json.loads(path.read_text())


def test_the_benchmark_times_the_loaders_a_run_gets(throughput, make_config, fashion_root):
    from varshift.data import build_loaders, dataset_info, load_dataset

    # 1,000 training images in batches of 333 leave a last batch of one, which BN-training passes drop
    cfg = make_config("trainer.batch_size=333", "trainer.test_batch_size=100", "seed=3")
    splits = load_dataset("fashion_mnist", fashion_root)

    def as_arrays(images, labels):  # the benchmark's images are [N, H, W, C] arrays
        return images.permute(0, 2, 3, 1).numpy(), labels.numpy()

    benchmark = throughput.device_loaders(as_arrays(splits.train_images, splits.train_labels),
                                          as_arrays(splits.test_images, splits.test_labels),
                                          dataset_info("fashion_mnist"), cfg, torch.device("cpu"))
    run = build_loaders("fashion_mnist", fashion_root, batch_size=333, test_batch_size=100, seed=3)
    for name in ("train", "test", "train_eval"):
        ours, theirs = getattr(benchmark, name), getattr(run, name)
        ours.set_epoch(2)
        theirs.set_epoch(2)
        batches = list(zip(ours, theirs, strict=True))
        assert len(batches) == len(theirs) > 0, name
        for (x, y), (x_run, y_run) in batches:
            assert torch.equal(x, x_run) and torch.equal(y, y_run), name


def positive_finite(value) -> bool:
    return isinstance(value, float) and math.isfinite(value) and value > 0


def test_the_json_file_holds_the_returned_report(smoke_run):
    report, written = smoke_run
    assert written == json.loads(json.dumps(report))
    assert written["device"] == "cpu" and written["tiny"] is True
    assert [row["model"] for row in written["results"]] == MODELS


def test_each_network_has_positive_rates_and_consistent_ratios(smoke_run, throughput):
    _, written = smoke_run
    images, probe_images = written["images"], written["probe_images"]
    assert probe_images == images  # by default the probe passes the whole training set, the paper's way
    for row in written["results"]:
        assert throughput.TINY_KWARGS[row["model"]].items() <= row["kwargs"].items()
        for key in ("a_images_per_s", "b_images_per_s", "ratio", "a_epoch_s", "b_epoch_s", "probe_s",
                    "recal_s", "probe_pct", "recal_pct"):
            assert positive_finite(row[key]), (row["model"], key, row[key])
        assert row["ratio"] == pytest.approx(row["a_images_per_s"] / row["b_images_per_s"], rel=1e-12)
        assert row["a_images_per_s"] == pytest.approx(images / row["a_epoch_s"], rel=1e-12)
        assert row["b_images_per_s"] == pytest.approx(images / row["b_epoch_s"], rel=1e-12)
        training_s = row["a_epoch_s"] * probe_images / images
        assert row["probe_pct"] == pytest.approx(100 * row["probe_s"] / training_s, rel=1e-12)
        assert row["recal_pct"] == pytest.approx(100 * row["recal_s"] / training_s, rel=1e-12)
        assert row["a_peak_mib"] is None and row["b_peak_mib"] is None  # no GPU memory on a CPU
        assert row["bf16"] is False and row["channels_last"] is False  # "auto" switches them on for CUDA only


def test_the_bf16_accuracy_check_reports_both_runs(smoke_run):
    _, written = smoke_run
    check = written["bf16_accuracy"]
    assert check["model"] == MODELS[0] and check["epochs"] == 1
    for key in ("fp32_test_acc", "bf16_test_acc"):
        assert 0.0 <= check[key] <= 100.0
    assert check["difference"] == pytest.approx(check["bf16_test_acc"] - check["fp32_test_acc"])
    assert check["equal_within_noise"] == (abs(check["difference"]) <= check["tolerance"])
    assert check["best_possible_acc"] == pytest.approx(77.5)


@pytest.mark.parametrize("argv, message", [
    (["--images", "17", "--batch-size", "8"], "last batch of 1 image"),
    (["--epochs", "0"], "--epochs must be >= 1"),
    (["--probe-batches", "0"], "--probe-batches must be >= 1"),
    (["--models", "vgg16"], "invalid choice: 'vgg16'"),
])
def test_bad_arguments_are_refused_with_a_message(throughput, capsys, argv, message):
    with pytest.raises(SystemExit):
        throughput.parse_args(["--tiny", *argv])
    assert message in capsys.readouterr().err


def benchmark_module(name: str):
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(BENCHMARKS))  # the scripts import their sibling loader_throughput
        return importlib.import_module(name)


def test_the_imagenet_loader_benchmark_reports_both_loaders_on_the_same_jpegs(tmp_path):
    path = tmp_path / "loader.json"
    report = benchmark_module("imagenet_loader").main(["--images", "16", "--width", "48", "--height", "40",
                                                       "--batch-size", "8", "--workers", "0", "--json", str(path)])
    assert json.loads(path.read_text()) == report
    for view in ("training", "test"):
        rates = report[view]
        assert rates["varshift_images_per_s"] > 0 and rates["imagefolder_images_per_s"] > 0
        assert rates["ratio"] == pytest.approx(rates["varshift_images_per_s"] / rates["imagefolder_images_per_s"])


def test_the_gpu_hours_of_table5_add_up_over_its_runs(capsys):
    rows = benchmark_module("table5_gpu_hours").main(["--epochs", "90", "--seeds", "5"])
    assert [row["network"] for row in rows] == ["resnet200", "resnext101_64x4d", "senet154"]
    for row in rows:
        assert row["runs"] == 10 and row["GPU-hours"] == pytest.approx(10 * row["GPU-hours/run"])
    assert f"Table 5: {sum(row['GPU-hours'] for row in rows):,.0f} GPU-hours" in capsys.readouterr().out
