"""Benchmark 17: the ``channels`` scope on CIFAR-10 images: do its hidden sub-networks stay ignorant of their
rows, and does the network still learn?

tiny-resnet from scratch on a seeded, class-balanced subset of ``cifar10_train.parquet`` (clean labels), the
head scope beside it, and two ablations of the channels scope's batch norm (``SubNetworkBatchNorm2d``):

- ``channels-gradient-through-statistics``: the same per-sub-network statistics with the gradient flowing
  through them, as a stock batch norm's does (a row's loss then reaches the units it hides, through its
  batch mates);
- ``channels-stock-batch-norm``: the encoder's own ``BatchNorm2d`` (every row in every channel's statistics,
  running statistics included).

Per cell, after training (evaluation mode): the full network's accuracy on held-out test images and on the
training rows; each training row's hidden and exposed sub-network on its own row; the hidden and exposed
sub-networks of instance keys no training row used on the test images. **Ignorance gap** (as in section
3) = held-out hidden loss - hidden loss on the own training rows: 0 when a hidden sub-network knows its row
no better than an unseen one.

    python bench/channels_scope.py                 # 1,000 images, 7 cells, seed 0 (about 20 min on 2 cores)
    python bench/channels_scope.py --report-only
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DEFAULT_DATASETS, RESULTS, WORK, machine, quiet_transformers, save_json  # noqa: E402
from image_label_errors import balanced_subset, write_parquet  # noqa: E402

NAME = "channels_scope"
# (variant, epochs, keep probability)
CELLS = (
    ("head", 3, 0.5),
    ("channels", 3, 0.5),
    ("channels-gradient-through-statistics", 3, 0.5),
    ("channels-stock-batch-norm", 3, 0.5),
    ("channels", 3, 0.8),
    ("head", 10, 0.5),
    ("channels", 10, 0.5),
)
UNUSED_KEY = 10**12  # instance keys from here on are no training row's


def ablate(variant: str) -> None:
    """Patch the channels scope's batch norm for an ablation (this process only)."""
    import torch

    from tod_clean.scopes import batch_norm, channels

    if variant == "channels-stock-batch-norm":
        channels.ChannelsScope.prepare = lambda self, model, lora: None  # type: ignore[method-assign]
    if variant == "channels-gradient-through-statistics":

        def forward(self: Any, x: torch.Tensor) -> torch.Tensor:
            units = self.units() if self.training else None
            if units is None:
                return torch.nn.BatchNorm2d.forward(self, x)
            mean, var, count = self.batch_statistics(x.float(), units.float())
            self._update_running(mean.detach(), var.detach(), count)
            scale = (torch.rsqrt(var + self.eps) * self.weight).view(1, -1, 1, 1)
            return ((x.float() - mean.view(1, -1, 1, 1)) * scale + self.bias.view(1, -1, 1, 1)).to(x.dtype)

        batch_norm.SubNetworkBatchNorm2d.forward = forward  # type: ignore[method-assign]


def measure(args: argparse.Namespace, variant: str, epochs: int, keep_prob: float) -> dict[str, Any]:
    import pyarrow.parquet as pq
    import torch

    from tod_clean.config import TrainConfig
    from tod_clean.instances import instances_from_table
    from tod_clean.io.images import ImageColumn
    from tod_clean.io.inputs import read_table
    from tod_clean.masks import MaskMode
    from tod_clean.pixels import encode_images
    from tod_clean.run.rundir import RunDir
    from tod_clean.training.loop import train

    folder = WORK / f"channels-scope-{args.rows}-{args.seed}"
    train_path, test_path = folder / "train.parquet", folder / "test.parquet"
    if not train_path.is_file():
        datasets = args.datasets
        write_parquet(
            balanced_subset(pq.read_table(datasets / "cifar10_train.parquet"), args.rows, args.seed),
            train_path,
        )
        write_parquet(
            balanced_subset(pq.read_table(datasets / "cifar10_test.parquet"), args.test_rows, 0), test_path
        )
    scope = "head" if variant == "head" else "channels"
    config = TrainConfig(
        scope=scope,
        keep_prob=keep_prob,
        epochs=epochs,
        batch_size=args.batch_size,
        learning_rate=args.lr,
        head_learning_rate=args.lr,
        seed=args.seed,
        device="cpu",
    )
    run = RunDir(folder / f"run-{variant}-{epochs}-{keep_prob}")
    table = read_table(str(train_path))
    result = train(config, table, run, train_path=str(train_path), overwrite=True)
    model, info = result.model.eval(), result.info
    processor = run.load_preprocessor(info)
    test_table = read_table(str(test_path))
    train_rows = instances_from_table(
        table, info.train.columns, info.labels, mask_scheme=info.train.mask_scheme
    )
    test_rows = instances_from_table(test_table, info.train.columns, info.labels, with_keys=False)
    encoded = {
        "train": (encode_images(processor, ImageColumn(table, "image")), np.asarray(train_rows.labels)),
        "test": (encode_images(processor, ImageColumn(test_table, "image")), np.asarray(test_rows.labels)),
    }
    own_keys = torch.as_tensor(train_rows.instance_keys)

    def evaluate(part: str, keys: torch.Tensor | None, mode: Any) -> tuple[float, float]:
        pixels, labels = encoded[part]
        losses, hits = [], []
        with torch.no_grad():
            for start in range(0, len(labels), 256):
                rows = np.arange(start, min(len(labels), start + 256))
                logits = model(pixels.batch(rows), None if keys is None else keys[rows], mode)
                target = torch.as_tensor(labels[rows])
                losses.append(torch.nn.functional.cross_entropy(logits, target, reduction="none").numpy())
                hits.append((logits.argmax(-1) == target).numpy())
        return float(np.concatenate(losses).mean()), float(np.concatenate(hits).mean())

    unused = torch.arange(args.test_rows, dtype=torch.int64) + UNUSED_KEY
    cell: dict[str, Any] = {"variant": variant, "epochs": epochs, "keep_prob": keep_prob}
    cell["train_seconds"] = round(sum(epoch["seconds"] for epoch in info.epochs), 1)
    cell["test_full"] = evaluate("test", None, MaskMode.FULL)
    cell["train_full"] = evaluate("train", None, MaskMode.FULL)
    for mode in (MaskMode.HIDDEN, MaskMode.EXPOSED):
        cell[f"own_{mode.value}"] = evaluate("train", own_keys, mode)
        cell[f"unseen_{mode.value}"] = evaluate("test", unused, mode)
    cell["ignorance_gap"] = cell["unseen_hidden"][0] - cell["own_hidden"][0]
    return cell


def report(results: dict[str, Any]) -> str:
    config = results["config"]
    lines = [
        f"Data: {config['rows']} CIFAR-10 training images (class-balanced, clean labels, seed {config['seed']}), "
        f"tiny-resnet from scratch, batch {config['batch_size']}, learning rate {config['lr']}; "
        f"{config['test_rows']} test images. Accuracy; the gap in mean cross-entropy; one seed; train "
        "seconds on a shared machine (noisy).",
        "",
        "| cell | epochs | keep | test acc (full) | train acc (full) | own rows: exposed / hidden acc | "
        "unseen: exposed / hidden acc | ignorance gap (loss) | train s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for cell in results["cells"]:
        lines.append(
            f"| {cell['variant']} | {cell['epochs']} | {cell['keep_prob']} | {cell['test_full'][1]:.3f} "
            f"| {cell['train_full'][1]:.3f} | {cell['own_exposed'][1]:.3f} / {cell['own_hidden'][1]:.3f} "
            f"| {cell['unseen_exposed'][1]:.3f} / {cell['unseen_hidden'][1]:.3f} "
            f"| {cell['ignorance_gap']:+.3f} | {cell['train_seconds']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--datasets", type=Path, default=DEFAULT_DATASETS)
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--test-rows", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cell", type=int, default=None, help="run only this cell (index into CELLS)")
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args()
    path = RESULTS / f"{NAME}.json"
    if not args.report_only:
        if args.cell is None:  # each cell in its own process: the ablations patch the scope
            import subprocess

            for index in range(len(CELLS)):
                subprocess.run([sys.executable, __file__, *sys.argv[1:], "--cell", str(index)], check=True)
        else:
            quiet_transformers()
            variant, epochs, keep_prob = CELLS[args.cell]
            ablate(variant)
            results = json.loads(path.read_text()) if path.is_file() else {}
            results["config"] = {
                k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k != "cell"
            }
            results["machine"] = machine()
            cells = [
                c
                for c in results.get("cells", [])
                if (c["variant"], c["epochs"], c["keep_prob"]) != CELLS[args.cell]
            ]
            cells.append(measure(args, variant, epochs, keep_prob))
            order = {cell: index for index, cell in enumerate(CELLS)}
            results["cells"] = sorted(cells, key=lambda c: order[(c["variant"], c["epochs"], c["keep_prob"])])
            save_json(NAME, results)
            return
    results = json.loads(path.read_text())
    (RESULTS / f"{NAME}.md").write_text(report(results), encoding="utf-8")
    print(report(results))


if __name__ == "__main__":
    main()
