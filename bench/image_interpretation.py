"""Benchmark 17: the paper's interpretation figure on CIFAR-10 (Krizhevsky 2009): misclassified test images next
to the training images that hurt them most (and, below, those that helped most).

One tiny-resnet run (``--scope head``, from scratch) on a class-balanced subset of ``cifar10_train.parquet``
with its labels as given; ``tod-clean score --val`` on a class-balanced subset of ``cifar10_test.parquet``
writes the train x test influence matrix (``--matrix``); ``tod-clean predict`` gives the full network's
prediction of each test image. For the first ``--show`` misclassified test images (in file order), the
figure shows the test image with its label and prediction, its ``--top`` most harmful training images (most
negative influence) and its ``--top`` most helpful ones, each with its given label and its influence.

Everything runs through the command line, as a user would; ``--reuse`` keeps a finished run and matrix.

    python bench/image_interpretation.py --reuse                        # 10,000 training x 500 test images
    python bench/image_interpretation.py --influence gauss-newton --reuse
    python bench/image_interpretation.py --rows 1000 --test-rows 100 --epochs 3   # a quick look
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DEFAULT_DATASETS, RESULTS, WORK, machine, save_json  # noqa: E402
from image_label_errors import balanced_subset, write_parquet  # noqa: E402


def tod_clean(*arguments: str) -> str:
    """Run ``tod-clean ARGUMENTS`` (this checkout's package) and return its standard output."""
    done = subprocess.run(
        [sys.executable, "-m", "tod_clean", *arguments, "--quiet"],
        check=True,
        capture_output=True,
        text=True,
    )
    return done.stdout


def decode(value: dict[str, Any]) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(value["bytes"])).convert("RGB"))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--datasets", type=Path, default=DEFAULT_DATASETS)
    parser.add_argument("--rows", type=int, default=10000)
    parser.add_argument("--test-rows", type=int, default=500)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--influence", default="turn-over")
    parser.add_argument("--show", type=int, default=6, help="misclassified test images in the figure")
    parser.add_argument("--top", type=int, default=3)
    parser.add_argument("--reuse", action="store_true")
    args = parser.parse_args()

    import pyarrow.parquet as pq

    folder = WORK / f"image-interpretation-{args.rows}-{args.epochs}"
    train_table = balanced_subset(pq.read_table(args.datasets / "cifar10_train.parquet"), args.rows, 0)
    test_table = balanced_subset(pq.read_table(args.datasets / "cifar10_test.parquet"), args.test_rows, 0)
    train_path = write_parquet(train_table, folder / "train.parquet")
    test_path = write_parquet(test_table, folder / "test.parquet")
    run = folder / "run"
    if not (args.reuse and complete(run)):
        tod_clean(
            "train", str(train_path), "--run", str(run), "--id-col", "id", "--epochs", str(args.epochs),
            "--lr", str(args.lr), "--head-lr", str(args.lr), "--batch-size", "64", "--overwrite",
        )  # fmt: skip
    matrix_path = folder / f"influence-{args.influence}.npy"
    if not (args.reuse and matrix_path.is_file()):
        tod_clean(
            "score", "--run", str(run), "--val", str(test_path), "--influence", args.influence,
            "--matrix", str(matrix_path), "-o", str(folder / f"scores-{args.influence}.csv"), "--overwrite",
        )  # fmt: skip
    influence = np.load(matrix_path)  # [N train, V test]
    predicted = prediction_labels(run, test_path)
    test_labels = test_table.column("label").to_pylist()
    train_labels = train_table.column("label").to_pylist()
    wrong = [v for v in range(len(test_labels)) if predicted[v] != test_labels[v]][: args.show]

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = 1 + 2 * args.top
    fig, axes = plt.subplots(
        len(wrong), columns, figsize=(1.25 * columns + 0.6, 1.45 * len(wrong)), squeeze=False
    )
    shown: list[dict[str, Any]] = []
    train_images = train_table.column("image").to_pylist()
    test_images = test_table.column("image").to_pylist()
    for row, v in enumerate(wrong):
        order = np.argsort(influence[:, v], kind="stable")
        harmful, helpful = order[: args.top], order[::-1][: args.top]
        cells = [(decode(test_images[v]), f"{test_labels[v]}\n-> {predicted[v]}", "black")]
        cells += [
            (decode(train_images[i]), f"{train_labels[i]}\n{influence[i, v]:+.3f}", "tab:red")
            for i in harmful
        ]
        cells += [
            (decode(train_images[i]), f"{train_labels[i]}\n{influence[i, v]:+.3f}", "tab:green")
            for i in helpful
        ]
        for axis, (image, title, colour) in zip(axes[row], cells, strict=True):
            axis.imshow(image, interpolation="nearest")
            axis.set_title(title, fontsize=7, color=colour)
            axis.set_xticks([])
            axis.set_yticks([])
        shown.append(
            {
                "test_id": test_table.column("id")[v].as_py(),
                "label": test_labels[v],
                "predicted": predicted[v],
                "harmful": [
                    (train_table.column("id")[i].as_py(), train_labels[i], float(influence[i, v]))
                    for i in harmful
                ],
                "helpful": [
                    (train_table.column("id")[i].as_py(), train_labels[i], float(influence[i, v]))
                    for i in helpful
                ],
                "harmful_share_labelled_as_prediction": float(
                    np.mean([train_labels[i] == predicted[v] for i in harmful])
                ),
            }
        )
    axes[0][0].set_title("test image\n" + axes[0][0].get_title(), fontsize=7)
    fig.suptitle(
        f"misclassified CIFAR-10 test images (left), their {args.top} most harmful (red) and most helpful "
        f"(green) training images, influence {args.influence}",
        fontsize=8,
    )
    fig.tight_layout()
    name = f"image_interpretation-{args.influence}"
    fig.savefig(RESULTS / f"{name}.png", dpi=120)
    # over all misclassified test images, not only those shown: do the most harmful training images carry
    # the label the model wrongly predicted (the paper's reading of its figure)?
    all_wrong = [v for v in range(len(test_labels)) if predicted[v] != test_labels[v]]
    share = [
        np.mean(
            [train_labels[i] == predicted[v] for i in np.argsort(influence[:, v], kind="stable")[: args.top]]
        )
        for v in all_wrong
    ]
    base = [np.mean([label == predicted[v] for label in train_labels]) for v in all_wrong]
    save_json(
        name,
        {
            "config": {k: v for k, v in vars(args).items() if k != "datasets"},
            "machine": machine(),
            "test_accuracy": float(np.mean([p == t for p, t in zip(predicted, test_labels, strict=True)])),
            "misclassified": len(all_wrong),
            "top_harmful_share_with_predicted_label": float(np.mean(share)) if share else None,
            "share_of_training_rows_with_predicted_label": float(np.mean(base)) if base else None,
            "shown": shown,
        },
    )
    print(
        f"test accuracy {np.mean([p == t for p, t in zip(predicted, test_labels, strict=True)]):.3f}; "
        f"{len(all_wrong)} misclassified; their top-{args.top} harmful training images carry the wrongly "
        f"predicted label {np.mean(share):.1%} of the time (all training rows: {np.mean(base):.1%})"
    )


def complete(run: Path) -> bool:
    config = run / "config.json"
    return config.is_file() and json.loads(config.read_text()).get("status") == "complete"


def prediction_labels(run: Path, test_path: Path) -> list[str]:
    """The full network's predicted label of each test row, in file order (``tod-clean predict``)."""
    import csv

    text = tod_clean("predict", str(test_path), "--run", str(run), "-o", "-")
    return [row["predicted_label"] for row in csv.DictReader(io.StringIO(text))]


if __name__ == "__main__":
    main()
