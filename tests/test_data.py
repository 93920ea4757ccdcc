"""varshift.data: real torchvision parsers on files written in the real formats, and the device loader."""

from __future__ import annotations

import dataclasses
import gzip
import math
import pickle
import struct
from pathlib import Path
from urllib.error import URLError

import numpy as np
import pytest
import torch
import torchvision.datasets.cifar
import torchvision.transforms.v2.functional as TF
from omegaconf import OmegaConf

from varshift import training
from varshift.data import (
    DATASET_NAMES,
    DatasetCorruptedError,
    DatasetInfo,
    DatasetNotFoundError,
    DeviceLoader,
    build_loaders,
    dataset_config,
    dataset_info,
    load_dataset,
    sources,
)
from varshift.data.augment import crop_and_flip
from varshift.data.subsets import balanced_indices, class_quotas, held_out_split, subset_size

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


# --- writers of the real on-disk formats -------------------------------------------------------------


def random_images(n: int, channels: int, size: int, seed: int) -> np.ndarray:
    """uint8 [n, C, H, W] in 1..255, so a zero in a loader's output can only be padding."""
    return np.random.default_rng(seed).integers(1, 256, (n, channels, size, size), dtype=np.uint8)


def write_pickle(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(obj, protocol=2))


def write_cifar10(root: Path, per_batch: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The official layout: data_batch_1..5, test_batch, batches.meta; rows are R, G, B planes of 32x32."""
    folder = root / "cifar-10-batches-py"
    images = random_images(6 * per_batch, 3, 32, seed=1)
    labels = np.arange(6 * per_batch) % 10
    files = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for i, file in enumerate(files):
        part = slice(i * per_batch, (i + 1) * per_batch)
        write_pickle(
            folder / file,
            {
                "batch_label": file,
                "labels": labels[part].tolist(),
                "data": images[part].reshape(per_batch, 3072),
                "filenames": [f"{j}.png" for j in range(per_batch)],
            },
        )
    write_pickle(folder / "batches.meta", {"label_names": [f"class{c}" for c in range(10)], "num_vis": 3072})
    train = 5 * per_batch
    return images[:train], labels[:train], images[train:], labels[train:]


def write_cifar100(root: Path, n_train: int, n_test: int) -> tuple[np.ndarray, ...]:
    folder = root / "cifar-100-python"
    images = random_images(n_train + n_test, 3, 32, seed=2)
    fine = np.arange(n_train + n_test) % 100
    for file, part in (("train", slice(0, n_train)), ("test", slice(n_train, None))):
        write_pickle(
            folder / file,
            {
                "filenames": ["x.png"] * len(fine[part]),
                "batch_label": file,
                "fine_labels": fine[part].tolist(),
                "coarse_labels": (fine[part] // 5).tolist(),
                "data": images[part].reshape(-1, 3072),
            },
        )
    fine_names, coarse_names = [f"fine{c}" for c in range(100)], [f"coarse{c}" for c in range(20)]
    write_pickle(folder / "meta", {"fine_label_names": fine_names, "coarse_label_names": coarse_names})
    return images[:n_train], fine[:n_train], images[n_train:], fine[n_train:]


def idx_bytes(array: np.ndarray) -> bytes:
    """IDX: zero, zero, type 0x08 (uint8), number of dims, then each dim as big-endian int32, then data."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_idx_set(folder: Path, gzipped: bool, seed: int) -> tuple[np.ndarray, ...]:
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for split, n in (("train", 30), ("t10k", 10)):
        arrays[f"{split}-images-idx3-ubyte"] = random_images(n, 1, 28, seed)[:, 0]
        arrays[f"{split}-labels-idx1-ubyte"] = np.random.default_rng(seed).integers(0, 10, n)
    for file, array in arrays.items():
        data = idx_bytes(array)
        if gzipped:
            (folder / f"{file}.gz").write_bytes(gzip.compress(data))
        else:
            (folder / file).write_bytes(data)
    return tuple(arrays.values())


# --- metadata ----------------------------------------------------------------------------------------


def test_dataset_info_is_read_from_the_yaml_of_every_dataset():
    infos = {name: dataset_info(name) for name in DATASET_NAMES}
    assert {name: info.name for name, info in infos.items()} == {name: name for name in DATASET_NAMES}
    assert infos["cifar10"].mean == (0.4914, 0.4822, 0.4465)  # the paper's section 2.4
    assert infos["cifar10"].std == (0.2023, 0.1994, 0.2010)
    c100, mnist = infos["cifar100"], infos["mnist"]
    assert (c100.num_classes, c100.channels, c100.crop_padding, c100.flip) == (100, 3, 4, True)
    assert (mnist.channels, mnist.size, mnist.crop_padding, mnist.flip) == (1, 28, 0, False)


def test_dataset_config_resolves_the_data_root_from_the_environment(monkeypatch):
    monkeypatch.setenv("VARSHIFT_DATA", "/datasets/here")
    assert dataset_config("cifar10")["root"] == "/datasets/here"
    monkeypatch.delenv("VARSHIFT_DATA")
    assert dataset_config("cifar10")["root"] == "data"


def test_unknown_dataset_and_inconsistent_metadata_are_rejected():
    with pytest.raises(ValueError, match=r"'svhn'.*cifar10, cifar100, fashion_mnist, mnist"):
        dataset_info("svhn")
    with pytest.raises(ValueError, match=r"'tinyimagenet'.*allowed"):
        load_dataset("tinyimagenet", "data")
    good = dict(name="mnist", num_classes=10, channels=1, size=28, mean=(0.1,), std=(0.3,))
    good.update(crop_padding=0, flip=False)
    assert DatasetInfo(**good).std == (0.3,)
    with pytest.raises(ValueError, match="one value per channel"):
        DatasetInfo(**{**good, "mean": (0.1, 0.2)})
    with pytest.raises(ValueError, match="crop_padding=-1 is not allowed: a whole number >= 0"):
        DatasetInfo(**{**good, "crop_padding": -1})


# --- parsing the real formats --------------------------------------------------------------------------


def test_cifar10_pickles_load_with_their_shapes_labels_and_pixels(tmp_path):
    train_x, train_y, test_x, test_y = write_cifar10(tmp_path, per_batch=4)
    splits = load_dataset("cifar10", tmp_path, verify=False)
    assert splits.train_images.shape == (20, 3, 32, 32) and splits.train_images.dtype == torch.uint8
    assert splits.test_images.shape == (4, 3, 32, 32)
    assert splits.train_labels.dtype == torch.int64
    assert torch.equal(splits.train_images, torch.from_numpy(train_x))
    assert torch.equal(splits.test_images, torch.from_numpy(test_x))
    assert splits.train_labels.tolist() == train_y.tolist()
    assert splits.test_labels.tolist() == test_y.tolist()


def test_cifar_files_that_fail_the_official_md5_are_reported_as_corrupted(tmp_path):
    write_cifar10(tmp_path, per_batch=2)
    with pytest.raises(DatasetCorruptedError, match=r"'cifar10': data_batch_1, .*test_batch, batches.meta in "
                       r".*cifar-10-batches-py do not match the official release's md5.*verify=False"):
        load_dataset("cifar10", tmp_path)


def test_cifar100_loads_the_fine_labels(tmp_path):
    train_x, train_fine, test_x, test_fine = write_cifar100(tmp_path, n_train=7, n_test=3)
    splits = load_dataset("cifar100", tmp_path, verify=False)
    assert splits.train_images.shape == (7, 3, 32, 32)
    assert torch.equal(splits.train_images, torch.from_numpy(train_x))
    assert splits.train_labels.tolist() == train_fine.tolist()
    assert splits.test_labels.tolist() == test_fine.tolist()


def test_mnist_idx_files_in_torchvisions_layout_load(tmp_path):
    train_x, train_y, test_x, test_y = write_idx_set(tmp_path / "MNIST" / "raw", gzipped=False, seed=3)
    splits = load_dataset("mnist", tmp_path)
    assert splits.train_images.shape == (30, 1, 28, 28) and splits.test_images.shape == (10, 1, 28, 28)
    assert torch.equal(splits.train_images[:, 0], torch.from_numpy(train_x))
    assert torch.equal(splits.test_images[:, 0], torch.from_numpy(test_x))
    assert splits.train_labels.dtype == torch.int64
    assert splits.train_labels.tolist() == train_y.tolist() and splits.test_labels.tolist() == test_y.tolist()


@pytest.fixture
def default_root(tmp_path, monkeypatch) -> Path:
    """The root nobody chose, ``data`` with VARSHIFT_DATA unset, relative to an empty working directory."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("VARSHIFT_DATA", raising=False)
    return Path("data")


def test_default_root_without_the_dataset_uses_the_system_copy_and_says_so(
    default_root, tmp_path, monkeypatch, capsys
):
    system = tmp_path / "usr-share"
    train_x, train_y, _, test_y = write_idx_set(system, gzipped=True, seed=4)
    monkeypatch.setitem(sources.SYSTEM_COPIES, "fashion_mnist", (tmp_path / "absent", system))
    splits = load_dataset("fashion_mnist", default_root)
    assert torch.equal(splits.train_images[:, 0], torch.from_numpy(train_x))
    assert splits.train_labels.tolist() == train_y.tolist() and splits.test_labels.tolist() == test_y.tolist()
    assert capsys.readouterr().out == f"fashion_mnist: using Debian's copy in {system}\n"


def test_a_copy_in_the_data_root_wins_over_the_system_copy(default_root, tmp_path, monkeypatch, capsys):
    system_y = write_idx_set(tmp_path / "system", gzipped=True, seed=5)[1]
    root_y = write_idx_set(default_root / "FashionMNIST" / "raw", gzipped=False, seed=6)[1]
    assert root_y.tolist() != system_y.tolist()
    monkeypatch.setitem(sources.SYSTEM_COPIES, "fashion_mnist", (tmp_path / "system",))
    assert load_dataset("fashion_mnist", default_root).train_labels.tolist() == root_y.tolist()
    assert capsys.readouterr().out == "fashion_mnist: using the copy in data/FashionMNIST/raw\n"


@pytest.mark.skipif(not DEBIAN_FASHION_MNIST.is_dir(), reason="Debian's dataset-fashion-mnist is absent")
def test_debian_fashion_mnist_package_is_found_automatically(default_root):
    splits = load_dataset("fashion_mnist", default_root)
    assert splits.train_images.shape == (60000, 1, 28, 28) and splits.test_images.shape == (10000, 1, 28, 28)
    assert torch.bincount(splits.train_labels).tolist() == [6000] * 10
    info = dataset_info("fashion_mnist")
    counts = torch.bincount(splits.train_images.flatten(), minlength=256).double()
    values = torch.arange(256, dtype=torch.float64) / 255
    mean = (counts * values).sum() / counts.sum()
    std = ((counts * (values - mean) ** 2).sum() / counts.sum()).sqrt()
    # the YAML's values, to their 4 digits
    assert (mean.item(), std.item()) == pytest.approx((info.mean[0], info.std[0]), abs=5e-5)


# --- a missing dataset ---------------------------------------------------------------------------------


def test_missing_dataset_offline_names_the_dataset_the_places_searched_and_the_ways(default_root, monkeypatch):
    absent_system = Path("/no-debian-package")
    monkeypatch.setitem(sources.SYSTEM_COPIES, "fashion_mnist", (absent_system,))
    with pytest.raises(DatasetNotFoundError) as caught:
        load_dataset("fashion_mnist", default_root, download=False)
    message = str(caught.value)
    assert "'fashion_mnist' not found" in message
    assert "  data/FashionMNIST/raw\n" in message and str(absent_system) in message
    assert "download=True" in message and "VARSHIFT_DATA" in message
    assert "apt-get install dataset-fashion-mnist" in message


def test_a_failed_download_is_reported_with_its_cause(default_root, monkeypatch, capsys):
    def offline(*args, **kwargs):
        raise URLError("no network")

    monkeypatch.setattr(torchvision.datasets.cifar, "download_and_extract_archive", offline)
    with pytest.raises(DatasetNotFoundError) as caught:
        load_dataset("cifar10", default_root, download=True)
    message = str(caught.value)
    assert "'cifar10' not found (could not be downloaded (URLError" in message and "no network" in message
    assert "data/cifar-10-batches-py" in message
    assert "cifar-10-python.tar.gz" in message
    assert capsys.readouterr().out == "cifar10: downloading it into data\n"


@pytest.mark.parametrize("chosen_by", ["dataset.root", "VARSHIFT_DATA"])
def test_a_chosen_root_that_does_not_exist_is_refused_without_falling_back(
    chosen_by, default_root, tmp_path, monkeypatch
):
    system = tmp_path / "system"
    write_idx_set(system, gzipped=True, seed=7)  # a good system copy, which must not be used
    monkeypatch.setitem(sources.SYSTEM_COPIES, "fashion_mnist", (system,))
    root = tmp_path / "mistyped"
    if chosen_by == "VARSHIFT_DATA":  # the YAML resolves root to it; "data" then counts as chosen, too
        monkeypatch.setenv("VARSHIFT_DATA", "data")
        root = default_root
    with pytest.raises(DatasetNotFoundError) as caught:
        load_dataset("fashion_mnist", root, download=True)
    message = str(caught.value)
    assert f"the data root {root} (chosen by dataset.root or VARSHIFT_DATA) does not exist" in message
    all_four = "train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte"
    assert f"{all_four} not found in {root / 'FashionMNIST' / 'raw'}" in message


def test_a_chosen_root_with_only_some_files_is_refused_naming_the_missing_ones(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar10(tmp_path, per_batch=2)
    (folder / "data_batch_3").unlink()
    (folder / "batches.meta").unlink()
    with pytest.raises(DatasetNotFoundError) as caught:
        load_dataset("cifar10", tmp_path, download=True, verify=False)
    message = str(caught.value)
    assert f"the data root {tmp_path} (chosen by dataset.root or VARSHIFT_DATA) does not hold the whole" in message
    assert f": data_batch_3, batches.meta not found in {folder}. A chosen root is the only place" in message
    assert "cifar-10-python.tar.gz" in message


# --- damaged files, reported before training ---------------------------------------------------------------


def rewrite(file: Path, change) -> None:
    """Replace the (uncompressed) content of ``file``, gzipped or not, by ``change(content)``."""
    gzipped = file.suffix == ".gz"
    data = change(gzip.decompress(file.read_bytes()) if gzipped else file.read_bytes())
    file.write_bytes(gzip.compress(data) if gzipped else data)


def one_label_less(data: bytes) -> bytes:
    return idx_bytes(np.frombuffer(data, np.uint8, offset=8)[:-1])


IDX_DEFECTS = {  # file changed -> its change, and what the message must say
    "bad magic": ("train-images-idx3-ubyte", lambda data: b"\x00\x00\x08\x01" + data[4:],
                  "starts with 0x00000801, not the magic number 0x00000803 of IDX images"),
    "truncated": ("t10k-images-idx3-ubyte", lambda data: data[:-10],
                  "is truncated: 7846 bytes, its header (10 x 28 x 28 images) says 7856"),
    "empty": ("train-labels-idx1-ubyte", lambda data: b"", "is empty"),
    "label count": ("train-labels-idx1-ubyte", one_label_less, "holds 29 labels for the 30 images of "),
    "label range": ("t10k-labels-idx1-ubyte", lambda data: data[:-1] + bytes([10]),
                    "1 labels are outside 0..9 (10 classes), the first is 10 at index 9"),
}


@pytest.mark.parametrize("gzipped", [False, True], ids=["raw", "debian-gz"])
@pytest.mark.parametrize("defect", list(IDX_DEFECTS))
def test_a_damaged_idx_file_is_named_with_what_is_wrong(defect, gzipped, default_root, tmp_path, monkeypatch):
    folder = tmp_path / "system" if gzipped else default_root / "FashionMNIST" / "raw"
    write_idx_set(folder, gzipped=gzipped, seed=8)
    monkeypatch.setitem(sources.SYSTEM_COPIES, "fashion_mnist", (tmp_path / "system",))
    name, change, problem = IDX_DEFECTS[defect]
    damaged = folder / (f"{name}.gz" if gzipped else name)
    rewrite(damaged, change)
    with pytest.raises(DatasetCorruptedError) as caught:
        load_dataset("fashion_mnist", default_root)
    assert str(caught.value).startswith(f"{damaged}: {problem}")


def test_a_cut_off_gzip_file_is_named(default_root, tmp_path, monkeypatch):
    write_idx_set(tmp_path / "system", gzipped=True, seed=9)
    monkeypatch.setitem(sources.SYSTEM_COPIES, "fashion_mnist", (tmp_path / "system",))
    damaged = tmp_path / "system" / "train-images-idx3-ubyte.gz"
    damaged.write_bytes(damaged.read_bytes()[:-30])
    with pytest.raises(DatasetCorruptedError, match=rf"^{damaged}: is not a complete gzip file \(EOFError"):
        load_dataset("fashion_mnist", default_root)


def test_labels_beyond_the_configured_classes_are_refused_by_build_loaders(tmp_path):
    labels = write_idx_set(tmp_path / "MNIST" / "raw", gzipped=False, seed=10)[1]
    five_classes = dataclasses.replace(dataset_info("mnist"), num_classes=5)
    wrong = int((labels >= 5).sum())
    with pytest.raises(DatasetCorruptedError, match=rf"train-labels-idx1-ubyte: {wrong} labels are outside 0..4"):
        build_loaders("mnist", tmp_path, batch_size=8, test_batch_size=8, info=five_classes)


def edit_pickle(change):
    """A rewrite of a pickled batch: its dict replaced by ``change(dict)``."""
    return lambda file: file.write_bytes(pickle.dumps(change(pickle.loads(file.read_bytes())), protocol=2))


CIFAR_DEFECTS = {  # file changed -> its rewrite, and what the message must say
    "not a pickle": ("data_batch_3", lambda file: file.write_bytes(b"\x00 not a pickle"),
                     "cannot be unpickled (UnpicklingError"),
    "no labels": ("test_batch", edit_pickle(lambda entry: {"data": entry["data"]}),
                  "lacks the entries 'labels' of a CIFAR"),
    "wrong shape": ("data_batch_1", edit_pickle(lambda entry: {**entry, "data": entry["data"].reshape(8, 1536)}),
                    "'data' is uint8 [8, 1536], not uint8 rows of 3072 values (3 x 32 x 32)"),
    "label count": ("data_batch_5", edit_pickle(lambda entry: {**entry, "labels": entry["labels"][:-1]}),
                    "holds 3 labels ('labels') for 4 images"),
    "label range": ("data_batch_2", edit_pickle(lambda entry: {**entry, "labels": [0, 1, 10, 12]}),
                    "2 labels are outside 0..9 (10 classes), the first is 10 at index 2"),
}


@pytest.mark.parametrize("defect", list(CIFAR_DEFECTS))
def test_a_damaged_cifar_batch_is_named_with_what_is_wrong(defect, tmp_path):
    write_cifar10(tmp_path, per_batch=4)
    name, damage, problem = CIFAR_DEFECTS[defect]
    damaged = tmp_path / "cifar-10-batches-py" / name
    damage(damaged)
    with pytest.raises(DatasetCorruptedError) as caught:
        load_dataset("cifar10", tmp_path, verify=False)
    assert str(caught.value).startswith(f"{damaged}: {problem}")


def test_cifar100_needs_its_fine_labels(tmp_path):
    write_cifar100(tmp_path, n_train=7, n_test=3)
    damaged = tmp_path / "cifar-100-python" / "train"
    edit_pickle(lambda entry: {"data": entry["data"], "labels": entry["fine_labels"]})(damaged)
    with pytest.raises(DatasetCorruptedError, match=rf"^{damaged}: lacks the entries 'fine_labels' of a CIFAR"):
        load_dataset("cifar100", tmp_path, verify=False)


# --- the device loader ---------------------------------------------------------------------------------


def id_loader(n: int, size: int = 8, channels: int = 3, **options) -> tuple[DeviceLoader, torch.Tensor]:
    """A loader whose labels are the image indices, mean 0 and std 1 (so ``x * 255`` are the pixels)."""
    images = torch.from_numpy(random_images(n, channels, size, seed=n))
    defaults = dict(batch_size=16, mean=[0.0] * channels, std=[1.0] * channels)
    return DeviceLoader(images, torch.arange(n), **{**defaults, **options}), images


def pixels(x: torch.Tensor) -> torch.Tensor:
    return (x * 255).round().to(torch.uint8)


def test_each_epoch_visits_every_image_exactly_once_in_a_fresh_order():
    loader, _ = id_loader(103, shuffle=True, crop_padding=2, flip=True)
    assert len(loader) == 7 and loader.num_samples == 103
    orders = []
    for epoch in range(3):
        loader.set_epoch(epoch)
        batches = [y for _, y in loader]
        assert [len(y) for y in batches] == [16] * 6 + [7]
        order = torch.cat(batches)
        assert sorted(order.tolist()) == list(range(103))
        orders.append(order.tolist())
    assert orders[0] != orders[1] != orders[2] and orders[0] != list(range(103))


def test_drop_last_and_unshuffled_order():
    loader, _ = id_loader(103, drop_last=True)
    assert len(loader) == 6
    assert torch.cat([y for _, y in loader]).tolist() == list(range(96))


def test_drop_single_last_drops_only_a_last_batch_of_one_image():
    def sizes(n: int, batch_size: int) -> list[int]:
        loader, _ = id_loader(n, batch_size=batch_size, shuffle=True, drop_single_last=True)
        batches = [len(y) for _, y in loader]
        assert len(batches) == len(loader)
        return batches

    assert sizes(129, 64) == [64, 64] and sizes(130, 64) == [64, 64, 2] and sizes(128, 64) == [64, 64]
    assert sizes(3, 1) == [1, 1, 1]  # batches of one asked for are not a remainder
    with pytest.raises(ValueError, match=r"1 image\(s\) in batches of 4 give no batch once a last batch of one"):
        id_loader(1, batch_size=4, drop_single_last=True)
    with pytest.raises(ValueError, match=r"3 image\(s\) in batches of 4 give no batch once a last batch smaller"):
        id_loader(3, batch_size=4, drop_last=True)


def test_batches_depend_only_on_seed_and_epoch():
    first, _ = id_loader(50, shuffle=True, crop_padding=4, flip=True, seed=7)
    for epoch in range(3):  # an uninterrupted run reaches epoch 2 ...
        first.set_epoch(epoch)
        uninterrupted = list(first)
    resumed, _ = id_loader(50, shuffle=True, crop_padding=4, flip=True, seed=7)
    resumed.set_epoch(2)  # ... a resumed run starts there
    for (x1, y1), (x2, y2) in zip(uninterrupted, resumed, strict=True):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)
    other_seed, _ = id_loader(50, shuffle=True, crop_padding=4, flip=True, seed=8)
    other_seed.set_epoch(2)
    assert not torch.equal(next(iter(other_seed))[1], uninterrupted[0][1])


def test_crops_are_the_original_shifted_by_at_most_the_padding_with_zero_fill():
    padding, n = 4, 200
    loader, images = id_loader(n, size=12, crop_padding=padding, shuffle=True)
    padded = torch.nn.functional.pad(images, (padding,) * 4)
    shifts = set()
    for x, y in loader:
        for crop, index in zip(pixels(x), y.tolist(), strict=True):
            matches = [
                (dy, dx)
                for dy in range(2 * padding + 1)
                for dx in range(2 * padding + 1)
                if torch.equal(crop, padded[index, :, dy : dy + 12, dx : dx + 12])
            ]
            assert len(matches) == 1, f"image {index}: not a single zero-filled shift of the original"
            shifts.add(matches[0])
    # every one of the 81 shifts is drawn with probability 1/81 per image: all but a few must show up
    assert len(shifts) > 70


def test_flips_are_exact_mirrors_of_about_half_the_images():
    n = 4000
    images = torch.from_numpy(random_images(n, 1, 4, seed=11))
    images[..., 0], images[..., -1] = 1, 2  # no image equals its own mirror
    loader = DeviceLoader(images, torch.arange(n), batch_size=1000, mean=[0.0], std=[1.0], flip=True)
    flipped = 0
    for x, y in loader:
        out, original = pixels(x), images[y]
        mirrored = (out == original.flip(-1)).flatten(1).all(1)
        same = (out == original).flatten(1).all(1)
        assert bool((mirrored ^ same).all()), "every output is the image or its exact mirror"
        flipped += int(mirrored.sum())
    assert abs(flipped - n / 2) < 4 * math.sqrt(n * 0.25)  # 4 binomial standard deviations


def test_crop_and_flip_match_torchvisions_crop_then_flip():
    images = torch.from_numpy(random_images(6, 3, 10, seed=9))
    offsets = torch.tensor([[0, 8, 3, 4, 1, 7], [8, 0, 5, 4, 2, 6]])
    flips = torch.tensor([True, False, True, False, True, True])
    out = crop_and_flip(images, 4, offsets, flips)
    for i, image in enumerate(images):
        expected = TF.crop(TF.pad(image, [4]), int(offsets[0, i]), int(offsets[1, i]), 10, 10)
        assert torch.equal(out[i], TF.horizontal_flip(expected) if flips[i] else expected)


def test_normalisation_matches_to_tensor_then_normalize():
    images = torch.from_numpy(random_images(5, 3, 6, seed=10))
    mean, std = [0.4914, 0.4822, 0.4465], [0.2023, 0.1994, 0.2010]
    loader = DeviceLoader(images, torch.zeros(5, dtype=torch.int64), batch_size=5, mean=mean, std=std)
    x, _ = next(iter(loader))
    expected = TF.normalize(images.float() / 255, mean, std)
    assert x.dtype == torch.float32
    torch.testing.assert_close(x, expected, rtol=0, atol=1e-5)


def test_device_loader_rejects_bad_arguments():
    images, labels = torch.zeros(4, 1, 2, 2, dtype=torch.uint8), torch.zeros(4, dtype=torch.int64)
    common = dict(batch_size=2, mean=[0.5], std=[0.5])
    with pytest.raises(ValueError, match="uint8"):
        DeviceLoader(images.float(), labels, **common)
    with pytest.raises(ValueError, match=r"int64 \[4\]"):
        DeviceLoader(images, labels[:3], **common)
    with pytest.raises(ValueError, match="batch_size=0 is not allowed: a whole number >= 1"):
        DeviceLoader(images, labels, **{**common, "batch_size": 0})
    with pytest.raises(ValueError, match="one value per channel"):
        DeviceLoader(images, labels, **{**common, "mean": [0.5, 0.5]})
    with pytest.raises(ValueError, match="seed=-1 is not allowed: a whole number >= 0"):
        DeviceLoader(images, labels, **common, seed=-1)
    with pytest.raises(ValueError, match="epoch=1.5 is not allowed: a whole number >= 0"):
        DeviceLoader(images, labels, **common).set_epoch(1.5)


# --- subsets and splits ----------------------------------------------------------------------------------


def test_subset_size_accepts_fractions_and_counts_only():
    assert subset_size(None, 50) == 50 and subset_size(0.5, 50) == 25 and subset_size(1.0, 50) == 50
    assert subset_size(1, 50) == 1 and subset_size(50, 50) == 50 and subset_size(20.0, 50) == 20
    for bad in (0, 51, 0.0, 1.5, 51.0, -0.5, float("nan"), True, "half"):
        with pytest.raises(ValueError, match=rf"subset={bad!r} is not allowed.*\(0, 1\].*\[1, 50\]"):
            subset_size(bad, 50)
    with pytest.raises(ValueError, match="selects no item"):
        subset_size(0.001, 50)


def test_class_quotas_are_balanced_and_respect_small_classes():
    rng = torch.Generator().manual_seed(0)
    assert class_quotas([2, 50, 50], 30, rng) == [2, 14, 14]
    quotas = class_quotas([10] * 10, 35, rng)
    assert sorted(quotas) == [3] * 5 + [4] * 5
    assert class_quotas([5, 7, 9], 21, rng) == [5, 7, 9]


def test_balanced_indices_and_held_out_split():
    labels = torch.arange(200) % 10
    chosen = balanced_indices(labels, 50, torch.Generator().manual_seed(1))
    assert torch.bincount(labels[chosen]).tolist() == [5] * 10 and len(set(chosen.tolist())) == 50
    assert torch.equal(chosen, balanced_indices(labels, 50, torch.Generator().manual_seed(1)))
    kept, held_out = held_out_split(labels, 0.1, torch.Generator().manual_seed(2))
    assert torch.bincount(labels[held_out]).tolist() == [2] * 10
    assert sorted(kept.tolist() + held_out.tolist()) == list(range(200))
    with pytest.raises(ValueError, match=r"val_split=0.001 is not allowed for 200"):
        held_out_split(labels, 0.001, torch.Generator())


# --- build_loaders ---------------------------------------------------------------------------------------


def test_build_loaders_makes_the_four_loaders_from_a_dataset_on_disk(tmp_path):
    write_cifar10(tmp_path, per_batch=40)  # 200 training images, 20 per class; 40 test images
    loaders = build_loaders(
        "cifar10", tmp_path, batch_size=32, test_batch_size=50, subset=100, test_subset=0.5, val_split=0.2,
        seed=3, verify=False,
    )
    assert loaders.info == dataset_info("cifar10")
    assert (loaders.train.num_samples, loaders.val.num_samples, loaders.test.num_samples) == (80, 20, 20)
    train, train_eval = loaders.train, loaders.train_eval
    assert (train.shuffle, train.crop_padding, train.flip) == (True, 4, True)
    assert (train_eval.shuffle, train_eval.crop_padding, train_eval.flip) == (False, 4, True)
    assert loaders.train_eval.images.data_ptr() == loaders.train.images.data_ptr()  # one copy on the device
    assert (loaders.val.crop_padding, loaders.val.flip, loaders.test.crop_padding) == (0, False, 0)
    assert torch.bincount(loaders.val.labels).tolist() == [2] * 10
    assert torch.bincount(loaders.train.labels).tolist() == [8] * 10
    assert len(loaders.train) == 3 and len(loaders.test) == 1
    x, y = next(iter(loaders.train))
    assert x.shape == (32, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64


def test_build_loaders_without_augmentation_or_validation(tmp_path):
    write_cifar10(tmp_path, per_batch=4)
    loaders = build_loaders("cifar10", tmp_path, batch_size=8, test_batch_size=8, augment=False, verify=False)
    assert loaders.val is None and (loaders.train_eval.crop_padding, loaders.train_eval.flip) == (0, False)
    first_pass = [x for x, _ in loaders.train_eval]
    loaders.train_eval.set_epoch(1)
    assert all(torch.equal(a, b) for (a, _), b in zip(loaders.train_eval, first_pass, strict=True))
    for bad in (1.0, -0.1, True):
        with pytest.raises(ValueError, match=rf"val_split={bad!r} is not allowed"):
            build_loaders("cifar10", tmp_path, batch_size=8, test_batch_size=8, val_split=bad, verify=False)


def test_passes_with_bn_in_training_mode_drop_a_last_single_image_evaluation_keeps_it(tmp_path):
    write_cifar10(tmp_path, per_batch=30)  # 150 training images, 30 test images
    loaders = build_loaders("cifar10", tmp_path, batch_size=128, test_batch_size=29, subset=129, verify=False)
    assert [len(y) for _, y in loaders.train] == [128]
    assert [len(y) for _, y in loaders.train_eval] == [128]  # the training batch size, not test_batch_size
    assert [len(y) for _, y in loaders.test] == [29, 1]


@pytest.mark.parametrize(
    "overrides", [("dataset.subset=129", "trainer.batch_size=128"), ("trainer.test_batch_size=1",)],
    ids=["last-training-batch-of-one", "test-batch-of-one"],
)
def test_a_run_with_batches_of_one_image_trains_probes_and_recalibrates(overrides, make_config, tmp_path):
    summary = training.run(make_config(*overrides, "trainer.epochs=1"), tmp_path)
    assert summary["status"] == "complete" and summary["epochs"] == 1
    assert math.isfinite(summary["mean_shift"]) and math.isfinite(summary["test_acc_recalibrated"])


def test_build_loaders_takes_overridden_metadata(tmp_path):
    write_cifar10(tmp_path, per_batch=4)
    overridden = DatasetInfo.from_config(OmegaConf.merge(dataset_config("cifar10"), {"crop_padding": 2}))
    sizes = dict(batch_size=8, test_batch_size=8)
    loaders = build_loaders("cifar10", tmp_path, **sizes, info=overridden, verify=False)
    assert (loaders.train.crop_padding, loaders.train_eval.crop_padding) == (2, 2)
    with pytest.raises(ValueError, match="info is for dataset 'cifar10', not 'cifar100'"):
        build_loaders("cifar100", tmp_path, **sizes, info=overridden)
    mnist_sized = dataclasses.replace(dataset_info("mnist"), name="cifar10")
    with pytest.raises(ValueError, match=r"images at .* are \[3, 32, 32\], the metadata says \[1, 28, 28\]"):
        build_loaders("cifar10", tmp_path, **sizes, info=mnist_sized, verify=False)
