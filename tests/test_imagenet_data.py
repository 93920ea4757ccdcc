"""ImageNet from its folders: the layout checked in one line, the protocol's views, one order per (seed, epoch)
whatever decodes the images, and the config's checks."""

from __future__ import annotations

import shutil

import pytest
import torch
from test_interrupts import metrics_without_timing
from test_run_integrity import die_in_epoch
from torchvision.io import ImageReadMode, decode_image, read_file
from torchvision.transforms.v2 import functional as F

from varshift.data import (
    DatasetInfo,
    DeviceLoader,
    build_loaders,
    check_dataset_config,
    dataset_config,
    load_dataset,
)
from varshift.data.folders import scan_image_folders
from varshift.data.sample import CLASSES, TRAIN_PER_CLASS, VAL_PER_CLASS
from varshift.errors import DatasetCorruptedError, DatasetNotFoundError

SIZE, RESIZE = 24, 28


def sample_info(**changes) -> DatasetInfo:
    cfg = {**dataset_config("imagenet"), "num_classes": CLASSES, "size": SIZE, "resize": RESIZE, **changes}
    return DatasetInfo.from_config(cfg)


def loaders(root, workers=0, **options):
    return build_loaders("imagenet", root, batch_size=64, test_batch_size=100, info=sample_info(), seed=5,
                         workers=workers, **options)


def epoch(loader, number: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    loader.set_epoch(number)
    return list(loader)


def test_the_folders_are_listed_with_labels_in_the_sorted_order_of_their_class_names(imagenet_root):
    splits = load_dataset("imagenet", imagenet_root, num_classes=CLASSES)
    assert splits.classes == tuple(f"n{label:08d}" for label in range(CLASSES))
    assert (len(splits.train), len(splits.test)) == (CLASSES * TRAIN_PER_CLASS, CLASSES * VAL_PER_CLASS)
    for files in (splits.train, splits.test):
        for path, label in zip(files.paths, files.labels.tolist(), strict=True):
            assert path.decode().split("/")[-2] == splits.classes[label]


@pytest.mark.filterwarnings("ignore:The image decoding and encoding capabilities of TorchVision are deprecated")
def test_the_test_view_is_the_centre_crop_of_the_image_resized_to_its_shorter_side(imagenet_root):
    test = loaders(imagenet_root).test
    x, y = next(iter(test))
    files = scan_image_folders("imagenet", imagenet_root).test
    info = sample_info()
    mean, std = torch.tensor(info.mean).view(3, 1, 1), torch.tensor(info.std).view(3, 1, 1)
    for index in (0, 37):
        image = decode_image(read_file(files.paths[index].decode()), mode=ImageReadMode.RGB)
        assert min(image.shape[1:]) != RESIZE  # the sample's images are 40 to 64 pixels a side
        view = F.center_crop(F.resize(image, [RESIZE], antialias=True), [SIZE, SIZE])
        torch.testing.assert_close(x[index], (view / 255.0 - mean) / std)
        assert y[index] == files.labels[index]


def test_an_epoch_is_one_permutation_of_the_seed_and_the_epoch_whatever_decodes_it(imagenet_root):
    """The order is DeviceLoader's for as many images; workers (a neutral key) change no batch."""
    in_process, two_workers = loaders(imagenet_root).train, loaders(imagenet_root, workers=2).train
    batches = epoch(in_process, 3)
    assert len(batches) == len(in_process) == -(-CLASSES * TRAIN_PER_CLASS // 64)
    for (x, y), (x_workers, y_workers) in zip(batches, epoch(two_workers, 3), strict=True):
        assert torch.equal(x, x_workers) and torch.equal(y, y_workers)
    labels = scan_image_folders("imagenet", imagenet_root).train.labels
    same_order = DeviceLoader(torch.zeros(len(labels), 1, 1, 1, dtype=torch.uint8), labels, batch_size=64,
                              mean=(0.0,), std=(1.0,), shuffle=True, seed=5)
    same_order.set_epoch(3)
    assert torch.equal(torch.cat([y for _, y in batches]), torch.cat([y for _, y in same_order]))
    assert not torch.equal(torch.cat([y for _, y in epoch(in_process, 4)]), torch.cat([y for _, y in batches]))


def test_train_eval_sees_each_training_image_with_the_crop_and_flip_training_gave_it_that_epoch(imagenet_root):
    built = loaders(imagenet_root)
    shuffled = torch.cat([x for x, _ in epoch(built.train, 2)])
    in_order = torch.cat([x for x, _ in epoch(built.train_eval, 2)])
    order = built.train.batches.order(2)
    assert torch.equal(shuffled, in_order[order])
    next_epoch = torch.cat([x for x, _ in epoch(built.train_eval, 3)])
    assert not torch.equal(next_epoch, in_order)  # other crops and flips


def test_subsets_and_the_validation_split_are_class_balanced_image_lists(imagenet_root):
    built = loaders(imagenet_root, subset=200, test_subset=50, val_split=0.25)
    assert (built.train.num_samples, built.val.num_samples, built.test.num_samples) == (150, 50, 50)
    for loader in (built.val, built.test):
        assert torch.bincount(torch.cat([y for _, y in loader]), minlength=CLASSES).tolist() == [5] * CLASSES


def test_a_missing_or_malformed_root_is_one_line_naming_the_layout(imagenet_root, tmp_path):
    layout = r"does not hold <root>/train/<class>/\*\.JPEG and <root>/val/<class>/\*\.JPEG"
    cases = {"missing": "it is not a folder", "no_val": "it has no val/ folder",
             "other_classes": r"not the same ones \(only in train/: n00000009; only in val/: n00000042\)",
             "empty_class": "1 class folder\\(s\\) of train/ hold no image .* the first is n00000003"}
    for case, problem in cases.items():
        root = tmp_path / case
        if case != "missing":
            shutil.copytree(imagenet_root, root)
        if case == "no_val":
            shutil.rmtree(root / "val")
        if case == "other_classes":
            (root / "val" / "n00000009").rename(root / "val" / "n00000042")
        if case == "empty_class":
            for file in (root / "train" / "n00000003").iterdir():
                file.rename(file.with_suffix(".txt"))
        with pytest.raises(DatasetNotFoundError, match=f"dataset 'imagenet': .*{case}.* {layout}.*{problem}") as error:
            load_dataset("imagenet", root)
        assert "\n" not in str(error.value)
    with pytest.raises(ValueError, match="dataset.num_classes=1000 is not allowed: 10, the number of class folders"):
        build_loaders("imagenet", imagenet_root, batch_size=64, test_batch_size=100, info=sample_info(num_classes=1000))


def test_an_image_that_cannot_be_decoded_is_named_in_one_line(imagenet_root, tmp_path):
    root = shutil.copytree(imagenet_root, tmp_path / "copy")
    broken = root / "val" / "n00000002" / "n00000002_4.JPEG"
    broken.write_bytes(b"not a jpeg")
    with pytest.raises(DatasetCorruptedError, match=f"{broken}: cannot be read as an image") as error:
        list(loaders(root, workers=1).test)
    assert "\n" not in str(error.value)


def test_the_config_of_an_image_folder(make_config, imagenet_root):
    data = make_config("dataset=imagenet", f"dataset.root={imagenet_root}", "dataset.num_classes=10",
                       "dataset.size=32", "dataset.resize=36")["dataset"]
    assert (data["num_classes"], data["size"], data["resize"], data["workers"]) == (10, 32, 36, None)
    check_dataset_config(data)
    refused = {"download": (True, "dataset.download=True is not allowed: false: imagenet is read from"),
               "resize": (30, "imagenet resize=30 is not allowed: a whole number >= 32"),
               "workers": (-1, "dataset.workers=-1 is not allowed"),
               "channels": (1, "dataset.channels=1 is not allowed: 3, imagenet's own")}
    for key, (value, message) in refused.items():
        with pytest.raises(ValueError, match=message):
            check_dataset_config({**data, key: value})
    fashion = make_config()["dataset"]
    with pytest.raises(ValueError, match="dataset.workers=2 is not allowed: null: fashion_mnist is held in memory"):
        check_dataset_config({**fashion, "workers": 2})
    with pytest.raises(ValueError, match="fashion_mnist resize=36 is not allowed: null"):
        check_dataset_config({**fashion, "resize": 36})


def test_a_pass_leaves_torchs_global_generator_where_it_was(imagenet_root):
    """The trainer's dropout masks come from it: a data pass, in the trainer or in workers, must draw nothing."""
    for workers in (0, 1):
        train = loaders(imagenet_root, workers=workers).train
        state = torch.get_rng_state()
        list(train)
        assert torch.equal(torch.get_rng_state(), state), workers


def test_a_killed_imagenet_run_resumes_with_other_workers_to_the_same_numbers(make_config, imagenet_root, tmp_path,
                                                                              monkeypatch):
    from varshift import training

    def config(workers: int) -> dict:
        return make_config("dataset=imagenet", f"dataset.root={imagenet_root}", "dataset.num_classes=10",
                           "dataset.size=24", "dataset.resize=28", "dataset.subset=128", "dataset.test_subset=60",
                           "trainer.epochs=2", "dropout.position=head", f"dataset.workers={workers}")

    expected = training.run(config(0), tmp_path / "uninterrupted")
    die_in_epoch(2, monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        training.run(config(0), tmp_path / "killed")
    monkeypatch.undo()
    resumed = training.run(config(1), tmp_path / "killed")  # dataset.workers is neutral: a resume may change it
    assert metrics_without_timing(tmp_path / "killed") == metrics_without_timing(tmp_path / "uninterrupted")
    for key in ("test_acc", "test_top5_acc", "test_acc_recalibrated", "mean_shift", "mean_shift_recalibrated"):
        assert resumed[key] == expected[key], key
