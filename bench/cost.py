"""Benchmark 4: what turn-over dropout costs in training and scoring time and memory.

1. Training overhead: the same fine-tune (same rows, steps, seed) with and without instance masks, run in
   alternating pairs; median wall-time ratio of the training loop over the pairs.
2. Head-scope influence from cached validation features: time and peak memory for N training x V
   validation instances up to N = 100,000 and V = 10,000 (each size in a fresh process, so its peak RSS is
   its own), pairs per second.
3. Layer and feed-forward scopes: pairs per second of the batched pair path on the real encoder, at sizes
   that fit.
4. Self-influence of every training row, and influence on a validation set, as a fraction of one training
   epoch, per scope.

    python bench/cost.py            # ~40 min on 2 CPU cores
    python bench/cost.py --quick    # < 10 min
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    DEFAULT_DATASETS,
    RESULTS,
    WORK,
    machine,
    peak_rss_mib,
    read_jsonl,
    save_json,
    score,
    stratified_subset,
    train_config,
    train_run,
    write_jsonl,
)


def child_head_gemm(num_train: int, num_val: int, chunk_mib: int) -> dict[str, Any]:
    """Run in a fresh process: head-scope influence of N x V pairs from random cached features."""
    import torch

    from tod_clean.influence.head_gemm import head_influence

    generator = torch.Generator().manual_seed(0)
    width = 384
    features = torch.rand((num_val, width), generator=generator) * 2 - 1
    labels = torch.randint(0, 2, (num_val,), generator=generator)
    weight = torch.randn((2, width), generator=generator) * 0.05
    bias = torch.zeros(2)
    keys = torch.arange(num_train, dtype=torch.int64)
    baseline = peak_rss_mib()
    start = time.perf_counter()
    values = head_influence(
        features, labels, weight, bias, keys, keep_prob=0.5, mask_seed=0, chunk_mib=chunk_mib
    )
    seconds = time.perf_counter() - start
    assert np.isfinite(values).all()
    return {"seconds": seconds, "peak_rss_mib": peak_rss_mib(), "rss_before_mib": baseline}


def head_gemm_grid(sizes: list[tuple[int, int]], chunk_mib: int) -> list[dict[str, Any]]:
    rows = []
    for num_train, num_val in sizes:
        output = subprocess.run(
            [sys.executable, __file__, "--child", str(num_train), str(num_val), str(chunk_mib)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        result = json.loads(output.strip().splitlines()[-1])
        result.update(
            {"train": num_train, "val": num_val, "pairs_per_second": num_train * num_val / result["seconds"]}
        )
        print(json.dumps(result), flush=True)
        rows.append(result)
    return rows


def training_overhead(train_path: Path, scopes: list[str], pairs: int) -> dict[str, Any]:
    """Alternate ordinary and turn-over-dropout fine-tunes; ratios of training-loop seconds per pair."""
    results: dict[str, Any] = {}
    for scope in scopes:
        ratios, plain, masked = [], [], []
        for repeat in range(pairs):
            times = {}
            for name in ("none", scope):
                result, _ = train_run(
                    train_path,
                    WORK / f"cost-{name.replace(':', '-')}",
                    train_config(scope=name, epochs=1, seed=repeat),
                )
                times[name] = result.info.epochs[0]["seconds"]
            plain.append(times["none"])
            masked.append(times[scope])
            ratios.append(times[scope] / times["none"])
            print(f"overhead {scope} pair {repeat}: {times}", flush=True)
        results[scope] = {
            "ordinary_seconds": plain,
            "tod_seconds": masked,
            "ratios": ratios,
            "median_ratio": statistics.median(ratios),
        }
    return results


def scoring_fractions(
    train_path: Path, val_path: Path, pair_val_path: Path, scopes: list[str]
) -> dict[str, Any]:
    """Per scope: one training epoch, then self-influence of all rows and influence on the validation set.

    Scopes scored pair by pair through encoder layers (layers:K with K > 1, ffn:K) use the smaller
    ``pair_val_path``: a pair costs two passes through the masked layers there.
    """
    from tod_clean.config import ScoreConfig
    from tod_clean.io.inputs import read_table
    from tod_clean.run.rundir import RunDir
    from tod_clean.score import score_run

    results = {}
    for scope in scopes:
        run_path = WORK / f"cost-fraction-{scope.replace(':', '-')}"
        result, _ = train_run(train_path, run_path, train_config(scope=scope, epochs=1))
        epoch_seconds = result.info.epochs[0]["seconds"]
        self_result, self_time = score(run_path, train_path)
        pair_path = scope not in ("head", "layers:1")
        start = time.perf_counter()
        val_result = score_run(
            RunDir(run_path),
            read_table(str(train_path)),
            val_table=read_table(str(pair_val_path if pair_path else val_path)),
            config=ScoreConfig(),
        )
        with_val = time.perf_counter() - start
        results[scope] = {
            "epoch_seconds": epoch_seconds,
            "self_score_seconds": self_time.wall,
            "self_fraction_of_epoch": self_time.wall / epoch_seconds,
            "score_with_val_seconds": with_val,
            "val_fraction_of_epoch": with_val / epoch_seconds,
            "train_rows": len(self_result.frame),
            "val_rows": val_result.meta["val_rows"],
            "pairs_per_second_incl_encoding": len(self_result.frame) * val_result.meta["val_rows"] / with_val,
        }
        print(scope, json.dumps(results[scope]), flush=True)
    return results


def report(name: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = json.loads((RESULTS / f"{name}.json").read_text())
    lines = [
        "Training overhead (training-loop seconds of one epoch, same rows and steps, alternating pairs):",
        "",
        "| scope | ordinary s (per pair) | turn-over dropout s (per pair) | median ratio |",
        "|---|---|---|---|",
    ]
    for scope, value in results["overhead"].items():
        lines.append(
            f"| {scope} | {', '.join(f'{x:.1f}' for x in value['ordinary_seconds'])} | "
            f"{', '.join(f'{x:.1f}' for x in value['tod_seconds'])} | {value['median_ratio']:.3f} |"
        )
    lines += [
        "",
        "Head-scope influence from cached validation features (fresh process per size):",
        "",
        "| N train | V validation | seconds | pairs / s | peak RSS MiB (before compute) |",
        "|---|---|---|---|---|",
    ]
    for row in results["head_gemm"]:
        lines.append(
            f"| {row['train']:,} | {row['val']:,} | {row['seconds']:.2f} | {row['pairs_per_second']:.3g} "
            f"| {row['peak_rss_mib']:.0f} ({row['rss_before_mib']:.0f}) |"
        )
    lines += [
        "",
        "Scoring as a fraction of one training epoch (real MiniLM, end to end incl. model load and encoding):",
        "",
        "| scope | N train | epoch s | self-influence s (fraction of epoch) | V validation | with validation s (fraction) | pairs / s |",
        "|---|---|---|---|---|---|---|",
    ]
    for scope, value in results["fractions"].items():
        lines.append(
            f"| {scope} | {value['train_rows']} | {value['epoch_seconds']:.1f} | {value['self_score_seconds']:.1f} ({value['self_fraction_of_epoch']:.2f}) "
            f"| {value['val_rows']} | {value['score_with_val_seconds']:.1f} ({value['val_fraction_of_epoch']:.2f}) | {value['pairs_per_second_incl_encoding']:.3g} |"
        )
    (RESULTS / f"{name}.md").write_text("\n".join(lines) + "\n")

    grid = results["head_gemm"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for num_val in sorted({r["val"] for r in grid}):
        rows = [r for r in grid if r["val"] == num_val]
        left.loglog([r["train"] for r in rows], [r["seconds"] for r in rows], "-o", label=f"V = {num_val:,}")
        right.semilogx(
            [r["train"] for r in rows], [r["peak_rss_mib"] for r in rows], "-o", label=f"V = {num_val:,}"
        )
    left.set_xlabel("training instances N")
    left.set_ylabel("seconds")
    left.set_title("head-scope influence time")
    right.set_xlabel("training instances N")
    right.set_ylabel("peak RSS (MiB)")
    right.set_ylim(bottom=0)
    right.set_title("peak memory: bounded chunks, not N x V")
    left.legend()
    right.legend()
    fig.tight_layout()
    fig.savefig(RESULTS / f"{name}.png", dpi=110)
    print((RESULTS / f"{name}.md").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--child", nargs=3, type=int, help=argparse.SUPPRESS)
    parser.add_argument("--datasets", type=Path, default=DEFAULT_DATASETS)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument(
        "--head-gemm-only",
        action="store_true",
        help="re-measure only the head-scope grid into the saved results",
    )
    parser.add_argument("--chunk-mib", type=int, default=256)
    parser.add_argument("--scopes", nargs="+", help="scopes to time (default head layers:1 layers:2 ffn:2)")
    parser.add_argument(
        "--pair-val-rows", type=int, default=10, help="validation rows for scopes scored pair by pair"
    )
    parser.add_argument("--pairs", type=int, help="paired training runs per scope (default 3)")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child_head_gemm(*args.child)))
        return
    name = "cost" + ("-quick" if args.quick else "")
    if args.head_gemm_only:
        results = json.loads((RESULTS / f"{name}.json").read_text())
        sizes = [(row["train"], row["val"]) for row in results["head_gemm"]]
        results["head_gemm"] = head_gemm_grid(sizes, args.chunk_mib)
        save_json(name, results)
    elif not args.report_only:
        source = read_jsonl(args.datasets / "rt_polarity.jsonl")
        products = read_jsonl(args.datasets / "amazon_electronics.jsonl")
        rows = 300 if args.quick else 1000
        train_path = write_jsonl(WORK / f"cost-train-{rows}.jsonl", stratified_subset(source, rows, 0))
        val_rows = [
            {"id": r["id"], "text": r["text"], "label": r["label"]}
            for r in stratified_subset(products, 50 if args.quick else 200, 0)
        ]
        val_path = write_jsonl(WORK / "cost-val.jsonl", val_rows)
        pair_val_path = write_jsonl(WORK / "cost-val-pairs.jsonl", val_rows[: args.pair_val_rows])
        scopes = args.scopes or (
            ["head", "layers:2"] if args.quick else ["head", "layers:1", "layers:2", "ffn:2"]
        )
        if args.quick:
            sizes = [(1000, 100), (10000, 100), (10000, 1000)]
        else:
            sizes = [(n, v) for v in (100, 1000, 10000) for n in (1000, 10000, 100000)]
        results = {
            "machine": machine(),
            "train_rows": rows,
            "val_rows": len(val_rows),
            "head_gemm": head_gemm_grid(sizes, args.chunk_mib),
            "overhead": training_overhead(train_path, scopes, args.pairs or (1 if args.quick else 3)),
            "fractions": scoring_fractions(train_path, val_path, pair_val_path, scopes),
        }
        save_json(name, results)
    report(name)


if __name__ == "__main__":
    main()
