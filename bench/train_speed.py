"""Benchmark 8: training speed of the lora scope against an ordinary full fine-tune and an ordinary LoRA
fine-tune (and the head scope), measured side by side.

Each round trains every configuration for one epoch on the same rows with the same seed, in a rotating
order (so a slow moment of the machine does not always hit the same configuration); the figure is the
median over rounds of the training loop's rows per second, and of its ratio to the ordinary full
fine-tune of the same round.

    python bench/train_speed.py                # 1,000 rt_polarity rows, 3 rounds (~15 min on 2 cores)
    python bench/train_speed.py --quick        # 200 rows, 2 rounds
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    DEFAULT_DATASETS,
    RESULTS,
    WORK,
    machine,
    read_jsonl,
    stratified_subset,
    train_config,
    train_run,
    write_jsonl,
)

CONFIGS: dict[str, dict[str, Any]] = {
    "full fine-tune (none)": {"scope": "none"},
    "LoRA fine-tune (lora-plain)": {"scope": "lora-plain"},
    "head": {"scope": "head"},
    "lora": {"scope": "lora"},
    "lora, 2 groups": {"scope": "lora", "mask_groups": 2},
}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--datasets", type=Path, default=DEFAULT_DATASETS)
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    name = "train_speed"
    if args.quick:
        args.rows, args.rounds, name = 200, 2, "train_speed-quick"
    rows = stratified_subset(read_jsonl(args.datasets / "rt_polarity.jsonl"), args.rows, 0)
    train_path = write_jsonl(WORK / f"train-speed-{args.rows}" / "train.jsonl", rows)
    speeds: dict[str, list[float]] = {config: [] for config in CONFIGS}
    ratios: dict[str, list[float]] = {config: [] for config in CONFIGS}
    names = list(CONFIGS)
    for round_index in range(args.rounds):
        order = names[round_index % len(names) :] + names[: round_index % len(names)]
        seconds: dict[str, float] = {}
        for config in order:
            result, _ = train_run(
                train_path,
                WORK
                / f"train-speed-{args.rows}"
                / ("run-" + "".join(c if c.isalnum() else "-" for c in config)),
                train_config(epochs=1, seed=0, device=args.device, max_length=64, **CONFIGS[config]),
            )
            seconds[config] = result.info.epochs[0]["seconds"]
            speeds[config].append(args.rows / seconds[config])
            print(f"round {round_index} {config}: {speeds[config][-1]:.1f} rows/s", flush=True)
        for config in names:
            ratios[config].append(seconds["full fine-tune (none)"] / seconds[config])
    summary = {
        config: {
            "rows_per_second": speeds[config],
            "median_rows_per_second": statistics.median(speeds[config]),
            "median_speed_ratio_to_full_fine_tune": statistics.median(ratios[config]),
        }
        for config in names
    }
    (RESULTS / f"{name}.json").write_text(
        json.dumps(
            {
                "config": vars(args) | {"datasets": str(args.datasets)},
                "machine": machine(),
                "results": summary,
            },
            indent=1,
        )
        + "\n"
    )
    lines = [
        f"{args.rows} rt_polarity rows, 1 epoch, batch 32, max length 64, {args.rounds} rounds in rotating order.",
        "",
        "| configuration | rows/s (median) | speed vs full fine-tune (median ratio) |",
        "|---|---|---|",
    ]
    for config, value in summary.items():
        lines.append(
            f"| {config} | {value['median_rows_per_second']:.1f} | {value['median_speed_ratio_to_full_fine_tune']:.2f}x |"
        )
    (RESULTS / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
