"""Benchmark 6: does a scope where no trainable parameter learns a row through its hidden sub-network
(``lora``: frozen encoder, masked LoRA rank units and head units) make turn-over dropout's premise true,
and does that pay in finding flipped labels?

Per seed: a seeded, stratified rt_polarity subset (default 2,000 rows) with 10% of labels flipped, and 500
clean held-out rows. Every cell trains once for 5 epochs and is evaluated after every epoch (one 5-epoch
run stands in for shorter runs: its learning-rate schedule is the 5-epoch one, so "epoch 2" is not a
2-epoch run). Per epoch and cell:

- ignorance gap  = held-out half-network loss - hidden loss on clean training rows (0: the hidden
  sub-networks know their own rows no better than unseen rows; negative: worse);
- usefulness gap = held-out half-network loss - held-out full-network loss;
- for ``hidden_loss``, ``full_loss``, ``self_influence``: AUROC, average precision, precision@k for the
  flipped rows;
- cleanlab ``find_label_issues`` on the hidden sub-networks' probabilities (``--pred-probs``) and on the
  full network's in-sample probabilities: rows flagged, precision, recall.

Cells: the ordinary full fine-tune (``none``) and ordinary LoRA fine-tune (``lora-plain``) as references;
``head``, ``layers:1``; ``lora`` (independent masks, keep 0.5) and ``lora`` with 2 disjoint unit groups.

    python bench/lora_study.py --seeds 0            # ~60-70 min per seed on 2 CPU cores
    python bench/lora_study.py --seeds 0 1 2 --reuse    # picks up finished (seed, cell) results
    python bench/lora_study.py --report
    python bench/lora_study.py --quick              # 300 rows, 2 epochs, 2 cells (< 5 min)
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
    fmt,
    machine,
    ranking_metrics,
    train_config,
    train_run,
)
from ignorance import evaluation_inputs, prepare  # noqa: E402

CELLS: dict[str, dict[str, Any]] = {
    "full fine-tune (none)": {"scope": "none"},
    "LoRA fine-tune (lora-plain)": {"scope": "lora-plain"},
    "head": {"scope": "head"},
    "layers:1": {"scope": "layers:1"},
    "lora": {"scope": "lora"},
    "lora, 2 groups": {"scope": "lora", "mask_groups": 2},
    "5-fold CV (none)": {"scope": "none", "folds": 5},
}
SIGNALS = ("hidden_loss", "full_loss", "self_influence", "cv_loss", "cleanlab_quality")


def _find_issues(labels: np.ndarray, probs: np.ndarray, flipped: np.ndarray) -> dict[str, float]:
    from cleanlab.filter import find_label_issues

    issues = find_label_issues(labels, probs.astype(np.float64))
    return {
        "flagged": int(issues.sum()),
        "precision": float(flipped[issues].mean()) if issues.any() else 0.0,
        "recall": float(issues[flipped].mean()),
    }


def epoch_evaluator(data: dict[str, Any], run_path: Path, records: list[dict[str, Any]]) -> Any:
    from tod_clean.influence.self_scores import self_scores

    cache: dict[str, Any] = {}

    def evaluate(model: Any, epoch: int) -> None:
        if not cache:
            cache.update(evaluation_inputs(data, run_path))
        train = self_scores(model, *cache["train"])
        held = self_scores(model, *cache["heldout"])
        flipped = data["flipped"]
        clean = ~flipped
        labels = cache["train"][1]
        record: dict[str, Any] = {
            "epoch": epoch,
            "train_full_loss_clean": float(train.full_loss[clean].mean()),
            "heldout_full_loss": float(held.full_loss.mean()),
            "heldout_full_accuracy": float((held.full_probs.argmax(1) == cache["heldout"][1]).mean()),
            "full_loss": ranking_metrics(train.full_loss, flipped),
            "find_label_issues_in_sample": _find_issues(labels, train.full_probs, flipped),
        }
        if train.hidden_loss is not None and held.hidden_loss is not None:
            assert train.exposed_loss is not None and held.exposed_loss is not None
            assert train.hidden_probs is not None
            heldout_half = float(np.concatenate([held.exposed_loss, held.hidden_loss]).mean())
            hidden_clean = float(train.hidden_loss[clean].mean())
            record.update(
                {
                    "train_exposed_loss_clean": float(train.exposed_loss[clean].mean()),
                    "train_hidden_loss_clean": hidden_clean,
                    "heldout_half_loss": heldout_half,
                    "ignorance_gap": heldout_half - hidden_clean,
                    "usefulness_gap": heldout_half - float(held.full_loss.mean()),
                    "hidden_loss": ranking_metrics(train.hidden_loss, flipped),
                    "self_influence": ranking_metrics(train.hidden_loss - train.exposed_loss, flipped),
                    "find_label_issues_pred_probs": _find_issues(labels, train.hidden_probs, flipped),
                }
            )
        records.append(record)
        shown = {k: (v["auroc"] if isinstance(v, dict) and "auroc" in v else v) for k, v in record.items()}
        print(json.dumps({k: v for k, v in shown.items() if not isinstance(v, dict)}), flush=True)

    return evaluate


def cross_validated(
    data: dict[str, Any], options: dict[str, Any], folds: int, seed: int
) -> tuple[list[dict[str, Any]], float, list[float]]:
    """K ordinary fine-tunes on (K-1)/K of the rows, each evaluated on its held-out fold after every
    epoch: per epoch, the out-of-fold loss of every row (the cross-validated loss baseline of Chong, Hong
    & Manning 2022) and out-of-fold probabilities for cleanlab."""
    from cleanlab.rank import get_label_quality_scores
    from common import read_jsonl, timed, write_jsonl
    from sklearn.model_selection import StratifiedKFold

    from tod_clean.io.inputs import read_table
    from tod_clean.run.rundir import RunDir

    rows = read_jsonl(data["train_path"])
    names = sorted({row["label"] for row in rows})
    labels = np.array([names.index(row["label"]) for row in rows])
    epochs = options["epochs"]
    probs = np.zeros((epochs, len(rows), len(names)))
    speeds: list[float] = []
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    with timed() as timer:
        for fold, (fit_index, held_index) in enumerate(splitter.split(np.zeros(len(rows)), labels)):
            fit_path = write_jsonl(data["folder"] / f"cv{fold}-fit.jsonl", [rows[i] for i in fit_index])
            held_path = write_jsonl(data["folder"] / f"cv{fold}-held.jsonl", [rows[i] for i in held_index])
            run_path = data["folder"] / f"run-study-cv{fold}"

            def on_epoch(
                model: Any,
                epoch: int,
                run_path: Path = run_path,
                held_path: Path = held_path,
                held_index: np.ndarray = held_index,
                fold: int = fold,
            ) -> None:
                from tod_clean.config import DataColumns
                from tod_clean.encoding import encode_texts
                from tod_clean.instances import instances_from_table
                from tod_clean.run.loaded import predict_probs

                run = RunDir(run_path)
                info = run.read_info()
                instances = instances_from_table(
                    read_table(str(held_path)), DataColumns(id_col="id"), info.labels
                )
                encoded = encode_texts(run.load_tokenizer(), instances.texts, None, info.train.max_length)
                probs[epoch - 1, held_index] = predict_probs(model, encoded)
                print(f"cv fold {fold} epoch {epoch}", flush=True)

            result, _ = train_run(fit_path, run_path, train_config(**options), on_epoch_end=on_epoch)
            speeds += [e["rows_per_second"] for e in result.info.epochs]
    flipped = data["flipped"]
    records = []
    for epoch in range(1, epochs + 1):
        picked = np.clip(probs[epoch - 1, np.arange(len(rows)), labels], 1e-12, 1.0)
        quality = get_label_quality_scores(labels, probs[epoch - 1])
        records.append(
            {
                "epoch": epoch,
                "cv_loss": ranking_metrics(-np.log(picked), flipped),
                "cleanlab_quality": ranking_metrics(-quality, flipped),
                "find_label_issues_cv": _find_issues(labels, probs[epoch - 1], flipped),
            }
        )
    return records, timer.wall, speeds


def run(args: argparse.Namespace) -> None:
    path = RESULTS / f"{args.name}.json"
    results = json.loads(path.read_text()) if path.exists() else {"runs": {}}
    results["config"] = {k: str(v) for k, v in vars(args).items()}
    results["machine"] = machine()
    for seed in args.seeds:
        data = prepare(args.datasets, args.rows, args.heldout, args.noise, seed)
        for cell in args.cells:
            key = f"{cell} | seed {seed}"
            if args.reuse and key in results["runs"]:
                print(f"reusing {key}", flush=True)
                continue
            options = {"epochs": args.epochs, "seed": seed, "device": args.device, **CELLS[cell]}
            if "folds" in options:
                folds = options.pop("folds")
                print(f"== {key}", flush=True)
                records, wall, speeds = cross_validated(data, options, folds, seed)
                results["runs"][key] = {
                    "cell": cell,
                    "seed": seed,
                    "options": {**options, "folds": folds},
                    "epochs": records,
                    "train_rows_per_second": speeds,
                    "wall_seconds_with_evaluation": wall,
                }
                path.write_text(json.dumps(results, indent=1) + "\n")
                continue
            run_path = data["folder"] / ("run-study-" + "".join(c if c.isalnum() else "-" for c in cell))
            records: list[dict[str, Any]] = []
            print(f"== {key}", flush=True)
            result, timer = train_run(
                data["train_path"],
                run_path,
                train_config(**options),
                on_epoch_end=epoch_evaluator(data, run_path, records),
            )
            results["runs"][key] = {
                "cell": cell,
                "seed": seed,
                "options": options,
                "epochs": records,
                "train_seconds": sum(e["seconds"] for e in result.info.epochs),
                "train_rows_per_second": [e["rows_per_second"] for e in result.info.epochs],
                "wall_seconds_with_evaluation": timer.wall,
            }
            path.write_text(json.dumps(results, indent=1) + "\n")  # after every cell: resumable


def report(name: str) -> None:
    results = json.loads((RESULTS / f"{name}.json").read_text())
    runs = list(results["runs"].values())
    cells = list(dict.fromkeys(r["cell"] for r in runs))
    seeds = sorted({r["seed"] for r in runs})
    epochs = sorted({e["epoch"] for r in runs for e in r["epochs"]})

    def values(cell: str, epoch: int, getter: Any) -> list[float]:
        out = []
        for r in runs:
            if r["cell"] != cell:
                continue
            for e in r["epochs"]:
                if e["epoch"] == epoch:
                    value = getter(e)
                    if value is not None:
                        out.append(value)
        return out

    def cellfmt(vals: list[float], digits: int = 3) -> str:
        return fmt(vals, digits) if vals else "-"

    lines = [
        f"Seeds: {', '.join(map(str, seeds))} (mean ± sd where more than one). "
        f"{results['config'].get('rows')} rt_polarity rows, {results['config'].get('noise')} flipped; "
        "one 5-epoch run per cell, evaluated after every epoch.",
        "",
        "| cell | epoch | AUROC hidden_loss | AUROC full_loss | AUROC self_influence | AUROC CV loss / cleanlab "
        "| AP hidden / full / CV | P@k hidden / full / CV | ignorance gap | usefulness gap | held-out acc |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for cell in cells:
        for epoch in epochs:
            auroc = {
                s: values(cell, epoch, lambda e, s=s: e[s]["auroc"] if s in e else None) for s in SIGNALS
            }
            ap = {s: values(cell, epoch, lambda e, s=s: e[s]["ap"] if s in e else None) for s in SIGNALS}
            pk = {
                s: values(cell, epoch, lambda e, s=s: e[s]["precision_at_k"] if s in e else None)
                for s in SIGNALS
            }
            if not any(auroc.values()):
                continue
            lines.append(
                f"| {cell} | {epoch} | {cellfmt(auroc['hidden_loss'])} | {cellfmt(auroc['full_loss'])} "
                f"| {cellfmt(auroc['self_influence'])} | {cellfmt(auroc['cv_loss'])} / {cellfmt(auroc['cleanlab_quality'])} "
                f"| {cellfmt(ap['hidden_loss'])} / {cellfmt(ap['full_loss'])} / {cellfmt(ap['cv_loss'])} "
                f"| {cellfmt(pk['hidden_loss'])} / {cellfmt(pk['full_loss'])} / {cellfmt(pk['cv_loss'])} "
                f"| {cellfmt(values(cell, epoch, lambda e: e.get('ignorance_gap')))} "
                f"| {cellfmt(values(cell, epoch, lambda e: e.get('usefulness_gap')))} "
                f"| {cellfmt(values(cell, epoch, lambda e: e.get('heldout_full_accuracy')))} |"
            )
    lines += [
        "",
        "cleanlab `find_label_issues` (default arguments): flagged rows, precision, recall.",
        "",
        "| cell | epoch | on hidden sub-networks' probabilities (--pred-probs) | on in-sample full-network probabilities "
        "| on 5-fold out-of-fold probabilities |",
        "|---|---|---|---|---|",
    ]
    for cell in cells:
        for epoch in epochs:

            def trio(key: str, cell: str = cell, epoch: int = epoch) -> str:
                got = [
                    values(cell, epoch, lambda e, m=m: e[key][m] if key in e else None)
                    for m in ("flagged", "precision", "recall")
                ]
                if not got[0]:
                    return "-"
                return f"{fmt(got[0], 0)} / {fmt(got[1], 2)} / {fmt(got[2], 2)}"

            lines.append(
                f"| {cell} | {epoch} | {trio('find_label_issues_pred_probs')} | {trio('find_label_issues_in_sample')} "
                f"| {trio('find_label_issues_cv')} |"
            )
    lines += paired_differences(results["runs"], epochs)
    lines += ["", "| cell | training rows/s (median over epochs and seeds) |", "|---|---|"]
    for cell in cells:
        speeds = [s for r in runs if r["cell"] == cell for s in r["train_rows_per_second"]]
        lines.append(f"| {cell} | {np.median(speeds):.1f} |")
    (RESULTS / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


PAIRED = (
    ("lora", "hidden_loss", "5-fold CV (none)", "cv_loss"),
    ("lora", "hidden_loss", "LoRA fine-tune (lora-plain)", "full_loss"),
    ("lora", "full_loss", "LoRA fine-tune (lora-plain)", "full_loss"),
    ("lora, 2 groups", "hidden_loss", "5-fold CV (none)", "cv_loss"),
    ("lora, 2 groups", "full_loss", "5-fold CV (none)", "cv_loss"),
    ("head", "hidden_loss", "full fine-tune (none)", "full_loss"),
)


def paired_differences(runs: dict[str, Any], epochs: list[int]) -> list[str]:
    """AUROC differences paired by seed: mean ± sd over the seeds both cells ran, and seeds won."""
    lines = [
        "",
        "Paired by seed: AUROC difference, mean ± sd over the seeds both ran (seeds where the first is higher).",
        "",
        "| comparison | " + " | ".join(f"epoch {e}" for e in epochs) + " |",
        "|---|" + "---|" * len(epochs),
    ]

    def auroc(cell: str, seed: int, epoch: int, signal: str) -> float | None:
        run = runs.get(f"{cell} | seed {seed}")
        if run is None or epoch > len(run["epochs"]) or signal not in run["epochs"][epoch - 1]:
            return None
        return run["epochs"][epoch - 1][signal]["auroc"]

    seeds = sorted({r["seed"] for r in runs.values()})
    for cell, signal, other, other_signal in PAIRED:
        row = []
        for epoch in epochs:
            diffs = [
                a - b
                for seed in seeds
                if (a := auroc(cell, seed, epoch, signal)) is not None
                and (b := auroc(other, seed, epoch, other_signal)) is not None
            ]
            won = sum(d > 0 for d in diffs)
            row.append(f"{fmt(diffs, 3)} ({won}/{len(diffs)})".replace("-", "−") if diffs else "-")
        if any(cell != "-" for cell in row):
            lines.append(f"| `{cell}` {signal} − {other} {other_signal} | " + " | ".join(row) + " |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--datasets", type=Path, default=DEFAULT_DATASETS)
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--heldout", type=int, default=500)
    parser.add_argument("--noise", type=float, default=0.1)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--cells", nargs="+", default=list(CELLS), choices=list(CELLS))
    parser.add_argument("--device", default="auto")
    parser.add_argument("--reuse", action="store_true", help="keep (seed, cell) results already saved")
    parser.add_argument("--report", action="store_true")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--name", default="lora_study", help="results file name in bench/results")
    args = parser.parse_args()
    if args.quick:
        args.rows, args.heldout, args.epochs, args.name = 300, 100, 2, "lora_study-quick"
        if args.cells == list(CELLS):
            args.cells = ["lora", "lora, 2 groups"]
    if not args.report:
        run(args)
    report(args.name)


if __name__ == "__main__":
    main()
