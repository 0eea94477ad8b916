"""Benchmark 7: is the influence right? Ground truth by retraining: the linear datamodeling score (LDS).

LDS (Ilyas et al. 2022, "Datamodels"; used by TRAK, Park et al. 2023, and kronfluence): train M models on
random 50% subsets S_m of a training set, measure each one's loss on every validation row z, and ask how
well an attribution method predicts those losses from the subsets alone. With tod-clean's convention
(influence(i, z) = L(without i, z) - L(with i, z): positive = i lowers z's loss), the predicted loss of
the model trained on S_m on z is, up to a constant, ``-sum_{i in S_m} influence(i, z)``. LDS is the
Spearman correlation over the M subsets of predicted and measured loss, averaged over validation rows.

Methods (each computes an influence matrix [N, V] from ONE run on all N rows):
- tod-clean ``head`` (exact GEMM path), ``lora`` (``--influence`` method as available);
- gradient similarity on the classifier (TracIn at the last checkpoint, Pruthi et al. 2020) of an
  ordinary fine-tune: g_i . g_z with g = d loss / d (classifier weight, bias);
- random.

Ground truth: ordinary fine-tunes (``--truth none``; ``lora-plain`` for the LoRA model class) with the
same recipe on each subset.

    python bench/lds.py                       # 1,000 rows, 200 validation rows, M = 30 (~40-60 min, 2 cores)
    python bench/lds.py --reuse               # keeps finished subset runs and method runs
    python bench/lds.py --quick               # 200 rows, 40 validation rows, M = 6
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from tod_clean.lds import bootstrap_lds, interval, lds  # noqa: F401 (lds: used by estimators.py)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    DEFAULT_DATASETS,
    RESULTS,
    WORK,
    flip_labels,
    machine,
    movie_reviews,
    read_jsonl,
    split_rest,
    stratified_subset,
    timed,
    train_config,
    train_run,
    write_jsonl,
    write_splits,
)


def val_losses(run_path: Path, val_path: Path) -> np.ndarray:
    """Per-row cross-entropy ``[V]`` of a run's full network on a labeled file."""
    from tod_clean.evaluate import evaluate_run
    from tod_clean.io.inputs import read_table
    from tod_clean.run.rundir import RunDir

    evaluation = evaluate_run(RunDir(run_path), read_table(str(val_path)))
    labels = np.array([evaluation.labels.index(row["label"]) for row in read_jsonl(val_path)])
    picked = evaluation.probs[np.arange(len(labels)), labels].astype(np.float64)
    return -np.log(np.clip(picked, 1e-12, 1.0))


def tod_clean_matrix(run_path: Path, train_path: Path, val_path: Path, method: str | None) -> np.ndarray:
    """tod-clean's [N, V] influence matrix of a run (through ``score_run --matrix``); ``method`` None:
    turn-over dropout's own estimate (``--influence turn-over``)."""
    from tod_clean.config import ScoreConfig
    from tod_clean.io.inputs import read_table
    from tod_clean.run.rundir import RunDir
    from tod_clean.score import score_run

    method = method or "turn-over"
    matrix_path = run_path / f"influence-{method}.npy"
    options: dict[str, Any] = {"influence_method": method}
    score_run(
        RunDir(run_path),
        read_table(str(train_path)),
        val_table=read_table(str(val_path)),
        config=ScoreConfig(**options),
        matrix_path=matrix_path,
    )
    return np.load(matrix_path).astype(np.float64)


def gradient_similarity_matrix(run_path: Path, train_path: Path, val_path: Path) -> np.ndarray:
    """TracIn at the last checkpoint on the classifier layer: [N, V] of g_i . g_z (positive = helps)."""
    import torch

    from tod_clean.config import DataColumns
    from tod_clean.encoding import encode_texts, sorted_batches
    from tod_clean.instances import instances_from_table
    from tod_clean.io.inputs import read_table
    from tod_clean.run.rundir import RunDir

    run = RunDir(run_path)
    info = run.read_complete_info()
    model = run.load_model(info)
    tokenizer = run.load_tokenizer()

    def gradients(path: Path) -> np.ndarray:
        instances = instances_from_table(read_table(str(path)), DataColumns(id_col="id"), info.labels)
        encoded = encode_texts(tokenizer, instances.texts, None, info.train.max_length)
        out = np.zeros((len(encoded), model.classifier.out_features * (model.classifier.in_features + 1)))
        with torch.no_grad():
            for indices in sorted_batches(encoded.lengths, 64):
                batch = encoded.batch(indices)
                features = model.head_features(model.pool(model.encode_lower(batch), batch["attention_mask"]))
                probs = model.classifier(features).softmax(-1)
                residual = probs - torch.nn.functional.one_hot(
                    torch.as_tensor(instances.labels[indices]), probs.shape[1]
                )
                inputs = torch.cat([features, torch.ones(len(indices), 1)], 1)
                out[indices] = torch.einsum("bc,bd->bcd", residual, inputs).reshape(len(indices), -1).numpy()
        return out

    return gradients(train_path) @ gradients(val_path).T


def lds_interval(
    matrix: np.ndarray, subsets: np.ndarray, losses: np.ndarray, *, samples: int = 300, seed: int = 0
) -> tuple[float, float]:
    """95% bootstrap interval of the LDS over the retrained subsets (``tod_clean.lds``, as ``tod-clean
    check`` computes it).

    The standard error over validation rows understates the uncertainty: every validation row shares the
    same M subsets, and a different draw of subsets moves all rows together (blocks of 10 subsets gave LDS
    values 0.3 apart in one run)."""
    return interval(bootstrap_lds({"m": matrix}, subsets, losses, samples=samples, seed=seed)["m"])


def _truth_recipe(args: argparse.Namespace) -> dict[str, Any]:
    """What the ground truth depends on: a saved truth made with another recipe is never mixed in."""
    return {key: getattr(args, key) for key in ("rows", "val_rows", "noise", "epochs", "max_length", "seed")}


def _saved_truth(path: Path, subsets: np.ndarray, args: argparse.Namespace) -> dict[str, np.ndarray]:
    """The subsets' losses measured so far (resume), checked against this run's recipe and subsets."""
    empty = {"losses": np.zeros((0, args.val_rows)), "seconds": np.zeros(0)}
    if not path.exists():
        return empty
    saved = np.load(path)
    if json.loads(str(saved["recipe"])) != _truth_recipe(args):
        raise SystemExit(f"{path}: saved ground truth has another recipe; move it away to start anew")
    done = len(saved["losses"])
    if done > len(subsets) or not np.array_equal(saved["subsets"], subsets[:done]):
        raise SystemExit(f"{path}: saved ground truth used other subsets; move it away to start anew")
    return {"losses": saved["losses"], "seconds": saved["seconds"]}


def _run_seconds(run_path: Path) -> float:
    """The recorded training wall time of a benchmark run (NaN when not recorded)."""
    try:
        return float(json.loads((run_path / "bench-timing.json").read_text())["wall"])
    except (OSError, ValueError, KeyError):
        return float("nan")


def add_setting_arguments(parser: argparse.ArgumentParser) -> None:
    """The options that fix the data and recipe of the setting (and so of its saved ground truth)."""
    parser.add_argument("--datasets", type=Path, default=DEFAULT_DATASETS)
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--val-rows", type=int, default=200)
    parser.add_argument("--noise", type=float, default=0.1)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)


def setting_splits(args: argparse.Namespace) -> tuple[list[dict[str, Any]], np.ndarray, Path, Path, Path]:
    """The setting's training rows (labels flipped), which were flipped, its work folder and the written
    training and validation files: the same for every script that uses this ground truth."""
    source = movie_reviews(args.datasets)
    train_rows, flipped = flip_labels(stratified_subset(source, args.rows, args.seed), args.noise, args.seed)
    val_rows = stratified_subset(split_rest(source, train_rows), args.val_rows, args.seed + 1)
    folder = WORK / f"lds-{args.rows}-{args.seed}"
    train_path, val_path = write_splits(folder, train=train_rows, val=val_rows)
    return train_rows, flipped, folder, train_path, val_path


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_setting_arguments(parser)
    parser.add_argument("--subsets", type=int, default=30)
    parser.add_argument("--truth", nargs="+", default=["none"], choices=["none", "lora-plain"])
    parser.add_argument(
        "--methods",
        nargs="+",
        default=["head", "lora linear", "gradient similarity", "random"],
        help="head, lora exact, lora linear, lora auto, gradient similarity, random",
    )
    parser.add_argument("--device", default="auto")
    parser.add_argument("--reuse", action="store_true")
    parser.add_argument(
        "--truth-only", action="store_true", help="retrain the subsets and save their losses; no methods"
    )
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    name = "lds"
    if args.quick:
        args.rows, args.val_rows, args.subsets, name = 200, 40, 6, "lds-quick"

    train_rows, flipped, folder, train_path, val_path = setting_splits(args)
    recipe = {"epochs": args.epochs, "seed": args.seed, "device": args.device, "max_length": args.max_length}

    rng = np.random.default_rng([args.seed, 4242])
    subsets = np.zeros((args.subsets, args.rows), dtype=bool)
    for m in range(args.subsets):
        subsets[m, rng.choice(args.rows, size=args.rows // 2, replace=False)] = True

    truth: dict[str, np.ndarray] = {}
    truth_seconds: dict[str, float] = {}
    for model_class in args.truth:
        # The measured losses are kept in a small file next to the results (committed), so that the
        # ground truth survives the run directories: a later session adds methods without retraining.
        saved_path = RESULTS / f"lds-truth-{args.rows}-{args.seed}-{model_class}.npz"
        saved = _saved_truth(saved_path, subsets, args)
        losses = np.full((args.subsets, args.val_rows), np.nan)
        losses[: len(saved["losses"])] = saved["losses"]
        seconds = list(saved["seconds"])
        with timed() as timer:
            for m in range(len(saved["losses"]), args.subsets):
                subset_path = write_jsonl(
                    folder / f"subset{m}.jsonl", [train_rows[i] for i in np.flatnonzero(subsets[m])]
                )
                run_path = folder / f"run-subset{m}-{model_class}"
                train_run(
                    subset_path,
                    run_path,
                    train_config(scope=model_class, **{**recipe, "seed": args.seed + m}),
                    reuse=args.reuse,
                )
                losses[m] = val_losses(run_path, val_path)
                seconds.append(_run_seconds(run_path))
                np.savez(
                    saved_path,
                    subsets=subsets[: m + 1],
                    losses=losses[: m + 1],
                    seconds=np.asarray(seconds),
                    recipe=json.dumps(_truth_recipe(args)),
                )
                print(f"subset {m} ({model_class}): mean validation loss {losses[m].mean():.4f}", flush=True)
        truth[model_class] = losses
        truth_seconds[model_class] = float(np.sum(seconds))
    if args.truth_only:
        return

    matrices: dict[str, np.ndarray] = {}
    seconds: dict[str, float] = {}
    for method in args.methods:
        with timed() as timer:
            if method == "random":
                matrices[method] = np.random.default_rng([args.seed, 17]).standard_normal(
                    (args.rows, args.val_rows)
                )
            elif method == "gradient similarity":
                run_path = folder / "run-full-none"
                train_run(train_path, run_path, train_config(scope="none", **recipe), reuse=args.reuse)
                matrices[method] = gradient_similarity_matrix(run_path, train_path, val_path)
            else:
                scope, _, influence_method = method.partition(" ")
                run_path = folder / f"run-full-{scope}"
                train_run(train_path, run_path, train_config(scope=scope, **recipe), reuse=args.reuse)
                matrices[method] = tod_clean_matrix(run_path, train_path, val_path, influence_method or None)
        seconds[method] = timer.wall
        print(f"{method}: matrix in {timer.wall:.0f} s", flush=True)

    table = {
        method: {
            model_class: (
                *lds(matrix, subsets, truth[model_class]),
                *lds_interval(matrix, subsets, truth[model_class]),
            )
            for model_class in truth
        }
        for method, matrix in matrices.items()
    }
    result = {
        "config": {k: str(v) for k, v in vars(args).items()},
        "machine": machine(),
        "flipped": int(flipped.sum()),
        "lds": table,
        "method_seconds": seconds,
        "truth_seconds": truth_seconds,
    }
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=1) + "\n")
    lines = [
        f"{args.rows} rt_polarity training rows ({args.noise:.0%} flipped), {args.val_rows} held-out validation rows, "
        f"M = {args.subsets} retrained models on random 50% subsets, {args.epochs} epochs, seed {args.seed}.",
        "",
        "| method | "
        + " | ".join(
            f"LDS vs retrained `{c}` (mean ± s.e. over validation rows; 95% bootstrap over subsets)"
            for c in truth
        )
        + " | seconds |",
        "|---|" + "---|" * len(truth) + "---|",
    ]
    for method, row in table.items():
        lines.append(
            f"| {method} | "
            + " | ".join(f"{m:.3f} ± {se:.3f} [{low:.2f}, {high:.2f}]" for m, se, low, high in row.values())
            + f" | {seconds[method]:.0f} |"
        )
    (RESULTS / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
