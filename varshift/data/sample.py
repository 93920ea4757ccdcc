"""A small ImageNet-layout folder of generated JPEGs, for Table 5 at smoke scale and for trying the ImageNet loader.

    python -m varshift.data.sample DIR        # DIR/train/<class>/*.JPEG, DIR/val/<class>/*.JPEG

Ten classes (``scale.imagenet.num_classes`` at smoke), 52 training and 26 test images each, of 40 to 64 pixels a
side; a class is a colour and a stripe pattern under noise, so a small network learns it within an epoch or two.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

CLASSES, TRAIN_PER_CLASS, VAL_PER_CLASS = 10, 52, 26
SIDES = (40, 65)  # image sides drawn from [40, 64]


def class_image(label: int, rng: np.random.Generator) -> Image.Image:
    """A noisy image of class ``label``: its colour, stripes of its period (2-6 pixels), vertical or horizontal."""
    height, width = rng.integers(*SIDES, size=2)
    colour = np.array([(label * 97) % 256, (label * 57 + 80) % 256, (label * 31 + 160) % 256])
    stripes = (np.arange(max(height, width)) % (2 + label % 5)) == 0
    mask = stripes[None, :width] if label % 2 else stripes[:height, None]
    image = rng.integers(0, 60, size=(height, width, 3)) + 0.6 * colour + 80 * np.broadcast_to(mask, (height, width))[
        ..., None]
    return Image.fromarray(image.clip(0, 255).astype(np.uint8))


def write_imagenet_sample(root: str | Path, classes: int = CLASSES, train_per_class: int = TRAIN_PER_CLASS,
                          val_per_class: int = VAL_PER_CLASS, seed: int = 0) -> Path:
    """Write the sample into ``root`` (created; files already there are overwritten) and return ``root``."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    for label in range(classes):
        wnid = f"n{label:08d}"  # named like ImageNet's WordNet ids
        for split, count in (("train", train_per_class), ("val", val_per_class)):
            folder = root / split / wnid
            folder.mkdir(parents=True, exist_ok=True)
            for index in range(count):
                class_image(label, rng).save(folder / f"{wnid}_{index}.JPEG", "JPEG", quality=90)
    return root


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m varshift.data.sample", description=__doc__.split("\n\n")[0])
    parser.add_argument("root", type=Path, help="the folder to write train/ and val/ into")
    args = parser.parse_args(argv)
    if args.root.exists() and not args.root.is_dir():
        parser.error(f"{args.root} exists and is not a folder")
    write_imagenet_sample(args.root)
    print(f"{args.root}: {CLASSES} classes, {CLASSES * TRAIN_PER_CLASS} training and {CLASSES * VAL_PER_CLASS} test "
          "images; train on them with dataset=imagenet dataset.root=" + str(args.root) +
          f" dataset.num_classes={CLASSES}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
