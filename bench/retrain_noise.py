"""How much does retraining move when a few random rows are removed? (the noise floor of section 13)

Section 13's known-harm setting retrains an ordinary fine-tune after removing 1-10% of 1,000 rows and
compares test accuracy per seed; removing 10 random rows moved it by about 2.7 points, which hides any
gain of 1 point. This script measures that noise floor two ways, on the same data (section 13's flip
setting: 1,000 rt_polarity rows, 10% of labels flipped, 2,000 held-out test rows, 2 epochs, max length
64), for ``--draws`` random sets of ``--remove`` rows per seed:

- ``reshuffled``: the rows are removed from the file and the rest retrained (what section 13 does and
  what a user does): the epoch order is drawn anew for the new row count;
- ``coupled``: the rows stay in their batches with their loss left out (``common.rows_left_out``): the
  data order, batches, dropout draws and initialisation are those of the run on all rows.

Reported: per mode, the change in test accuracy (points) and test loss from the run on all rows, its mean
and sd over draws and seeds. A coupled sd far below the reshuffled one is what makes a 1-point gain
visible in a few seeds.

    python bench/retrain_noise.py --seeds 0 1 --draws 4 --reuse
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
    evaluate,
    flip_labels,
    machine,
    mean_std,
    movie_splits,
    rows_left_out,
    save_json,
    train_config,
    train_run,
    write_splits,
)

MODES = ("reshuffled", "coupled")


def run_seed(args: argparse.Namespace, seed: int) -> dict[str, Any]:
    from tod_clean.io.inputs import read_table
    from tod_clean.io.writers import write_subset

    # as section 13 (its 200 validation rows come before the test rows, so the test rows are the same)
    clean, _, test_rows = movie_splits(args.datasets, args.rows, 200, args.test_rows, seed)
    train_rows, _ = flip_labels(clean, 0.1, seed)
    folder = WORK / f"retrain-noise-{args.rows}-{seed}"
    train_path, test_path = write_splits(folder, train=train_rows, test=test_rows)
    config = train_config(scope="none", epochs=args.epochs, seed=seed, max_length=args.max_length)
    table = read_table(str(train_path))

    def measured(name: str, fit: Any) -> dict[str, Any]:
        saved_path = folder / f"{name}.json"
        if args.reuse and saved_path.is_file():
            return json.loads(saved_path.read_text(encoding="utf-8"))
        run_path = folder / f"run-{name}"
        fit(run_path)
        evaluation, _ = evaluate(run_path, test_path)
        result = {"accuracy": evaluation.accuracy, "loss": evaluation.loss}
        saved_path.write_text(json.dumps(result, default=float), encoding="utf-8")
        for weights in run_path.glob("*.safetensors"):
            weights.unlink()
        print(
            f"seed {seed} {name}: accuracy {evaluation.accuracy:.4f}, loss {evaluation.loss:.4f}", flush=True
        )
        return result

    full = measured("all-rows", lambda run_path: train_run(train_path, run_path, config))
    draws = []
    for draw in range(args.draws):
        rng = np.random.default_rng([seed, 777, draw])
        removed = np.sort(rng.choice(len(table), args.remove, replace=False))

        def reshuffled(run_path: Path, removed: np.ndarray = removed) -> None:
            kept_path = folder / "train-kept.jsonl"
            write_subset(table, np.setdiff1d(np.arange(len(table)), removed).tolist(), str(kept_path))
            train_run(kept_path, run_path, config)

        def coupled(run_path: Path, removed: np.ndarray = removed) -> None:
            with rows_left_out(removed):
                train_run(train_path, run_path, config)

        draws.append(
            {
                "removed": removed.tolist(),
                "reshuffled": measured(f"reshuffled-{draw}", reshuffled),
                "coupled": measured(f"coupled-{draw}", coupled),
            }
        )
    return {"seed": seed, "all rows": full, "draws": draws}


def report(name: str) -> None:
    results = json.loads((RESULTS / f"{name}.json").read_text(encoding="utf-8"))
    config, seeds = results["config"], results["seeds"]
    lines = [
        f"{config['rows']} training rows (10% of labels flipped), {config['remove']} random rows removed, "
        f"{config['draws']} draws x {len(seeds)} seeds ({', '.join(str(s['seed']) for s in seeds)}); test "
        f"{config['test_rows']} held-out movie reviews; ordinary fine-tunes, {config['epochs']} epochs, max "
        f"length {config['max_length']}.",
        "",
        "Change from the run on all rows (mean ± sd over every draw of every seed; max |change|):",
        "",
        "| retraining | test accuracy (points) | max abs | test loss (millinats) | max abs |",
        "|---|---|---|---|---|",
    ]
    for mode in MODES:
        accuracy = [
            100 * (d[mode]["accuracy"] - s["all rows"]["accuracy"]) for s in seeds for d in s["draws"]
        ]
        loss = [1000 * (d[mode]["loss"] - s["all rows"]["loss"]) for s in seeds for d in s["draws"]]
        a, b = mean_std(accuracy), mean_std(loss)
        lines.append(
            f"| {mode} | {a[0]:+.2f} ± {a[1]:.2f} | {np.abs(accuracy).max():.2f} | {b[0]:+.1f} ± {b[1]:.1f} "
            f"| {np.abs(loss).max():.1f} |"
        )
    (RESULTS / f"{name}.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print((RESULTS / f"{name}.md").read_text(encoding="utf-8"))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--datasets", type=Path, default=DEFAULT_DATASETS)
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--test-rows", type=int, default=2000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--draws", type=int, default=4)
    parser.add_argument("--remove", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--reuse", action="store_true", help="keep finished retrainings")
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument("--name", default="retrain_noise")
    args = parser.parse_args()
    if not args.report_only:
        seeds = [run_seed(args, seed) for seed in args.seeds]
        config = {k: v for k, v in vars(args).items() if k not in ("datasets", "reuse", "name")}
        save_json(args.name, {"config": config, "machine": machine(), "seeds": seeds})
    report(args.name)


if __name__ == "__main__":
    main()
