"""Benchmark 3: do hidden sub-networks stay ignorant of their instance, and are half-networks useful?

For each cell of a grid (mask placement, keep probability, learning rate, freezing), train on a seeded
rt_polarity subset with 10% of labels flipped and evaluate after every epoch:

- on the training rows: mean full, exposed and hidden loss (hidden loss on the *clean* rows is the one
  that must look like an unseen row's loss);
- on held-out rt_polarity rows (clean): the full network's loss, and the loss of half-networks with
  unseen instance keys (exposed and hidden sub-networks of keys no row trained with);
- ignorance gap  = held-out half-network loss - hidden loss on clean training rows (0 = ignorant;
  positive = the hidden sub-networks know their instance);
- usefulness gap = held-out half-network loss - held-out full-network loss (0 = half-nets as good as the
  full network);
- label-error AUROC of hidden_loss, full_loss and self_influence for the flipped rows.

    python bench/ignorance.py --stage placement       # ~60 min on 2 CPU cores
    python bench/ignorance.py --stage keep            # keep probability 0.7 / 0.9
    python bench/ignorance.py --stage ideas           # freezing below the masks, learning rates
    python bench/ignorance.py --report                # tables + plots from bench/results/ignorance.json
    python bench/ignorance.py --stage placement --quick   # < 10 min smoke size
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    DEFAULT_DATASETS,
    RESULTS,
    WORK,
    flip_labels,
    machine,
    ranking_metrics,
    read_jsonl,
    split_rest,
    stratified_subset,
    train_config,
    train_run,
    write_jsonl,
)

# name: TrainConfig overrides. Learning rates: encoder 5e-5, head 1e-3 unless stated.
STAGES: dict[str, dict[str, dict[str, Any]]] = {
    "placement": {
        "none": {"scope": "none"},
        "head": {"scope": "head"},
        "layers:1": {"scope": "layers:1"},
        "layers:2": {"scope": "layers:2"},
        "layers:3": {"scope": "layers:3"},
        "layers:6": {"scope": "layers:6"},
        "ffn:1": {"scope": "ffn:1"},
        "ffn:2": {"scope": "ffn:2"},
        "ffn:3": {"scope": "ffn:3"},
        "ffn:6": {"scope": "ffn:6"},
    },
    "keep": {
        "head p=0.7": {"scope": "head", "keep_prob": 0.7},
        "head p=0.9": {"scope": "head", "keep_prob": 0.9},
        "layers:2 p=0.7": {"scope": "layers:2", "keep_prob": 0.7},
        "layers:2 p=0.9": {"scope": "layers:2", "keep_prob": 0.9},
        "ffn:2 p=0.7": {"scope": "ffn:2", "keep_prob": 0.7},
        "ffn:2 p=0.9": {"scope": "ffn:2", "keep_prob": 0.9},
        "ffn:6 p=0.9": {"scope": "ffn:6", "keep_prob": 0.9},
        "layers:6 p=0.9": {"scope": "layers:6", "keep_prob": 0.9},
    },
    "ideas": {
        "layers:2 frozen below": {"scope": "layers:2", "freeze": "below"},
        "ffn:2 frozen below": {"scope": "ffn:2", "freeze": "below"},
        "ffn:3 frozen below": {"scope": "ffn:3", "freeze": "below"},
        "ffn:6 units only": {"scope": "ffn:6", "freeze": "unmasked"},
        "ffn:2 units only": {"scope": "ffn:2", "freeze": "unmasked"},
        "head, frozen encoder": {"scope": "head", "freeze": "unmasked"},
        "layers:2 lr 2e-5": {"scope": "layers:2", "learning_rate": 2e-5},
        "ffn:2 lr 2e-5": {"scope": "ffn:2", "learning_rate": 2e-5},
        "head lr 2e-5": {"scope": "head", "learning_rate": 2e-5},
    },
}


def _base_name(cell: str) -> str:
    """A cell's name without the " [N epochs]" that runs shorter than the grid's 4 epochs carry."""
    return re.sub(r" \[\d+ epochs\]$", "", cell)


def prepare(datasets: Path, rows: int, heldout: int, noise: float, seed: int) -> dict[str, Any]:
    source = read_jsonl(datasets / "rt_polarity.jsonl")
    train_rows = stratified_subset(source, rows, seed)
    heldout_rows = stratified_subset(split_rest(source, train_rows), heldout, seed + 1)
    noisy, flipped = flip_labels(train_rows, noise, seed)
    folder = WORK / f"ignorance-{rows}-{seed}"
    return {
        "train_path": write_jsonl(folder / "train.jsonl", noisy),
        "heldout_path": write_jsonl(folder / "heldout.jsonl", heldout_rows),
        "flipped": flipped,
        "folder": folder,
    }


def evaluation_inputs(data: dict[str, Any], run_path: Path) -> dict[str, tuple[Any, np.ndarray, np.ndarray]]:
    """(encoded rows, label ids, instance keys) of the training and held-out files, for a run's tokenizer
    and labels; held-out rows get keys no training row used, so their half-networks are unseen ones."""
    from tod_clean.config import DataColumns
    from tod_clean.encoding import encode_texts
    from tod_clean.instances import instances_from_table
    from tod_clean.io.inputs import read_table
    from tod_clean.masks import key_from_id
    from tod_clean.run.rundir import RunDir

    run = RunDir(run_path)
    info = run.read_info()
    tokenizer = run.load_tokenizer()
    inputs = {}
    for name in ("train", "heldout"):
        instances = instances_from_table(
            read_table(str(data[f"{name}_path"])), DataColumns(id_col="id"), info.labels
        )
        encoded = encode_texts(tokenizer, instances.texts, None, info.train.max_length)
        keys = instances.instance_keys
        if name == "heldout":
            keys = np.array([key_from_id(f"heldout:{v}") for v in instances.ids], dtype=np.int64)
        inputs[name] = (encoded, instances.labels, keys)
    return inputs


def epoch_evaluator(data: dict[str, Any], run_path: Path, cell: str, records: list[dict[str, Any]]) -> Any:
    """An on_epoch_end callback that appends one record of losses, gaps and AUROCs per epoch."""
    from tod_clean.influence.self_scores import self_scores

    cache: dict[str, Any] = {}

    def evaluate(model: Any, epoch: int) -> None:
        if not cache:
            cache.update(evaluation_inputs(data, run_path))
        train = self_scores(model, *cache["train"])
        held = self_scores(model, *cache["heldout"])
        flipped = data["flipped"]
        clean = ~flipped
        record: dict[str, Any] = {
            "cell": cell,
            "epoch": epoch,
            "train_full_loss": float(train.full_loss.mean()),
            "train_full_loss_clean": float(train.full_loss[clean].mean()),
            "heldout_full_loss": float(held.full_loss.mean()),
            "heldout_full_accuracy": float((held.full_probs.argmax(1) == cache["heldout"][1]).mean()),
            "auroc_full_loss": ranking_metrics(train.full_loss, flipped)["auroc"],
        }
        if train.hidden_loss is not None and held.hidden_loss is not None:
            assert train.exposed_loss is not None and held.exposed_loss is not None
            heldout_half = float(np.concatenate([held.exposed_loss, held.hidden_loss]).mean())
            hidden_clean = float(train.hidden_loss[clean].mean())
            record.update(
                {
                    "train_exposed_loss": float(train.exposed_loss.mean()),
                    "train_hidden_loss": float(train.hidden_loss.mean()),
                    "train_exposed_loss_clean": float(train.exposed_loss[clean].mean()),
                    "train_hidden_loss_clean": hidden_clean,
                    "heldout_half_loss": heldout_half,
                    "heldout_exposed_loss": float(held.exposed_loss.mean()),
                    "heldout_hidden_loss": float(held.hidden_loss.mean()),
                    "ignorance_gap": heldout_half - hidden_clean,
                    "usefulness_gap": heldout_half - float(held.full_loss.mean()),
                    "auroc_hidden_loss": ranking_metrics(train.hidden_loss, flipped)["auroc"],
                    "auroc_self_influence": ranking_metrics(train.hidden_loss - train.exposed_loss, flipped)[
                        "auroc"
                    ],
                }
            )
        records.append(record)
        print(json.dumps(record), flush=True)

    return evaluate


def run_stage(args: argparse.Namespace) -> None:
    results_path = RESULTS / ("ignorance-quick.json" if args.quick else "ignorance.json")
    existing = json.loads(results_path.read_text()) if results_path.exists() else {"cells": {}}
    data = prepare(args.datasets, args.rows, args.heldout, args.noise, args.seed)
    cells = STAGES[args.stage]
    if args.only:
        cells = {name: cells[name] for name in args.only}
    for name, overrides in cells.items():
        options = {"epochs": args.epochs, "seed": args.seed, **overrides}
        cell = name if args.epochs == 4 else f"{name} [{args.epochs} epochs]"
        records: list[dict[str, Any]] = []
        run_path = data["folder"] / ("run-" + cell.replace(" ", "_").replace(":", "-"))
        callback = epoch_evaluator(data, run_path, cell, records)
        result, timer = train_run(
            data["train_path"], run_path, train_config(**options), on_epoch_end=callback
        )
        existing["cells"][cell] = {
            "stage": args.stage,
            "options": options,
            "epochs": records,
            "train_seconds": sum(e["seconds"] for e in result.info.epochs),
            "wall_seconds_with_evaluation": timer.wall,
        }
        existing.update(
            {
                "machine": machine(),
                "data": {"rows": args.rows, "heldout": args.heldout, "noise": args.noise, "seed": args.seed},
            }
        )
        results_path.write_text(json.dumps(existing, indent=1) + "\n")


def report(quick: bool) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    name = "ignorance-quick" if quick else "ignorance"
    results = json.loads((RESULTS / f"{name}.json").read_text())
    cells = results["cells"]
    lines = [
        "| cell | epoch | AUROC hidden_loss | AUROC full_loss | AUROC self_influence | hidden loss, clean train "
        "| held-out half-net / full | ignorance gap | usefulness gap | held-out acc |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]

    def num(record: dict[str, Any], key: str) -> str:
        return f"{record[key]:.2f}" if key in record else "-"

    for cell, value in cells.items():
        for record in value["epochs"]:
            half = f"{record['heldout_half_loss']:.2f}" if "heldout_half_loss" in record else "-"
            lines.append(
                f"| {cell} | {record['epoch']} | {num(record, 'auroc_hidden_loss')} | {num(record, 'auroc_full_loss')} "
                f"| {num(record, 'auroc_self_influence')} | {num(record, 'train_hidden_loss_clean')} "
                f"| {half} / {record['heldout_full_loss']:.2f} | {num(record, 'ignorance_gap')} "
                f"| {num(record, 'usefulness_gap')} | {record['heldout_full_accuracy']:.3f} |"
            )
    (RESULTS / f"{name}.md").write_text("\n".join(lines) + "\n")

    summary = [
        "| cell | epochs | AUROC hidden / full / self (ep 2) | ignorance gap ep 2 (last) "
        "| usefulness gap ep 2 (last) | held-out acc ep 2 (last) |",
        "|---|---|---|---|---|---|",
    ]
    for cell, value in cells.items():
        records = value["epochs"]
        at2 = next((r for r in records if r["epoch"] == 2), records[-1])
        last = records[-1]

        def pair(key: str, at2: dict[str, Any] = at2, last: dict[str, Any] = last) -> str:
            if key not in at2:
                return "-"
            return f"{at2[key]:.2f}" + (f" ({last[key]:.2f})" if last is not at2 else "")

        summary.append(
            f"| {_base_name(cell)} | {value['options']['epochs']} "
            f"| {num(at2, 'auroc_hidden_loss')} / {num(at2, 'auroc_full_loss')} / {num(at2, 'auroc_self_influence')} "
            f"| {pair('ignorance_gap')} | {pair('usefulness_gap')} "
            f"| {at2['heldout_full_accuracy']:.3f}"
            + (f" ({last['heldout_full_accuracy']:.3f})" if last is not at2 else "")
            + " |"
        )
    (RESULTS / f"{name}-summary.md").write_text("\n".join(summary) + "\n")

    masked = [c for c, v in cells.items() if "train_hidden_loss" in v["epochs"][0]]
    columns = min(4, len(masked))
    rows = (len(masked) + columns - 1) // columns
    fig, axes = plt.subplots(rows, columns, figsize=(4 * columns, 3.2 * rows), squeeze=False, sharey=True)
    for axis, cell in zip(axes.flat, masked, strict=False):
        epochs = cells[cell]["epochs"]
        xs = [e["epoch"] for e in epochs]
        axis.plot(xs, [e["train_full_loss"] for e in epochs], "k-o", label="full (train)")
        axis.plot(xs, [e["train_exposed_loss"] for e in epochs], "b-o", label="exposed (train)")
        axis.plot(xs, [e["train_hidden_loss_clean"] for e in epochs], "r-o", label="hidden (clean train)")
        axis.plot(xs, [e["heldout_half_loss"] for e in epochs], "r--s", label="half-nets (held-out)")
        axis.plot(xs, [e["heldout_full_loss"] for e in epochs], "k--s", label="full (held-out)")
        axis.set_title(cell)
        axis.set_xlabel("epoch")
        axis.set_xticks(xs)
    for axis in axes.flat[len(masked) :]:
        axis.axis("off")
    axes[0][0].set_ylabel("mean cross-entropy")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(RESULTS / f"{name}-curves.png", dpi=110)

    fig, axis = plt.subplots(figsize=(7.5, 5.5))
    for cell in masked:
        last = cells[cell]["epochs"][-1]
        if last["epoch"] != 2:  # every cell at the end of epoch 2 (the default recipe's length)
            last = next((e for e in cells[cell]["epochs"] if e["epoch"] == 2), last)
        short = cells[cell]["options"]["epochs"] == 2
        axis.scatter(last["ignorance_gap"], last["usefulness_gap"], s=30, marker="o" if short else "x")
        axis.annotate(_base_name(cell), (last["ignorance_gap"], last["usefulness_gap"]), fontsize=7)
    axis.axvline(0, color="grey", lw=0.5)
    axis.axhline(0, color="grey", lw=0.5)
    axis.set_xlabel("ignorance gap after epoch 2 (held-out half-net loss - hidden loss on clean train rows)")
    axis.set_ylabel("usefulness gap (held-out half-net loss - full loss)")
    axis.set_title("both gaps near 0 is the goal (o: 2-epoch runs, x: epoch 2 of 4-epoch runs)", fontsize=9)
    fig.tight_layout()
    fig.savefig(RESULTS / f"{name}-gaps.png", dpi=110)
    print((RESULTS / f"{name}.md").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--stage", choices=sorted(STAGES))
    parser.add_argument("--only", nargs="*", help="run only these cells of the stage")
    parser.add_argument("--report", action="store_true", help="write tables and plots from saved results")
    parser.add_argument("--quick", action="store_true", help="smoke size: 400 rows, 2 epochs, 2 cells")
    parser.add_argument("--datasets", type=Path, default=DEFAULT_DATASETS)
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--heldout", type=int, default=500)
    parser.add_argument("--noise", type=float, default=0.1)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.quick:
        args.rows, args.heldout, args.epochs = 400, 200, 2
        args.only = args.only or list(STAGES[args.stage or "placement"])[1:3]
    if args.stage:
        run_stage(args)
    if args.report:
        report(args.quick)


if __name__ == "__main__":
    main()
