"""Benchmark 7: does the linearized influence (``--influence linear``) rank training rows as the exact
pair path does in the deep scopes, and how much faster is it?

Per scope (``layers:2``, ``ffn:2``, ``lora``): one turn-over-dropout run on a seeded, stratified
rt_polarity subset (default 300 rows, 2 epochs, embedded MiniLM-L6), scored on a seeded, stratified
amazon_electronics subset (default 30 rows) by both paths in the same process, side by side:

- Spearman rank correlation of the per-pair matrices ``[N, V]`` (flattened) and of the mean influence ``[N]``;
- overlap of the most harmful 1% and 5% of training rows (lowest mean influence) of the two rankings;
- pairs per second of each path (wall time of the whole train x validation computation, lower layers
  included); the linear path's time is dominated by one forward and backward pass per validation row.

    python bench/linear_influence.py                 # ~20-25 min on 2 shared CPU cores
    python bench/linear_influence.py --reuse         # keeps finished training runs
    python bench/linear_influence.py --quick         # 60 rows x 10 validation rows, 1 epoch (~3 min)
    python bench/linear_influence.py --report        # tables and decision again from the saved JSON
    python bench/linear_influence.py --scopes ffn:6 --name linear_influence-ffn6   # every block's FFN

Datasets: rt_polarity (Pang & Lee 2005, sentence polarity v1.0); amazon_electronics (Blitzer, Dredze &
Pereira 2007, Multi-Domain Sentiment Dataset, electronics).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    DEFAULT_DATASETS,
    RESULTS,
    WORK,
    machine,
    read_jsonl,
    save_json,
    stratified_subset,
    timed,
    train_config,
    train_run,
    write_jsonl,
)

SCOPES = ("layers:2", "ffn:2", "lora")
NAME = "linear_influence"


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a.ravel(), b.ravel()).statistic)


def top_overlap(exact: np.ndarray, linear: np.ndarray, fraction: float) -> float:
    """Share of the ``fraction`` most harmful rows (lowest mean influence) the two rankings agree on."""
    k = max(1, int(round(fraction * len(exact))))
    first = set(np.argsort(exact, kind="stable")[:k].tolist())
    second = set(np.argsort(linear, kind="stable")[:k].tolist())
    return len(first & second) / k


def pair_matrix(model: Any, keys: np.ndarray, val: Any, labels: np.ndarray, method: str) -> np.ndarray:
    from tod_clean.influence.base import influence_blocks

    matrix = np.zeros((len(keys), len(val)), dtype=np.float32)
    for block in influence_blocks(model, keys, val, labels, method=method, batch_size=32):
        matrix[block.train_start : block.train_start + block.values.shape[0]][:, block.val_index] = (
            block.values.numpy()
        )
    return matrix


def measure(scope: str, args: argparse.Namespace, train_path: Path, val_rows: list[dict[str, Any]]) -> dict:
    import torch

    from tod_clean.encoding import encode_texts
    from tod_clean.instances import instances_from_table
    from tod_clean.io.inputs import read_table
    from tod_clean.run.rundir import RunDir

    config = train_config(scope=scope, epochs=args.epochs, max_length=args.max_length, seed=args.seed)
    run_path = WORK / NAME / scope.replace(":", "")
    _, train_time = train_run(train_path, run_path, config, reuse=args.reuse)
    run = RunDir(run_path)
    info = run.read_complete_info()
    model = run.load_model(info, torch.device("cpu"))
    tokenizer = run.load_tokenizer()
    train = instances_from_table(
        read_table(str(train_path)), info.train.columns, info.labels, mask_scheme=info.train.mask_scheme
    )
    val_path = write_jsonl(WORK / NAME / "val.jsonl", val_rows)
    val = instances_from_table(read_table(str(val_path)), info.train.columns, info.labels, with_keys=False)
    val_encoded = encode_texts(tokenizer, val.texts, val.text_pairs, info.train.max_length)
    pairs = len(train) * len(val)
    with timed() as linear_time:
        linear = pair_matrix(model, train.instance_keys, val_encoded, val.labels, "linear")
    with timed() as exact_time:
        exact = pair_matrix(model, train.instance_keys, val_encoded, val.labels, "exact")
    exact_mean, linear_mean = exact.mean(1), linear.mean(1)
    result = {
        "scope": scope,
        "train_rows": len(train),
        "val_rows": len(val),
        "pairs": pairs,
        "units": sum(count for _, count in model.mask_sites()),
        "train_seconds": train_time.wall,
        "spearman_pairs": spearman(exact, linear),
        "spearman_mean": spearman(exact_mean, linear_mean),
        "pearson_mean": float(np.corrcoef(exact_mean, linear_mean)[0, 1]),
        "top1_overlap": top_overlap(exact_mean, linear_mean, 0.01),
        "top5_overlap": top_overlap(exact_mean, linear_mean, 0.05),
        "exact_seconds": exact_time.wall,
        "linear_seconds": linear_time.wall,
        "exact_pairs_per_s": pairs / exact_time.wall,
        "linear_pairs_per_s": pairs / linear_time.wall,
        "exact_mean_abs": float(np.abs(exact_mean).mean()),
        "linear_mean_abs": float(np.abs(linear_mean).mean()),
    }
    print(json.dumps(result), flush=True)
    return result


def render(results: dict[str, Any]) -> str:
    setup = results["setup"]
    lines = [
        "# Linearized influence for deep scopes",
        "",
        f"Train: {setup['train_rows']} rt_polarity rows (seed {setup['seed']}, {setup['epochs']} epochs, "
        f"max_length {setup['max_length']}, embedded MiniLM-L6, keep_prob 0.5); validation: "
        f"{setup['val_rows']} amazon_electronics rows. Exact = each pair's hidden and exposed losses; "
        "linear = first-order estimate from gate gradients. Same process, CPU.",
        "",
        "| scope | units | Spearman (pairs) | Spearman (mean influence) | top-1% overlap | top-5% overlap "
        "| exact pairs/s | linear pairs/s | speed-up |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in results["scopes"]:
        lines.append(
            f"| {row['scope']} | {row['units']} | {row['spearman_pairs']:.3f} | {row['spearman_mean']:.3f} "
            f"| {row['top1_overlap']:.2f} | {row['top5_overlap']:.2f} | {row['exact_pairs_per_s']:.0f} "
            f"| {row['linear_pairs_per_s']:.0f} | {row['linear_pairs_per_s'] / row['exact_pairs_per_s']:.0f}x |"
        )
    lines += ["", f"Decision: {decision(results['scopes'])}", ""]
    return "\n".join(lines)


def decision(rows: list[dict[str, Any]]) -> str:
    """Which scope kinds ``--influence turn-over`` may compute linearly: those whose every measured scope ranks
    training rows (mean influence) with Spearman >= 0.9 against the exact path."""
    kinds: dict[str, bool] = {}
    for row in rows:
        kind = row["scope"].partition(":")[0]
        kinds[kind] = kinds.get(kind, True) and row["spearman_mean"] >= 0.9
    linear = sorted(kind for kind, holds in kinds.items() if holds)
    exact = sorted(kind for kind, holds in kinds.items() if not holds)
    return (
        f"auto = linear for {', '.join(linear) or 'no scope'} (Spearman of the mean influence >= 0.9); "
        f"exact for head and {', '.join(exact) or 'no other scope'}."
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--datasets", type=Path, default=DEFAULT_DATASETS)
    parser.add_argument("--train-rows", type=int, default=300)
    parser.add_argument("--val-rows", type=int, default=30)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scopes", nargs="+", default=list(SCOPES))
    parser.add_argument("--reuse", action="store_true")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--report", action="store_true", help="re-render the .md from the saved .json")
    parser.add_argument("--name", default=NAME, help="results file stem (default %(default)s)")
    args = parser.parse_args()
    if args.report:
        saved = json.loads((RESULTS / f"{args.name}.json").read_text(encoding="utf-8"))
        saved["decision"] = decision(saved["scopes"])
        save_json(args.name, saved)
        (RESULTS / f"{args.name}.md").write_text(render(saved), encoding="utf-8")
        print(render(saved))
        return
    if args.quick:
        args.train_rows, args.val_rows, args.epochs = 60, 10, 1
    import torch

    torch.manual_seed(args.seed)
    train_rows = stratified_subset(
        read_jsonl(args.datasets / "rt_polarity.jsonl"), args.train_rows, args.seed
    )
    val_rows = stratified_subset(
        read_jsonl(args.datasets / "amazon_electronics.jsonl"), args.val_rows, args.seed + 1
    )
    train_path = write_jsonl(WORK / NAME / f"train-{args.train_rows}.jsonl", train_rows)
    results: dict[str, Any] = {
        "setup": {
            "train_rows": args.train_rows,
            "val_rows": args.val_rows,
            "epochs": args.epochs,
            "max_length": args.max_length,
            "seed": args.seed,
            "command": "python bench/" + Path(__file__).name + " " + " ".join(sys.argv[1:]),
        },
        "machine": machine(),
        "scopes": [],
    }
    for scope in args.scopes:
        results["scopes"].append(measure(scope, args, train_path, val_rows))
        results["decision"] = decision(results["scopes"])
        if not args.quick:
            save_json(args.name, results)
            (RESULTS / f"{args.name}.md").write_text(render(results), encoding="utf-8")
    print(render(results))


if __name__ == "__main__":
    main()
