"""Training images per second of varshift's training path against a standard PyTorch loop, per network.

For each of the paper's networks, on CIFAR-shaped random uint8 images, in one process:

(A) varshift: a :class:`varshift.training.Trainer` built from the composed config (``conf/``, as
    ``varshift-train`` composes it, at ``scale=paper``) with injected loaders: the images live on the
    device and are cropped (padding 4), flipped and normalised there; bf16 autocast and channels_last
    follow the config (``auto``: on for CUDA), SGD is fused on CUDA, ``torch.compile`` with ``--compile``.
    The timed quantity is ``trainer.train_epoch()`` after one untimed warm-up epoch.
(B) the usual script (bearpaw's ``cifar.py``): a dataset serving the same images as PIL images through
    ``RandomCrop(32, padding=4)``, ``RandomHorizontalFlip``, ``ToTensor``, ``Normalize``; a shuffled
    ``DataLoader`` with ``--workers`` processes (pinned memory on CUDA); the same network in fp32 (with
    cuDNN's default TF32 convolutions on GPUs that have them), eager; plain SGD; ``loss.item()`` every
    step. Also timed over an epoch after an untimed warm-up epoch. cuDNN benchmark mode is on for both,
    as the Trainer and bearpaw's script both set it.

Both networks carry the config's dropout (the paper's Dropout-(a): Bernoulli 0.5 in front of each
block's last BN; ``--position`` moves or removes it).

Probe and recalibration overhead: the seconds of ``measure_variance_shift`` (two forward passes, eval
and train mode, as ``Trainer.measure_shift`` runs it) and of ``recalibrate_bn`` over the probe images,
divided by the seconds training takes for as many images (the timed A epoch, scaled by probe images /
training images), in percent. The probe images are ``--probe-batches`` batches of ``--test-batch-size``
from the augmented training set; by default all of them: the paper's protocol, which passes the whole
training set again, so the percentage is then the cost of one probe as a fraction of one epoch.

Peak GPU memory is ``torch.cuda.max_memory_allocated`` over the timed epochs of each path.

``--bf16-accuracy`` also trains the first network twice with ``Trainer.run`` (fp32, then bf16 autocast;
same seed, same data) on random but learnable images (a class colour under noise, a quarter of the
labels replaced at random, so the best possible accuracy is 77.5%) and reports both test accuracies
and whether they differ by less than twice the sampling noise of the difference on the test set.

    python benchmarks/throughput.py --json results/throughput.json            # the four networks, GPU
    python benchmarks/throughput.py --tiny --device cpu                       # CPU smoke test, seconds
"""

from __future__ import annotations

import argparse
import gc
import math
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_module
from loader_throughput import PilImages  # benchmarks/ is on sys.path when this script runs
from torch.utils.data import DataLoader
from torchvision import transforms

from varshift.bn import recalibrate_bn
from varshift.config import register_schema, to_plain, validate
from varshift.data import DatasetInfo, Loaders, loaders_over
from varshift.io import atomic_write_json
from varshift.models import build_model
from varshift.paths import CONF_PACKAGE
from varshift.probes import measure_variance_shift
from varshift.training import Trainer
from varshift.training.loop import autocast
from varshift.training.setup import memory_format, resolve_device

# The paper's networks and, for --tiny, one block per stage and narrow layers of the same families.
TINY_KWARGS = {
    "preresnet110": {"depth": 11},
    "resnext29_8x64d": {"depth": 11, "cardinality": 2, "base_width": 4, "widen_factor": 1},
    "wrn28_10": {"depth": 10, "widen_factor": 1},
    "densenet_bc100": {"depth": 10},
}
PAPER_MODELS = tuple(TINY_KWARGS)
POSITIONS = ("none", "before_bn", "before_conv", "head")
# --tiny runs on a shared CI CPU, where more than one torch thread spins waiting for descheduled peers
FULL_SIZES = {"images": 10000, "batch_size": 128, "test_batch_size": 500, "workers": 4, "threads": None}
TINY_SIZES = {"images": 32, "batch_size": 8, "test_batch_size": 16, "workers": 1, "threads": 1}
LABEL_NOISE = 0.25  # fraction of labels replaced at random in the bf16 accuracy data
MIB = 2**20


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--models", nargs="+", default=list(PAPER_MODELS), choices=PAPER_MODELS,
                        metavar="NAME", help=f"networks to measure, any of {', '.join(PAPER_MODELS)} (all)")
    parser.add_argument("--images", type=int, help="training images per epoch (10000; 32 with --tiny)")
    parser.add_argument("--batch-size", type=int, help="training batch size (128; 8 with --tiny)")
    parser.add_argument("--test-batch-size", type=int,
                        help="batch size of the probe and recalibration passes (500; 16 with --tiny)")
    parser.add_argument("--epochs", type=int, default=1,
                        help="timed epochs per path, after one untimed warm-up epoch (1)")
    parser.add_argument("--probe-batches", type=int, default=None,
                        help="batches per probe and recalibration pass (all: the whole training set, "
                             "the paper's protocol)")
    parser.add_argument("--workers", type=int, help="DataLoader workers in path B (4; 1 with --tiny)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the forward pass of path A")
    parser.add_argument("--position", default="before_bn", choices=POSITIONS,
                        help="where the Bernoulli 0.5 dropout sits (before_bn, the paper's Dropout-(a))")
    parser.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda, cuda:N (auto)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (torch's default; 1 with --tiny)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the data, networks and loaders (0)")
    parser.add_argument("--tiny", action="store_true",
                        help="CPU smoke test: one block per stage, narrow layers, 32 images (seconds)")
    parser.add_argument("--bf16-accuracy", action="store_true",
                        help="also train the first network in fp32 and in bf16 on learnable data and compare "
                             "test accuracies")
    parser.add_argument("--bf16-epochs", type=int, default=3, help="epochs of each --bf16-accuracy run (3)")
    parser.add_argument("--json", default=None, metavar="PATH", help="also write the results to PATH")
    args = parser.parse_args(argv)
    defaults = TINY_SIZES if args.tiny else FULL_SIZES
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    for name, minimum in (("images", 2), ("batch_size", 2), ("test_batch_size", 2), ("epochs", 1),
                          ("bf16_epochs", 1), ("workers", 0), ("seed", 0)):
        if getattr(args, name) < minimum:
            parser.error(f"--{name.replace('_', '-')} must be >= {minimum}, got {getattr(args, name)}")
    for name in ("probe_batches", "threads"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    for name in ("batch_size", "test_batch_size"):  # BN needs 2 or more samples in every batch
        if args.images % getattr(args, name) == 1:
            option = f"--{name.replace('_', '-')} {getattr(args, name)}"
            parser.error(f"--images {args.images} leaves a last batch of 1 image with {option}; "
                         "choose sizes that leave no batch of 1")
    return args


def compose_config(args: argparse.Namespace, model: str, *overrides: str) -> dict:
    """The plain config ``varshift-train model=<model> dataset=cifar10 scale=paper`` would run with."""
    probe_batches = args.probe_batches or "null"
    sizes = [f"model.kwargs.{key}={value}" for key, value in TINY_KWARGS[model].items()] if args.tiny else []
    cfg = compose("config", overrides=[
        f"model={model}", "dataset=cifar10", "scale=paper", f"dropout.position={args.position}",
        f"seed={args.seed}", f"trainer.device={args.device}", f"trainer.batch_size={args.batch_size}",
        f"trainer.test_batch_size={args.test_batch_size}", f"trainer.compile={str(args.compile).lower()}",
        f"trainer.threads={args.threads or 'null'}", "trainer.progress=false",
        f"probe.batches={probe_batches}", f"probe.recalibrate_batches={probe_batches}",
        *sizes, *overrides])
    return validate(to_plain(cfg))


def random_images(count: int, info: DatasetInfo, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """CIFAR-shaped uint8 images, HWC (as torchvision's CIFAR10 holds them), and random labels."""
    images = rng.integers(0, 256, (count, info.size, info.size, info.channels), dtype=np.uint8)
    return images, rng.integers(0, info.num_classes, count)


def learnable_images(count: int, colours: np.ndarray, size: int,
                     rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``size`` x ``size`` images whose class is a colour (``colours[label]``) half-mixed with noise; a
    ``LABEL_NOISE`` fraction of the labels is then redrawn at random, so no model reaches 100%."""
    num_classes, channels = colours.shape
    labels = rng.integers(0, num_classes, count)
    noise = rng.integers(0, 256, (count, size, size, channels))
    images = ((noise + colours[labels][:, None, None, :]) // 2).astype(np.uint8)
    redrawn = rng.random(count) < LABEL_NOISE
    labels[redrawn] = rng.integers(0, num_classes, int(redrawn.sum()))
    return images, labels


def as_tensors(images_hwc: np.ndarray, labels: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.from_numpy(images_hwc).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(labels).long()


def device_loaders(train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray],
                   info: DatasetInfo, cfg: dict, device: torch.device) -> Loaders:
    """The loaders ``build_loaders`` gives a run, over in-memory images instead of a dataset on disk."""
    return loaders_over(info, as_tensors(*train), as_tensors(*test), batch_size=cfg["trainer"]["batch_size"],
                        test_batch_size=cfg["trainer"]["test_batch_size"], device=device, seed=cfg["seed"],
                        memory_format=memory_format(cfg["trainer"], device))


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / MIB if device.type == "cuda" else None


def release_memory(device: torch.device) -> None:
    """Give the device memory of the last network back before the next one is measured."""
    if device.type == "cuda":
        gc.collect()  # whatever only a reference cycle still keeps alive
        torch.cuda.empty_cache()


def timed(run: Callable[[], object], device: torch.device) -> float:
    """Seconds ``run()`` takes until the device has finished its work."""
    synchronize(device)
    start = time.perf_counter()
    run()
    synchronize(device)
    return time.perf_counter() - start


def varshift_epochs(trainer: Trainer, epochs: int) -> tuple[float, float | None]:
    """(A) Seconds per epoch of ``trainer.train_epoch()`` after a warm-up epoch, and peak MiB."""
    device = trainer.device

    def next_epoch() -> None:
        trainer.train_epoch()
        trainer.epoch += 1  # a new order and augmentation each epoch, as in a run

    next_epoch()
    reset_peak_memory(device)
    seconds = timed(lambda: [next_epoch() for _ in range(epochs)], device)
    return seconds / epochs, peak_memory_mib(device)


def standard_epochs(cfg: dict, info: DatasetInfo, train: tuple[np.ndarray, np.ndarray], workers: int,
                    epochs: int, device: torch.device) -> tuple[float, float | None]:
    """(B) Seconds per epoch of the usual fp32 eager loop over a torchvision DataLoader, and peak MiB."""
    transform = transforms.Compose([
        transforms.RandomCrop(info.size, padding=info.crop_padding),
        transforms.RandomHorizontalFlip(),
        transforms.ToTensor(),
        transforms.Normalize(info.mean, info.std),
    ])
    loader = DataLoader(PilImages(*train, transform), batch_size=cfg["trainer"]["batch_size"], shuffle=True,
                        num_workers=workers, pin_memory=device.type == "cuda")
    model = build_model(cfg["model"]["name"], num_classes=info.num_classes, in_channels=info.channels,
                        dropout=cfg["dropout"], position=cfg["dropout"]["position"],
                        **cfg["model"]["kwargs"]).to(device)
    optim = cfg["optim"]
    optimizer = torch.optim.SGD(model.parameters(), lr=optim["lr"], momentum=optim["momentum"],
                                nesterov=optim["nesterov"], weight_decay=optim["weight_decay"])

    def epoch() -> float:
        model.train()
        losses = []
        for x, y in loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        return sum(losses) / len(losses)

    epoch()
    reset_peak_memory(device)
    seconds = timed(lambda: [epoch() for _ in range(epochs)], device)
    return seconds / epochs, peak_memory_mib(device)


def pass_seconds(run: Callable[[int | None], object], max_batches: int | None, device: torch.device) -> float:
    """Seconds of ``run(max_batches)`` after an untimed one-batch call (kernel choice for the new shapes)."""
    run(1)
    return timed(lambda: run(max_batches), device)


def probe_seconds(trainer: Trainer) -> tuple[float, float]:
    """Seconds of one variance probe and of one BN recalibration, over the batches the config says."""
    probe = trainer.cfg["probe"]

    def as_in_training(measure: Callable, batches: int | None):
        """The pass as the trainer runs it: its precision, its memory format, the augmented training data."""
        with autocast(trainer.model, trainer.bf16):
            return measure(trainer.model, trainer.training_pass(), max_batches=batches)

    measure = pass_seconds(lambda n: as_in_training(measure_variance_shift, n), probe["batches"], trainer.device)
    recalibrate = pass_seconds(lambda n: as_in_training(recalibrate_bn, n), probe["recalibrate_batches"],
                               trainer.device)
    return measure, recalibrate


def benchmark_model(cfg: dict, args: argparse.Namespace, device: torch.device, run_dir: Path) -> dict:
    info = DatasetInfo.from_config(cfg["dataset"])
    train = random_images(args.images, info, np.random.default_rng(args.seed))
    trainer = Trainer(cfg, run_dir, loaders=device_loaders(train, train, info, cfg, device))
    epoch_s, a_peak = varshift_epochs(trainer, args.epochs)
    probe_s, recal_s = probe_seconds(trainer)
    precision = {"bf16": trainer.bf16, "channels_last": trainer.channels_last}
    del trainer
    release_memory(device)
    b_epoch_s, b_peak = standard_epochs(cfg, info, train, args.workers, args.epochs, device)
    release_memory(device)
    a_rate, b_rate = args.images / epoch_s, args.images / b_epoch_s
    probe_images = probe_image_count(args)
    training_s = epoch_s * probe_images / args.images  # training time for as many images as a probe pass
    return {
        "model": cfg["model"]["name"], "kwargs": cfg["model"]["kwargs"], **precision,
        "a_images_per_s": a_rate, "b_images_per_s": b_rate, "ratio": a_rate / b_rate,
        "a_peak_mib": a_peak, "b_peak_mib": b_peak, "a_epoch_s": epoch_s, "b_epoch_s": b_epoch_s,
        "probe_s": probe_s, "recal_s": recal_s,
        "probe_pct": 100.0 * probe_s / training_s, "recal_pct": 100.0 * recal_s / training_s,
    }


def probe_image_count(args: argparse.Namespace) -> int:
    """Images in one probe (or recalibration) pass: ``--probe-batches`` batches, or the training set."""
    if args.probe_batches is None:
        return args.images
    return min(args.images, args.probe_batches * args.test_batch_size)


def bf16_accuracy(args: argparse.Namespace, device: torch.device, run_dir: Path) -> dict:
    """Train the first network in fp32 and in bf16 on the same learnable data; compare test accuracies."""
    model = args.models[0]
    short_run = (f"trainer.epochs={args.bf16_epochs}", "optim.schedule=constant",  # too short for milestones
                 "probe.batches=1", "probe.recalibrate=false")
    configs = {precision: compose_config(args, model, f"trainer.bf16={switch}", *short_run)
               for precision, switch in (("fp32", "off"), ("bf16", "on"))}
    info = DatasetInfo.from_config(configs["fp32"]["dataset"])
    rng = np.random.default_rng(args.seed)
    colours = rng.integers(0, 256, (info.num_classes, info.channels))
    train = learnable_images(args.images, colours, info.size, rng)
    test = learnable_images(max(args.images // 4, args.test_batch_size), colours, info.size, rng)
    accuracy = {}
    for precision, cfg in configs.items():
        trainer = Trainer(cfg, run_dir / precision, loaders=device_loaders(train, test, info, cfg, device))
        accuracy[precision] = trainer.run()["test_acc"]
        del trainer
        release_memory(device)
    test_images = len(test[1])
    p = (accuracy["fp32"] + accuracy["bf16"]) / 200.0
    # two standard deviations of the difference of two accuracies measured on test_images images each
    tolerance = 100.0 * 2.0 * math.sqrt(2.0 * p * (1.0 - p) / test_images)
    difference = accuracy["bf16"] - accuracy["fp32"]
    return {
        "model": model, "epochs": args.bf16_epochs, "train_images": args.images, "test_images": test_images,
        "best_possible_acc": 100.0 * (1.0 - LABEL_NOISE + LABEL_NOISE / info.num_classes),
        "fp32_test_acc": accuracy["fp32"], "bf16_test_acc": accuracy["bf16"], "difference": difference,
        "tolerance": tolerance, "equal_within_noise": abs(difference) <= tolerance,
    }


def format_mib(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.0f}"


def print_report(report: dict) -> None:
    print(f"{report['images']} CIFAR-shaped images, batch {report['batch_size']}, "
          f"device {report['device_name']}, torch {report['torch']}, "
          f"{report['epochs']} timed epoch(s) after a warm-up epoch")
    print("A: varshift Trainer (device data, bf16/channels_last on CUDA, fused SGD"
          f"{', torch.compile' if report['compile'] else ''}); "
          f"B: DataLoader, {report['workers']} workers, fp32, eager")
    header = f"{'model':<16} {'A img/s':>10} {'B img/s':>10} {'A/B':>6} {'A MiB':>8} {'B MiB':>8} " \
             f"{'probe %':>8} {'recal %':>8}"
    print(header)
    print("-" * len(header))
    for row in report["results"]:
        print(f"{row['model']:<16} {row['a_images_per_s']:>10,.0f} {row['b_images_per_s']:>10,.0f} "
              f"{row['ratio']:>6.2f} {format_mib(row['a_peak_mib']):>8} {format_mib(row['b_peak_mib']):>8} "
              f"{row['probe_pct']:>8.1f} {row['recal_pct']:>8.1f}")
    probe_images = report["probe_images"]
    protocol = ", the whole training set: the paper's protocol" if probe_images == report["images"] else ""
    print(f"probe % / recal %: seconds of measure_variance_shift / recalibrate_bn over {probe_images} images"
          f"{protocol}, as a percentage of the seconds A trains on as many images")
    accuracy = report["bf16_accuracy"]
    if accuracy is not None:
        verdict = "equal within noise" if accuracy["equal_within_noise"] else "NOT equal within noise"
        print(f"bf16 accuracy ({accuracy['model']}, {accuracy['epochs']} epochs, "
              f"{accuracy['test_images']} test images, best possible {accuracy['best_possible_acc']:.1f}%): "
              f"fp32 {accuracy['fp32_test_acc']:.2f}%, bf16 {accuracy['bf16_test_acc']:.2f}%, "
              f"difference {accuracy['difference']:+.2f} (2 sigma {accuracy['tolerance']:.2f}): {verdict}")


def main(argv=None) -> dict:
    args = parse_args(argv)
    device = resolve_device(args.device)
    register_schema()
    with tempfile.TemporaryDirectory() as tmp, \
            initialize_config_module(config_module=CONF_PACKAGE, version_base="1.3"):
        results = [benchmark_model(compose_config(args, name), args, device, Path(tmp) / name)
                   for name in args.models]
        accuracy = bf16_accuracy(args, device, Path(tmp) / "bf16_accuracy") if args.bf16_accuracy else None
    report = {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__, "torch_threads": torch.get_num_threads(), "images": args.images,
        "batch_size": args.batch_size, "test_batch_size": args.test_batch_size, "epochs": args.epochs,
        "workers": args.workers, "compile": args.compile, "tiny": args.tiny, "position": args.position,
        "probe_images": probe_image_count(args), "results": results, "bf16_accuracy": accuracy,
    }
    print_report(report)
    if args.json:
        atomic_write_json(args.json, report)
    return report


if __name__ == "__main__":
    main()
