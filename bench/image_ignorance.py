"""Benchmark 20: do the from-scratch image model's hidden sub-networks stay ignorant, epoch by epoch?

The definitions of benchmark 3 (``bench/ignorance.py``), on images: tiny-resnet trained from scratch on a
class-balanced CIFAR-10 subset (Krizhevsky 2009; clean labels), evaluated after every epoch on the training
images and on as many test images (held out), all in mean cross-entropy:

- hidden loss (own rows): each training image under its own hidden sub-network;
- held-out half-net loss: the test images under exposed and hidden sub-networks of instance keys no training
  image used;
- **ignorance gap** = held-out half-net loss - hidden loss on the own rows (0: a hidden sub-network knows its
  image no better than an unseen one; positive: it has learned it);
- **usefulness gap** = held-out half-net loss - held-out full-network loss (0: half-networks predict as well
  as the full network).

Cells: ``head`` (only the head masked, the encoder shared: the default scope), ``channels`` (every
convolution's output channels masked, so every parameter sits in a masked unit), and both with
``--mask-groups`` (K disjoint unit groups, each image trains one; keep probability 1/K). Recipe of
benchmark 16: batch 64, learning rate 2e-3 for encoder and head. One seed.

    python bench/image_ignorance.py                 # 1,000 images, 10 epochs, 5 cells
    python bench/image_ignorance.py --report-only
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DEFAULT_DATASETS, RESULTS, WORK, machine, quiet_transformers, train_config, train_run  # noqa: E402
from image_label_errors import balanced_subset, write_parquet  # noqa: E402

NAME = "image_ignorance"
# cell name -> train options
CELLS: dict[str, dict[str, Any]] = {
    "head": {"scope": "head"},
    "head, 2 groups": {"scope": "head", "mask_groups": 2},
    "channels": {"scope": "channels"},
    "channels, 2 groups": {"scope": "channels", "mask_groups": 2},
    "channels, 4 groups": {"scope": "channels", "mask_groups": 4},
}
UNUSED_KEY = 10**12  # instance keys from here on are no training image's


def epoch_evaluator(train_path: Path, test_path: Path, run_path: Path, cell: str, records: list) -> Any:
    """An on_epoch_end callback that appends one record of losses and gaps per epoch."""
    from tod_clean.influence.self_scores import self_scores
    from tod_clean.instances import instances_from_table
    from tod_clean.io.images import ImageColumn
    from tod_clean.io.inputs import read_table
    from tod_clean.pixels import encode_images
    from tod_clean.run.rundir import RunDir

    cache: dict[str, Any] = {}

    def inputs() -> None:
        run = RunDir(run_path)
        info = run.read_info()
        processor = run.load_preprocessor(info)
        for part, path in (("train", train_path), ("heldout", test_path)):
            table = read_table(str(path))
            rows = instances_from_table(
                table, info.train.columns, info.labels, mask_scheme=info.train.mask_scheme
            )
            keys = np.asarray(rows.instance_keys, dtype=np.int64)
            if part == "heldout":
                keys = np.arange(len(table), dtype=np.int64) + UNUSED_KEY
            cache[part] = (
                encode_images(processor, ImageColumn(table, "image")),
                np.asarray(rows.labels),
                keys,
            )

    def evaluate(model: Any, epoch: int) -> None:
        if not cache:
            inputs()
        train = self_scores(model, *cache["train"], batch_size=256)
        held = self_scores(model, *cache["heldout"], batch_size=256)
        assert (
            train.hidden_loss is not None and held.hidden_loss is not None and held.exposed_loss is not None
        )
        heldout_half = float(np.concatenate([held.exposed_loss, held.hidden_loss]).mean())
        records.append(
            {
                "cell": cell,
                "epoch": epoch,
                "train_full_loss": float(train.full_loss.mean()),
                "train_hidden_loss": float(train.hidden_loss.mean()),
                "heldout_full_loss": float(held.full_loss.mean()),
                "heldout_half_loss": heldout_half,
                "heldout_full_accuracy": float((held.full_probs.argmax(1) == cache["heldout"][1]).mean()),
                "heldout_hidden_accuracy": float((held.hidden_probs.argmax(1) == cache["heldout"][1]).mean()),
                "ignorance_gap": heldout_half - float(train.hidden_loss.mean()),
                "usefulness_gap": heldout_half - float(held.full_loss.mean()),
            }
        )
        last = records[-1]
        print(
            f"{cell} epoch {epoch}: ignorance gap {last['ignorance_gap']:+.3f}, usefulness gap "
            f"{last['usefulness_gap']:+.3f}, held-out accuracy {last['heldout_full_accuracy']:.3f}",
            flush=True,
        )

    return evaluate


def report() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = json.loads((RESULTS / f"{NAME}.json").read_text())
    config = results["config"]
    lines = [
        f"{config['rows']} CIFAR-10 training images (class-balanced, clean labels, seed {config['seed']}), "
        f"{config['test_rows']} test images held out; tiny-resnet from scratch, batch 64, learning rate "
        f"{config['lr']}; one seed. Gaps in mean cross-entropy (see the script's docstring).",
        "",
        "| cell | ignorance gap, epochs 1 / 2 / 5 / last | usefulness gap, epochs 1 / 2 / 5 / last "
        "| held-out accuracy full / hidden (last) | train s |",
        "|---|---|---|---|---|",
    ]
    figure, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for cell, value in results["cells"].items():
        epochs = value["epochs"]
        picks = [
            epochs[i] for i in sorted({0, min(1, len(epochs) - 1), min(4, len(epochs) - 1), len(epochs) - 1})
        ]
        ignorance = " / ".join(format(e["ignorance_gap"], "+.2f") for e in picks)
        usefulness = " / ".join(format(e["usefulness_gap"], "+.2f") for e in picks)
        last = epochs[-1]
        lines.append(
            f"| {cell} | {ignorance} | {usefulness} "
            f"| {last['heldout_full_accuracy']:.3f} / {last['heldout_hidden_accuracy']:.3f} "
            f"| {value['train_seconds']:.0f} |"
        )
        x = [e["epoch"] for e in epochs]
        for axis, key in zip(axes, ("ignorance_gap", "usefulness_gap", "heldout_full_accuracy"), strict=True):
            axis.plot(x, [e[key] for e in epochs], marker="o", label=cell)
    for axis, title in zip(
        axes,
        ("ignorance gap (0 = ignorant)", "usefulness gap (0 = as useful as full)", "held-out accuracy"),
        strict=True,
    ):
        axis.set_title(title)
        axis.set_xlabel("epoch")
        axis.axhline(0.0, color="grey", linewidth=0.5)
    axes[2].legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(RESULTS / f"{NAME}.png", dpi=110)
    (RESULTS / f"{NAME}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--datasets", type=Path, default=DEFAULT_DATASETS)
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--test-rows", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cells", nargs="+", choices=list(CELLS), default=list(CELLS))
    parser.add_argument("--reuse", action="store_true", help="keep the cells already measured")
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args()
    if not args.report_only:
        import pyarrow.parquet as pq

        quiet_transformers()
        folder = WORK / f"image-ignorance-{args.rows}-{args.seed}"
        train_path, test_path = folder / "train.parquet", folder / "test.parquet"
        write_parquet(
            balanced_subset(pq.read_table(args.datasets / "cifar10_train.parquet"), args.rows, args.seed),
            train_path,
        )
        write_parquet(
            balanced_subset(pq.read_table(args.datasets / "cifar10_test.parquet"), args.test_rows, 0),
            test_path,
        )
        path = RESULTS / f"{NAME}.json"
        config = {
            k: str(v) if isinstance(v, Path) else v
            for k, v in vars(args).items()
            if k not in ("cells", "reuse", "report_only")
        }
        previous = json.loads(path.read_text()) if path.is_file() else {}
        results = (
            previous if args.reuse and previous.get("config") == config else {"config": config, "cells": {}}
        )
        for cell in args.cells:
            if cell in results["cells"]:
                continue
            records: list[dict[str, Any]] = []
            run_path = folder / ("run-" + "".join(c if c.isalnum() else "-" for c in cell))
            options = CELLS[cell] | {
                "epochs": args.epochs,
                "seed": args.seed,
                "batch_size": 64,
                "learning_rate": args.lr,
                "head_learning_rate": args.lr,
                "device": "cpu",
            }
            result, timer = train_run(
                train_path,
                run_path,
                train_config(**options),
                on_epoch_end=epoch_evaluator(train_path, test_path, run_path, cell, records),
            )
            results["cells"][cell] = {
                "options": options,
                "epochs": records,
                "train_seconds": sum(e["seconds"] for e in result.info.epochs),
                "wall_seconds_with_evaluation": timer.wall,
            }
            results["machine"] = machine()
            path.write_text(json.dumps(results, indent=1) + "\n")
    report()


if __name__ == "__main__":
    main()
