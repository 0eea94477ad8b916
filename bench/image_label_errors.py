"""Benchmark 16: label errors in CIFAR-10 images, with the embedded from-scratch image model (tiny-resnet).

A seeded, class-balanced subset of ``cifar10_train.parquet`` (Krizhevsky 2009) with a fraction of the labels
flipped, in one of two ways:

- ``uniform``: the rows to flip are drawn from all rows; each gets another class, drawn uniformly;
- ``pairs`` (class-dependent, as in Patrini et al. 2017): the rows are drawn from truck, bird, deer, cat and
  dog only, and become automobile, airplane, horse, dog and cat (the same share of all rows flipped).

Rankings compared, for every setting and seed (all trained with the same recipe, side by side):

- tod-clean ``self_influence``, ``hidden_loss`` and ``full_loss`` of a ``--scope head`` run;
- the per-row training loss of an ordinary model (``--scope none``);
- the cross-validated loss (``-log p(given label)`` from K ordinary models, each scoring the fold it did not
  train on), and cleanlab's label quality and ``find_label_issues`` on those K-fold probabilities;
- random scores.

Metrics: AUROC, average precision, and recall at 10% inspected (the share of the flipped rows among the
10% ranked worst; kronfluence reports about 80% of 10% flips found this way on CIFAR-10 with EK-FAC
self-influence), and each model's test accuracy on a class-balanced test subset.

Every run directory is kept under ``bench/results/raw``; ``--reuse`` picks up an interrupted benchmark (a run
trained with the same options on the same file is not trained again), and each finished setting and seed is
written to the results at once, so the report grows as the benchmark runs.

    python bench/image_label_errors.py --reuse                        # 10,000 images, 4 settings, 3 seeds
    python bench/image_label_errors.py --quick                        # 1,000 images, 1 setting, 1 seed
    python bench/image_label_errors.py --report-only
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
    fmt,
    machine,
    save_json,
    score,
    train_config,
    train_run,
)

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
PAIRS = {"truck": "automobile", "bird": "airplane", "deer": "horse", "cat": "dog", "dog": "cat"}
SIGNALS = ("self_influence", "hidden_loss", "full_loss")
SETTINGS = ("uniform-10", "uniform-20", "pairs-10", "pairs-20")


def balanced_subset(table: Any, size: int, seed: int) -> Any:
    """``size`` rows of a pyarrow table, the same number from each class (seeded), in a seeded order."""
    rng = np.random.default_rng([seed, 31])
    labels = np.asarray(table.column("label").to_pylist())
    per_class = size // len(CLASSES)
    picked = np.concatenate(
        [rng.choice(np.flatnonzero(labels == name), per_class, replace=False) for name in CLASSES]
    )
    return table.take(rng.permutation(picked))


def flip(labels: list[str], kind: str, fraction: float, seed: int) -> tuple[list[str], np.ndarray]:
    """The labels with ``fraction`` of all rows flipped the ``kind`` way (seeded); the flipped mask ``[N]``."""
    rng = np.random.default_rng([seed, 7919, int(fraction * 100), kind == "pairs"])
    count = int(round(fraction * len(labels)))
    candidates = (
        np.arange(len(labels)) if kind == "uniform" else np.flatnonzero([label in PAIRS for label in labels])
    )
    flipped = np.zeros(len(labels), dtype=bool)
    flipped[rng.choice(candidates, size=count, replace=False)] = True
    noisy = list(labels)
    for index in np.flatnonzero(flipped):
        if kind == "uniform":
            others = [name for name in CLASSES if name != labels[index]]
            noisy[index] = others[rng.integers(len(others))]
        else:
            noisy[index] = PAIRS[labels[index]]
    return noisy, flipped


def with_labels(table: Any, labels: list[str]) -> Any:
    import pyarrow as pa

    return table.set_column(table.schema.get_field_index("label"), "label", pa.array(labels))


def write_parquet(table: Any, path: Path) -> Path:
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return path


def recall_at(scores: np.ndarray, positives: np.ndarray, share: float) -> float:
    top = np.argsort(-scores, kind="stable")[: int(round(share * len(scores)))]
    return float(positives[top].sum() / positives.sum())


def metrics(scores: np.ndarray, positives: np.ndarray) -> dict[str, float]:
    """AUROC, average precision and recall at 10% inspected (higher score = more likely flipped)."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    return {
        "auroc": float(roc_auc_score(positives, scores)),
        "ap": float(average_precision_score(positives, scores)),
        "recall_at_10pct": recall_at(scores, positives, 0.10),
    }


def run_setting(args: argparse.Namespace, setting: str, seed: int, test_path: Path) -> dict[str, Any]:
    import pyarrow.parquet as pq

    kind, percent = setting.split("-")
    fraction = int(percent) / 100
    clean = balanced_subset(pq.read_table(args.datasets / "cifar10_train.parquet"), args.rows, seed)
    true_labels = clean.column("label").to_pylist()
    noisy_labels, flipped = flip(true_labels, kind, fraction, seed)
    folder = WORK / f"image-label-errors-{args.rows}-{setting}-{args.epochs}-{seed}"
    train_path = write_parquet(with_labels(clean, noisy_labels), folder / "train.parquet")
    recipe = {
        "epochs": args.epochs,
        "seed": seed,
        "device": args.device,
        "learning_rate": args.lr,
        "head_learning_rate": args.lr,
        "batch_size": args.batch_size,
    }
    methods: dict[str, Any] = {}
    accuracy: dict[str, float] = {}

    def timing(total: Timer) -> dict[str, float]:
        return {"wall_seconds": total.wall, "cpu_seconds": total.cpu}

    run_path = folder / "run-head"
    _, train_time = train_run(train_path, run_path, train_config(scope="head", **recipe), reuse=args.reuse)
    scores, score_time = score(run_path, train_path)
    for signal in SIGNALS:
        methods[f"tod-clean head {signal}"] = {
            **metrics(scores.frame[signal].to_numpy(), flipped),
            **timing(Timer(train_time.wall + score_time.wall, train_time.cpu + score_time.cpu)),
        }
    accuracy["tod-clean head (full network)"] = evaluate(run_path, test_path)[0].accuracy
    print(
        f"{setting} seed {seed} head: "
        + ", ".join(f"{s} {methods[f'tod-clean head {s}']['auroc']:.3f}" for s in SIGNALS),
        flush=True,
    )

    run_path = folder / "run-ordinary"
    _, train_time = train_run(train_path, run_path, train_config(scope="none", **recipe), reuse=args.reuse)
    scores, score_time = score(run_path, train_path)
    methods["ordinary model's training loss"] = {
        **metrics(scores.frame["full_loss"].to_numpy(), flipped),
        **timing(Timer(train_time.wall + score_time.wall, train_time.cpu + score_time.cpu)),
    }
    accuracy["ordinary model"] = evaluate(run_path, test_path)[0].accuracy
    print(f"{setting} seed {seed} ordinary: {methods[next(reversed(methods))]['auroc']:.3f}", flush=True)

    methods.update(cross_validated(args, clean, noisy_labels, flipped, folder, recipe, seed))
    rng = np.random.default_rng([seed, 99])
    methods["random"] = {
        **metrics(rng.random(len(flipped)), flipped),
        "wall_seconds": 0.0,
        "cpu_seconds": 0.0,
    }
    return {
        "setting": setting,
        "seed": seed,
        "flipped": int(flipped.sum()),
        "methods": methods,
        "test_accuracy": accuracy,
    }


def cross_validated(
    args: argparse.Namespace,
    clean: Any,
    noisy_labels: list[str],
    flipped: np.ndarray,
    folder: Path,
    recipe: dict[str, Any],
    seed: int,
) -> dict[str, Any]:
    """K ordinary models, each scoring the fold it did not see: cross-validated loss and cleanlab."""
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores
    from sklearn.model_selection import StratifiedKFold

    labels = np.array([CLASSES.index(label) for label in noisy_labels])
    table = with_labels(clean, noisy_labels)
    pred_probs = np.zeros((len(labels), len(CLASSES)), dtype=np.float64)
    total = Timer()
    splitter = StratifiedKFold(n_splits=args.folds, shuffle=True, random_state=seed)
    for fold, (fit_index, held_index) in enumerate(splitter.split(np.zeros(len(labels)), labels)):
        fit_path = write_parquet(table.take(fit_index), folder / f"fold{fold}-fit.parquet")
        held_path = write_parquet(table.take(held_index), folder / f"fold{fold}-held.parquet")
        run_path = folder / f"run-fold{fold}"
        _, train_time = train_run(fit_path, run_path, train_config(scope="none", **recipe), reuse=args.reuse)
        evaluation, eval_time = evaluate(run_path, held_path)
        order = [evaluation.labels.index(name) for name in CLASSES]
        pred_probs[held_index] = evaluation.probs[:, order]
        total += train_time
        total += eval_time
        print(f"fold {fold}: held-out accuracy {evaluation.accuracy:.3f}", flush=True)
    timing = {"wall_seconds": total.wall, "cpu_seconds": total.cpu}
    given = np.clip(pred_probs[np.arange(len(labels)), labels], 1e-12, 1.0)
    quality = get_label_quality_scores(labels, pred_probs)
    issues = find_label_issues(labels, pred_probs, return_indices_ranked_by="self_confidence")
    found = np.zeros(len(labels), dtype=bool)
    found[issues] = True
    return {
        f"cross-validated loss ({args.folds}-fold)": {**metrics(-np.log(given), flipped), **timing},
        f"cleanlab label quality ({args.folds}-fold)": {**metrics(-quality, flipped), **timing},
        f"cleanlab find_label_issues ({args.folds}-fold)": {
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
    config = results["config"]
    done = results["runs"]
    lines = [
        f"Data: {config['rows']} CIFAR-10 training images (class-balanced subsets, one per seed), "
        f"tiny-resnet from scratch, {config['epochs']} epochs, batch {config['batch_size']}, "
        f"learning rate {config['lr']}; test accuracy on {config['test_rows']} test images. "
        "Mean ± standard deviation over seeds.",
        "",
    ]
    settings = [s for s in SETTINGS if any(run["setting"] == s for run in done)]
    fig, axes = plt.subplots(
        1, max(len(settings), 1), figsize=(4.2 * max(len(settings), 1), 4.2), squeeze=False
    )
    for axis, setting in zip(axes[0], settings, strict=False):
        runs = [run for run in done if run["setting"] == setting]
        seeds = ", ".join(str(run["seed"]) for run in runs)
        lines += [
            f"### {setting.replace('-', ' ')}% flipped ({runs[0]['flipped']} rows; seeds {seeds})",
            "",
            "| method | AUROC | average precision | recall at 10% inspected | wall s |",
            "|---|---|---|---|---|",
        ]
        ranked = [m for m in runs[0]["methods"] if "auroc" in runs[0]["methods"][m]]
        for method in ranked:
            col = {
                key: [run["methods"][method][key] for run in runs]
                for key in ("auroc", "ap", "recall_at_10pct", "wall_seconds")
            }
            lines.append(
                f"| {method} | {fmt(col['auroc'])} | {fmt(col['ap'])} | {fmt(col['recall_at_10pct'])} "
                f"| {fmt(col['wall_seconds'], 0)} |"
            )
        for method, value in runs[0]["methods"].items():
            if "flagged" in value:
                col = {
                    key: [run["methods"][method][key] for run in runs]
                    for key in ("flagged", "precision", "recall")
                }
                lines += [
                    "",
                    f"{method}: flags {fmt(col['flagged'], 0)} rows, precision {fmt(col['precision'])}, "
                    f"recall {fmt(col['recall'])}.",
                ]
        if len(runs) > 1:  # paired per seed: the same flipped rows ranked by both
            pairs = []
            for method in ("tod-clean head hidden_loss", "tod-clean head full_loss"):
                for baseline in ("ordinary model's training loss", "cross-validated loss (5-fold)"):
                    if method in ranked and baseline in ranked:
                        diff = [
                            run["methods"][method]["auroc"] - run["methods"][baseline]["auroc"]
                            for run in runs
                        ]
                        won = sum(d > 0 for d in diff)
                        pairs.append(
                            f"{method.removeprefix('tod-clean head ')} - {baseline}: {np.mean(diff):+.3f} "
                            f"(higher on {won} of {len(diff)} seeds)"
                        )
            lines += ["", "AUROC differences, paired by seed: " + "; ".join(pairs) + "."]
        accuracy = {key: [run["test_accuracy"][key] for run in runs] for key in runs[0]["test_accuracy"]}
        lines += [
            "",
            "Test accuracy: " + "; ".join(f"{key} {fmt(value)}" for key, value in accuracy.items()) + ".",
            "",
        ]
        means = [np.mean([run["methods"][m]["recall_at_10pct"] for run in runs]) for m in ranked]
        axis.barh(
            range(len(ranked)),
            means,
            color=["tab:blue" if m.startswith("tod") else "tab:grey" for m in ranked],
        )
        axis.set_yticks(range(len(ranked)), ranked if axis is axes[0][0] else [""] * len(ranked), fontsize=8)
        axis.invert_yaxis()
        axis.set_xlim(0, 1)
        axis.set_xlabel("recall at 10% inspected")
        axis.set_title(f"{setting}% flipped", fontsize=9)
    fig.tight_layout()
    fig.savefig(RESULTS / f"{name}.png", dpi=110)
    (RESULTS / f"{name}.md").write_text("\n".join(lines) + "\n")
    print((RESULTS / f"{name}.md").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--datasets", type=Path, default=DEFAULT_DATASETS)
    parser.add_argument("--rows", type=int, default=10000)
    parser.add_argument("--test-rows", type=int, default=2000)
    parser.add_argument("--settings", nargs="+", choices=SETTINGS, default=list(SETTINGS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--lr", type=float, default=2e-3, help="encoder and head learning rate")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--reuse", action="store_true", help="keep complete runs of an interrupted benchmark")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.rows, args.test_rows, args.settings, args.seeds, args.folds, args.epochs = (
            1000,
            500,
            ["uniform-10"],
            [0],
            3,
            3,
        )
    name = "image_label_errors" + ("-quick" if args.quick else "")
    if not args.report_only:
        import pyarrow.parquet as pq

        test_path = write_parquet(
            balanced_subset(pq.read_table(args.datasets / "cifar10_test.parquet"), args.test_rows, 0),
            WORK / f"image-label-errors-test-{args.test_rows}.parquet",
        )
        config = {k: v for k, v in vars(args).items() if k != "datasets"}
        path = RESULTS / f"{name}.json"
        previous = json.loads(path.read_text()) if path.is_file() else {}
        same = {k: v for k, v in config.items() if k not in ("settings", "seeds", "reuse", "report_only")}
        runs = previous.get("runs", []) if previous.get("recipe") == same else []
        # seeds outer: every setting of seed 0 comes before any of seed 1, so an early stop still covers all
        for seed in args.seeds:
            for setting in args.settings:
                if any(run["setting"] == setting and run["seed"] == seed for run in runs):
                    continue
                runs.append(run_setting(args, setting, seed, test_path))
                save_json(name, {"config": config, "recipe": same, "machine": machine(), "runs": runs})
    report(name)


if __name__ == "__main__":
    main()
