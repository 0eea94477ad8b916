"""Benchmark 19: images per second, training and scoring the embedded from-scratch image model (tiny-resnet).

The same class-balanced CIFAR-10 subset (Krizhevsky 2009, ``cifar10_train.parquet``) and the recipe of
benchmark 16 (batch 64, learning rate 2e-3), one epoch per configuration; each round trains every scope in
a rotating order (so a slow moment of the machine does not always hit the same one) and then scores the
``head`` and ``channels`` runs: self-scores of every training image (``score`` without ``--val``) and
influence on ``--val-rows`` test images (``score --val``, ``N x V`` pairs). Figures are medians over rounds
of images (or pairs) per second, and the ratio of each scope's training speed to ``--scope none`` (an
ordinary training run) in the same round.

    python bench/image_speed.py                # 2,000 images, 500 validation images, 3 rounds
    python bench/image_speed.py --quick        # 300 images, 100 validation images, 2 rounds
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DEFAULT_DATASETS, RESULTS, WORK, machine, score, train_config, train_run  # noqa: E402
from image_label_errors import balanced_subset, write_parquet  # noqa: E402

SCOPES = ("none", "head", "channels")
SCORED = ("head", "channels")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--datasets", type=Path, default=DEFAULT_DATASETS)
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--val-rows", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    name = "image_speed"
    if args.quick:
        args.rows, args.val_rows, args.rounds, name = 300, 100, 2, "image_speed-quick"
    import pyarrow.parquet as pq

    folder = WORK / f"image-speed-{args.rows}"
    train_path = write_parquet(
        balanced_subset(pq.read_table(args.datasets / "cifar10_train.parquet"), args.rows, 0),
        folder / "train.parquet",
    )
    val_path = write_parquet(
        balanced_subset(pq.read_table(args.datasets / "cifar10_test.parquet"), args.val_rows, 0),
        folder / "val.parquet",
    )
    recipe = {
        "epochs": 1,
        "seed": 0,
        "device": args.device,
        "learning_rate": 2e-3,
        "head_learning_rate": 2e-3,
        "batch_size": 64,
    }
    train_speed: dict[str, list[float]] = {scope: [] for scope in SCOPES}
    ratio: dict[str, list[float]] = {scope: [] for scope in SCOPES}
    self_speed: dict[str, list[float]] = {scope: [] for scope in SCORED}
    pair_speed: dict[str, list[float]] = {scope: [] for scope in SCORED}
    for round_index in range(args.rounds):
        order = SCOPES[round_index % len(SCOPES) :] + SCOPES[: round_index % len(SCOPES)]
        seconds: dict[str, float] = {}
        for scope in order:
            result, _ = train_run(train_path, folder / f"run-{scope}", train_config(scope=scope, **recipe))
            seconds[scope] = result.info.epochs[0]["seconds"]
            train_speed[scope].append(args.rows / seconds[scope])
            print(f"round {round_index} train {scope}: {train_speed[scope][-1]:.0f} images/s", flush=True)
        for scope in SCOPES:
            ratio[scope].append(seconds["none"] / seconds[scope])
        for scope in SCORED:
            _, self_time = score(folder / f"run-{scope}", train_path)
            _, val_time = score(folder / f"run-{scope}", train_path, val_path)
            self_speed[scope].append(args.rows / self_time.wall)
            # the pairs' share: what scoring with --val adds to the self-scores
            pair_speed[scope].append(args.rows * args.val_rows / max(val_time.wall - self_time.wall, 1e-9))
            print(
                f"round {round_index} score {scope}: {self_speed[scope][-1]:.0f} images/s self-scores, "
                f"{pair_speed[scope][-1]:,.0f} pairs/s influence",
                flush=True,
            )
    summary: dict[str, Any] = {
        scope: {
            "train_images_per_second": train_speed[scope],
            "median_train_images_per_second": statistics.median(train_speed[scope]),
            "median_train_speed_ratio_to_none": statistics.median(ratio[scope]),
        }
        | (
            {
                "self_score_images_per_second": self_speed[scope],
                "median_self_score_images_per_second": statistics.median(self_speed[scope]),
                "influence_pairs_per_second": pair_speed[scope],
                "median_influence_pairs_per_second": statistics.median(pair_speed[scope]),
            }
            if scope in SCORED
            else {}
        )
        for scope in SCOPES
    }
    (RESULTS / f"{name}.json").write_text(
        json.dumps(
            {
                "config": vars(args) | {"datasets": str(args.datasets)},
                "recipe": recipe,
                "machine": machine(),
                "results": summary,
            },
            indent=1,
        )
        + "\n"
    )
    lines = [
        f"{args.rows} CIFAR-10 training images, {args.val_rows} validation images, tiny-resnet, 1 epoch, "
        f"batch 64, {args.rounds} rounds in rotating order; medians over rounds.",
        "",
        "| scope | training images/s | training speed vs `none` | self-scores images/s | influence pairs/s |",
        "|---|---|---|---|---|",
    ]
    for scope, value in summary.items():
        scored = (
            f"{value['median_self_score_images_per_second']:.0f} | "
            f"{value['median_influence_pairs_per_second']:,.0f}"
            if scope in SCORED
            else "- | -"
        )
        lines.append(
            f"| `{scope}` | {value['median_train_images_per_second']:.0f} | "
            f"{value['median_train_speed_ratio_to_none']:.2f}x | {scored} |"
        )
    (RESULTS / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
