"""Write ``sample_data/photos``: the README's image demo, a small image folder cut from CIFAR-10.

CIFAR-10: Alex Krizhevsky, 2009, *Learning Multiple Layers of Features from Tiny Images*, University of
Toronto (the JPEG re-encoding in ``../shared/datasets/cifar10_{train,test}.parquet``). Three classes that
differ in colour and layout (airplane, automobile, frog), so the from-scratch ``tiny-resnet`` learns them in
seconds on 2 CPU cores:

- ``photos/train/<label>/<nnn>.png``: 40 training images per class, of which 6 in all are filed under a
  wrong class (their paths are listed in ``photos/planted_errors.txt``);
- ``photos/val/<label>/<nnn>.png``: 10 test images per class.

Seeded, so running it again writes the same files.

    python scripts/make_sample_photos.py
"""

from __future__ import annotations

import argparse
import io
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from PIL import Image

CLASSES = ("airplane", "automobile", "frog")
TRAIN_PER_CLASS, VAL_PER_CLASS, PLANTED = 80, 20, 12


def pick(table: object, per_class: int, rng: np.random.Generator) -> list[dict]:
    rows = table.to_pylist()  # type: ignore[attr-defined]
    picked = []
    for name in CLASSES:
        of_class = [row for row in rows if row["label"] == name]
        picked += [of_class[i] for i in sorted(rng.choice(len(of_class), per_class, replace=False))]
    return picked


def save(row: dict, folder: Path, name: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"  # a neutral name: CIFAR's ids spell the true class
    Image.open(io.BytesIO(row["image"]["bytes"])).convert("RGB").save(path, optimize=True)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    root = Path(__file__).resolve().parent.parent
    parser.add_argument("--datasets", type=Path, default=root.parent / "shared" / "datasets")
    parser.add_argument("--out", type=Path, default=root / "sample_data" / "photos")
    args = parser.parse_args()
    rng = np.random.default_rng(2020)
    columns = ["id", "image", "label"]
    train = pick(
        pq.read_table(args.datasets / "cifar10_train.parquet", columns=columns), TRAIN_PER_CLASS, rng
    )
    val = pick(pq.read_table(args.datasets / "cifar10_test.parquet", columns=columns), VAL_PER_CLASS, rng)
    if args.out.exists():
        # only a folder this script wrote (it holds planted_errors.txt and train/, val/ only) is replaced
        if {entry.name for entry in args.out.iterdir()} != {"planted_errors.txt", "train", "val"}:
            raise SystemExit(f"{args.out}: exists and was not written by this script; choose another --out")
        shutil.rmtree(args.out)
    planted = set(rng.choice(len(train), PLANTED, replace=False).tolist())
    wrong = []
    names = rng.permutation(len(train))  # shuffled numbers: neither the name nor its order tells the class
    for index, row in enumerate(train):
        label = row["label"]
        if index in planted:
            others = [name for name in CLASSES if name != label]
            label = others[int(rng.integers(len(others)))]
        path = save(row, args.out / "train" / label, f"{names[index]:03d}")
        if index in planted:
            wrong.append(f"{path.relative_to(args.out).as_posix()} (really {row['label']})")
    for index, row in enumerate(val):
        save(row, args.out / "val" / row["label"], f"{index:03d}")
    (args.out / "planted_errors.txt").write_text("\n".join(sorted(wrong)) + "\n", encoding="utf-8")
    print(
        f"wrote {len(train)} training and {len(val)} validation images to {args.out}, {len(wrong)} misfiled"
    )


if __name__ == "__main__":
    main()
