"""Benchmark 1: how well do tod-clean's signals rank flipped labels, against what a user would use instead?

A seeded, stratified subset of rt_polarity with a fraction of labels flipped (seeded). Rankings compared:

- tod-clean ``self_influence``, ``hidden_loss`` and ``full_loss`` for each scope given;
- the per-row training loss of an ordinary fine-tune with the same recipe (tod-clean ``--scope none``);
- cleanlab: ``find_label_issues`` and ``get_label_quality_scores`` on K-fold cross-validated predicted
  probabilities from ordinary fine-tunes with the same model and recipe;
- random scores.

Metrics: AUROC, average precision, precision/recall at k = number of flipped rows; wall and CPU time of each
pipeline, all side by side in one run, over several seeds (mean ± standard deviation).

    python bench/label_errors.py                   # 4,000 rows, 10% noise, 3 seeds, head scope (~80 min, 2 cores)
    python bench/label_errors.py --scopes head layers:1 layers:2 ffn:2     # ~125 min
    python bench/label_errors.py --noise 0.2
    python bench/label_errors.py --quick           # 600 rows, 1 seed, 1 scope, 3 folds (< 10 min)
    python bench/label_errors.py --device cuda --rows 10662 --seeds 0 1 2 3 4   # scale up on a GPU
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
    Timer,
    evaluate,
    flip_labels,
    fmt,
    machine,
    ranking_metrics,
    read_jsonl,
    save_json,
    score,
    stratified_subset,
    train_config,
    train_run,
    write_jsonl,
)

SIGNALS = ("self_influence", "hidden_loss", "full_loss")


def run_seed(args: argparse.Namespace, seed: int) -> dict[str, Any]:
    source = read_jsonl(args.datasets / "rt_polarity.jsonl")
    rows, flipped = flip_labels(stratified_subset(source, args.rows, seed), args.noise, seed)
    folder = WORK / f"label-errors-{args.rows}-{int(args.noise * 100)}-{args.epochs}-{seed}"
    train_path = write_jsonl(folder / "train.jsonl", rows)
    recipe = {"epochs": args.epochs, "seed": seed, "device": args.device}
    methods: dict[str, Any] = {}

    for scope in args.scopes:
        result, train_time = train_run(
            train_path,
            folder / f"run-{scope.replace(':', '-')}",
            train_config(scope=scope, **recipe),
            reuse=args.reuse,
        )
        scores, score_time = score(folder / f"run-{scope.replace(':', '-')}", train_path)
        total = Timer(train_time.wall + score_time.wall, train_time.cpu + score_time.cpu)
        for signal in SIGNALS:
            methods[f"tod-clean {scope} {signal}"] = {
                **ranking_metrics(scores.frame[signal].to_numpy(), flipped),
                "wall_seconds": total.wall,
                "cpu_seconds": total.cpu,
            }
        print(
            f"seed {seed} {scope}: "
            + ", ".join(f"{s} {methods[f'tod-clean {scope} {s}']['auroc']:.3f}" for s in SIGNALS),
            flush=True,
        )

    run_path = folder / "run-ordinary"
    _, train_time = train_run(train_path, run_path, train_config(scope="none", **recipe), reuse=args.reuse)
    scores, score_time = score(run_path, train_path)
    methods["ordinary fine-tune training loss"] = {
        **ranking_metrics(scores.frame["full_loss"].to_numpy(), flipped),
        "wall_seconds": train_time.wall + score_time.wall,
        "cpu_seconds": train_time.cpu + score_time.cpu,
    }
    print(f"seed {seed} ordinary: {methods['ordinary fine-tune training loss']['auroc']:.3f}", flush=True)

    if not args.skip_cleanlab:
        methods.update(cleanlab_methods(rows, flipped, folder, recipe, args.folds, seed, args.reuse))
    rng = np.random.default_rng([seed, 99])
    methods["random"] = {
        **ranking_metrics(rng.random(len(rows)), flipped),
        "wall_seconds": 0.0,
        "cpu_seconds": 0.0,
    }
    return {"seed": seed, "flipped": int(flipped.sum()), "methods": methods}


def cleanlab_methods(
    rows: list[dict[str, Any]],
    flipped: np.ndarray,
    folder: Path,
    recipe: dict[str, Any],
    folds: int,
    seed: int,
    reuse: bool = False,
) -> dict[str, Any]:
    """K-fold out-of-sample probabilities from ordinary fine-tunes, then cleanlab."""
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores
    from sklearn.model_selection import StratifiedKFold

    labels = np.array([0 if row["label"] == "negative" else 1 for row in rows])
    pred_probs = np.zeros((len(rows), 2), dtype=np.float64)
    total = Timer()
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    for fold, (fit_index, held_index) in enumerate(splitter.split(np.zeros(len(rows)), labels)):
        fit_path = write_jsonl(folder / f"fold{fold}-fit.jsonl", [rows[i] for i in fit_index])
        held_path = write_jsonl(folder / f"fold{fold}-held.jsonl", [rows[i] for i in held_index])
        run_path = folder / f"run-fold{fold}"
        _, train_time = train_run(fit_path, run_path, train_config(scope="none", **recipe), reuse=reuse)
        evaluation, eval_time = evaluate(run_path, held_path)
        assert evaluation.labels == ["negative", "positive"]
        pred_probs[held_index] = evaluation.probs
        total += train_time
        total += eval_time
    quality = get_label_quality_scores(labels, pred_probs)
    issues = find_label_issues(labels, pred_probs, return_indices_ranked_by="self_confidence")
    found = np.zeros(len(rows), dtype=bool)
    found[issues] = True
    timing = {"wall_seconds": total.wall, "cpu_seconds": total.cpu}
    print(
        f"cleanlab: quality AUROC {ranking_metrics(-quality, flipped)['auroc']:.3f}, {found.sum()} issues",
        flush=True,
    )
    return {
        f"cleanlab label quality ({folds}-fold)": {**ranking_metrics(-quality, flipped), **timing},
        f"cleanlab find_label_issues ({folds}-fold)": {
            "flagged": int(found.sum()),
            "precision": float(flipped[found].mean()) if found.any() else 0.0,
            "recall": float(found[flipped].mean()),
            **timing,
        },
    }


def report(name: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = json.loads((RESULTS / f"{name}.json").read_text())
    seeds = results["seeds"]
    methods = list(seeds[0]["methods"])
    lines = [
        f"Data: {results['config']['rows']} rt_polarity rows, {results['config']['noise']:.0%} labels flipped, "
        f"{len(seeds)} seeds ({', '.join(str(s['seed']) for s in seeds)}), {results['config']['epochs']} epochs. "
        "Mean ± standard deviation over seeds.",
        "",
        "| method | AUROC | average precision | precision@k = recall@k | wall s | CPU s |",
        "|---|---|---|---|---|---|",
    ]

    def timing(values: list[float], cpu: list[float]) -> str:
        """Mean ± sd over the seeds timed from scratch (runs reused after an interruption have CPU NaN)."""
        timed_values = [v for v, c in zip(values, cpu, strict=True) if not np.isnan(c)]
        if not timed_values:
            return "-"
        note = (
            f" ({len(timed_values)} seed{'s' * (len(timed_values) > 1)})"
            if len(timed_values) < len(values)
            else ""
        )
        return fmt(timed_values, 0) + note

    for method in methods:
        if "auroc" not in seeds[0]["methods"][method]:
            continue
        col = {key: [s["methods"][method][key] for s in seeds] for key in seeds[0]["methods"][method]}
        lines.append(
            f"| {method} | {fmt(col['auroc'])} | {fmt(col['ap'])} | {fmt(col['precision_at_k'])} "
            f"| {timing(col['wall_seconds'], col['cpu_seconds'])} | {timing(col['cpu_seconds'], col['cpu_seconds'])} |"
        )
    for method in methods:
        if "flagged" in seeds[0]["methods"][method]:
            col = {key: [s["methods"][method][key] for s in seeds] for key in seeds[0]["methods"][method]}
            lines += [
                "",
                f"{method}: flags {fmt(col['flagged'], 0)} rows (flipped: {seeds[0]['flipped']}), "
                f"precision {fmt(col['precision'])}, recall {fmt(col['recall'])}.",
            ]
    (RESULTS / f"{name}.md").write_text("\n".join(lines) + "\n")

    ranked = [m for m in methods if "auroc" in seeds[0]["methods"][m]]
    means = [np.mean([s["methods"][m]["auroc"] for s in seeds]) for m in ranked]
    stds = [
        np.std([s["methods"][m]["auroc"] for s in seeds], ddof=1) if len(seeds) > 1 else 0 for m in ranked
    ]
    fig, axis = plt.subplots(figsize=(8, 0.35 * len(ranked) + 1.2))
    axis.barh(
        range(len(ranked)),
        means,
        xerr=stds,
        color=["tab:blue" if m.startswith("tod") else "tab:grey" for m in ranked],
    )
    axis.set_yticks(range(len(ranked)), ranked, fontsize=8)
    axis.invert_yaxis()
    axis.set_xlim(0.4, 1.0)
    axis.set_xlabel("AUROC for flipped labels (mean ± sd over seeds)")
    axis.set_title(f"label-error detection, {results['config']['noise']:.0%} noise")
    fig.tight_layout()
    fig.savefig(RESULTS / f"{name}.png", dpi=110)
    print((RESULTS / f"{name}.md").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--datasets", type=Path, default=DEFAULT_DATASETS)
    parser.add_argument("--rows", type=int, default=4000)
    parser.add_argument("--noise", type=float, default=0.1)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--scopes", nargs="+", default=["head"])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--skip-cleanlab", action="store_true", help="leave out the K-fold cleanlab baseline")
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="keep complete run directories of an interrupted run (same options, same data) instead of retraining",
    )
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.rows, args.seeds, args.scopes, args.folds = 600, [0], ["head"], 3
    name = f"label_errors-noise{int(round(args.noise * 100))}" + (
        f"-epochs{args.epochs}" if args.epochs != 2 else ""
    )
    name += "-quick" if args.quick else ""
    if not args.report_only:
        seeds = [run_seed(args, seed) for seed in args.seeds]
        config = {k: v for k, v in vars(args).items() if k != "datasets"}
        save_json(name, {"config": config, "machine": machine(), "seeds": seeds})
    report(name)


if __name__ == "__main__":
    main()
