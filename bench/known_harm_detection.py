"""Benchmark 13c: which rows does each known-harm ranking find, and do any two of them differ? (issue 18)

``bench/known_harm.py`` retrains after removing rows by each ranking; this script asks the cheaper question
behind it, from the scores that script saved in its work folders (``signal-NAME.json``, nothing is
trained): per seed, how well each ranking separates the planted rows from the rest (AUROC, with
scikit-learn), what share of the rows it removes at each fraction are planted (removed with
``tod_clean.selection``, per class, the code ``filter`` runs), and how far two rankings agree (Spearman of
the scores, and the share of the 10% they remove in common). A ranking that removes the same rows as the
ordinary training loss cannot beat it by retraining, whatever its name.

Rankings read (where saved): ``full_loss`` and ``hidden_loss`` of the tod-clean ``head`` run, ``training
loss`` (the ordinary fine-tune's ``full_loss``), ``influence`` (``filter``'s default once ``--val`` was
scored: mean ``--influence auto`` influence on the validation set, lowest first), ``gauss-newton`` (the score
saved under that name: the same estimator), and ``full_loss + training loss`` (their mean: an ensemble of the two runs).

    python bench/known_harm.py --retrain coupled --reuse ...      # first: trains the runs, saves the scores
    python bench/known_harm_detection.py --seeds 0 1 2 3 4 5 6 7  # then this (seconds)
    python bench/known_harm_detection.py --epochs 5 --seeds 0 1

Datasets: rt_polarity (Pang & Lee 2005, sentence polarity v1.0), as ``bench/known_harm.py``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import LABELS, RESULTS, machine, mean_std, save_json  # noqa: E402
from known_harm import add_data_arguments, harmed_rows, work_folder  # noqa: E402

# ranking -> (saved signal file stem, selection column: "influence" ranks lowest first, a loss highest first)
SIGNALS = {
    "full_loss": ("full_loss", "full_loss"),
    "hidden_loss": ("hidden_loss", "hidden_loss"),
    "training loss": ("training_loss", "full_loss"),
    "influence": ("influence", "influence"),
    "gauss-newton": ("gauss-newton", "influence"),
}
ENSEMBLE = "full_loss + training loss"
PAIRS = (
    ("full_loss", "training loss"),
    ("hidden_loss", "training loss"),
    ("gauss-newton", "training loss"),
    ("influence", "training loss"),
    ("influence", "gauss-newton"),
)


def seed_scores(folder: Path) -> dict[str, np.ndarray]:
    """The saved score column of each ranking in one seed's work folder (those that were saved)."""
    scores = {}
    for name, (stem, _) in SIGNALS.items():
        path = folder / f"signal-{stem}.json"
        if path.is_file():
            scores[name] = np.array(json.loads(path.read_text(encoding="utf-8"))["values"])
    if "full_loss" in scores and "training loss" in scores:
        scores[ENSEMBLE] = (scores["full_loss"] + scores["training loss"]) / 2
    return scores


def selection_column(name: str) -> str:
    return "full_loss" if name == ENSEMBLE else SIGNALS[name][1]


def measure_seed(args: argparse.Namespace, seed: int) -> dict[str, Any]:
    from scipy.stats import spearmanr
    from sklearn.metrics import roc_auc_score

    from tod_clean.selection import drop_count_for, rows_to_drop

    train_rows, planted, _, _ = harmed_rows(args, seed)
    classes = np.array([LABELS.index(row["label"]) for row in train_rows])
    scores = seed_scores(work_folder(args, seed))
    dropped: dict[str, dict[float, np.ndarray]] = {}
    rankings: dict[str, Any] = {}
    for name, values in scores.items():
        if len(values) != len(train_rows):
            raise SystemExit(
                f"{work_folder(args, seed)}: {name} has {len(values)} scores, not {len(train_rows)}"
            )
        column = selection_column(name)
        badness = -values if column == "influence" else values
        dropped[name] = {
            f: rows_to_drop(values, by=column, count=drop_count_for(len(values), f), classes=classes)
            for f in args.fractions
        }
        rankings[name] = {
            "auroc": float(roc_auc_score(planted, badness)),
            "planted_share": {f"{f:g}": float(planted[d].mean()) for f, d in dropped[name].items()},
        }
    agreement = {}
    largest = max(args.fractions)
    for first, second in PAIRS:
        if first in scores and second in scores:
            common = np.intersect1d(dropped[first][largest], dropped[second][largest])
            agreement[f"{first} ~ {second}"] = {
                "spearman": float(spearmanr(scores[first], scores[second]).statistic),
                "common_removed": len(common) / len(dropped[first][largest]),
            }
    return {"seed": seed, "rankings": rankings, "agreement": agreement}


def render(results: dict[str, Any]) -> str:
    config, seeds = results["config"], results["seeds"]
    fractions = [f"{f:g}" for f in config["fractions"]]
    names = [n for n in [*SIGNALS, ENSEMBLE] if any(n in s["rankings"] for s in seeds)]
    lines = [
        f"Harm `{config['harm']}`, {config['rows']} rows, runs of {config['epochs']} epochs; seeds "
        f"{', '.join(str(s['seed']) for s in seeds)}. Mean ± sd over the seeds that saved the ranking.",
        "",
        "| ranking | seeds | AUROC (planted vs rest) | "
        + " | ".join(f"planted share of the {float(f):.0%} removed" for f in fractions)
        + " |",
        "|---|---|---|" + "---|" * len(fractions),
    ]
    for name in names:
        ran = [s["rankings"][name] for s in seeds if name in s["rankings"]]
        auroc = mean_std([r["auroc"] for r in ran])
        cells = [mean_std([r["planted_share"][f] for r in ran]) for f in fractions]
        lines.append(
            f"| {name} | {len(ran)} | {auroc[0]:.3f} ± {auroc[1]:.3f} | "
            + " | ".join(f"{m:.0%} ± {s:.0%}" for m, s in cells)
            + " |"
        )
    lines += [
        "",
        f"Agreement of two rankings (mean over seeds): Spearman of the scores; share of the "
        f"{max(config['fractions']):.0%} removed by the first that the second removes too.",
        "",
        "| rankings | seeds | Spearman | removed in common |",
        "|---|---|---|---|",
    ]
    for first, second in PAIRS:
        key = f"{first} ~ {second}"
        ran = [s["agreement"][key] for s in seeds if key in s["agreement"]]
        if ran:
            lines.append(
                f"| {key} | {len(ran)} | {np.mean([r['spearman'] for r in ran]):.3f} | "
                f"{np.mean([r['common_removed'] for r in ran]):.0%} |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_data_arguments(parser)
    parser.add_argument("--epochs", type=int, default=2, help="the runs' epochs (their work folders)")
    parser.add_argument("--seeds", type=int, nargs="+", default=list(range(8)))
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.01, 0.02, 0.05, 0.1])
    parser.add_argument("--name", help="results name (default known_harm_detection-HARM[-epochsN])")
    args = parser.parse_args()
    name = args.name or f"known_harm_detection-{args.harm}" + (
        f"-epochs{args.epochs}" if args.epochs != 2 else ""
    )
    seeds = [measure_seed(args, seed) for seed in args.seeds]
    config = {k: v for k, v in vars(args).items() if k not in ("datasets", "name")}
    results = {"config": config, "machine": machine(), "seeds": seeds}
    save_json(name, results)
    (RESULTS / f"{name}.md").write_text(render(results), encoding="utf-8")
    print(render(results))


if __name__ == "__main__":
    main()
