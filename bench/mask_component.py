"""Benchmark 12b: how much of turn-over dropout's influence is there before any training? (issue 18)

An outside check found two ``ffn:6`` runs trained differently but with the same masks giving influence
matrices that agree at Spearman 0.996. This script asks the same question of one finished run, directly:
it computes the run's influence matrix on its trained network, then on the network *before* fine-tuning
(the pretrained encoder and a freshly initialised head, built as ``train`` builds them, with the same
instance masks), and reports how far the two agree: Spearman over all (training, validation) pairs, the
median over validation rows of the per-row Spearman, and the Spearman of the per-row mean ``influence``
column that ``filter --by influence`` ranks by. The same for ``gauss-newton`` (no masks: what training did
is all it sees), as the contrast.

    python bench/mask_component.py --run RUN --train TRAIN.jsonl --val VAL.jsonl [--name mask_component]

A high agreement for ``turn-over`` says its estimate is mostly fixed by the masks and the pretrained
network, not by what training did with each row.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, machine, save_json  # noqa: E402


def matrices(
    run_path: Path, train_path: Path, val_path: Path, method: str, work: Path
) -> dict[str, np.ndarray]:
    """``{"trained": [N, V], "before training": [N, V]}`` influence matrices of ``method``."""
    import torch

    from tod_clean.influence.gather import influence
    from tod_clean.instances import instances_from_table
    from tod_clean.io.inputs import read_table
    from tod_clean.model_inputs import encode_instances
    from tod_clean.modeling.loading import build_classifier, load_pretrained
    from tod_clean.run.rundir import RunDir

    run = RunDir(run_path)
    info = run.read_complete_info()
    columns = info.train.columns
    train = instances_from_table(
        read_table(str(train_path)), columns, info.labels, mask_scheme=info.train.mask_scheme
    )
    val = instances_from_table(read_table(str(val_path)), columns, info.labels, with_keys=False)
    trained = run.load_model(info, "cpu").eval()
    tokenizer = run.load_preprocessor(info)
    torch.manual_seed(info.train.seed)  # as train seeds it before building the classifier
    encoder, _ = load_pretrained(info.train.model)
    untrained = build_classifier(encoder, info.train, len(info.labels)).eval()
    train_encoded = encode_instances(tokenizer, train, info.train.max_length)
    val_encoded = encode_instances(tokenizer, val, info.train.max_length)
    out = {}
    for name, model in (("trained", trained), ("before training", untrained)):
        path = work / f"matrix-{method}-{name.replace(' ', '_')}.npy"
        influence(
            model,
            train.instance_keys,
            val_encoded,
            val.labels,
            method=method,
            matrix_path=path,
            train_rows=lambda: train_encoded,
            train_labels=train.labels,
        )
        out[name] = np.load(path).astype(np.float64)
    return out


def agreement(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    from scipy.stats import spearmanr

    per_row = [spearmanr(a[:, v], b[:, v]).statistic for v in range(a.shape[1])]
    return {
        "all_pairs": float(spearmanr(a.ravel(), b.ravel()).statistic),
        "per_val_row_median": float(np.median(per_row)),
        "mean_influence": float(spearmanr(a.mean(1), b.mean(1)).statistic),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--train", type=Path, required=True)
    parser.add_argument("--val", type=Path, required=True)
    parser.add_argument("--methods", nargs="+", default=["turn-over", "gauss-newton"])
    parser.add_argument("--name", default="mask_component")
    args = parser.parse_args()
    work = args.run.parent / "mask-component"
    work.mkdir(exist_ok=True)
    results: dict[str, Any] = {}
    for method in args.methods:
        found = matrices(args.run, args.train, args.val, method, work)
        results[method] = agreement(found["trained"], found["before training"])
        print(method, results[method], flush=True)
    save_json(
        args.name,
        {"config": {k: str(v) for k, v in vars(args).items()}, "machine": machine(), "agreement": results},
    )
    lines = [
        "Spearman agreement of the influence matrix of the trained network with that of the same network "
        "before fine-tuning (same instance masks):",
        "",
        "| `--influence` | all pairs | per validation row (median) | mean influence (what `--by influence` ranks) |",
        "|---|---|---|---|",
    ]
    for method, r in results.items():
        lines.append(
            f"| {method} | {r['all_pairs']:.3f} | {r['per_val_row_median']:.3f} | {r['mean_influence']:.3f} |"
        )
    (RESULTS / f"{args.name}.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
