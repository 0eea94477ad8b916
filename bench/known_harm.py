"""Benchmark 13: does removing rows by a ranking pay where the harm is known? (issue 18, item 4)

A training set with planted harm, per seed:

- ``--harm flip``: 1,000 rt_polarity rows with 10% of their labels flipped;
- ``--harm offdomain``: 900 rt_polarity rows plus 100 TREC questions (off-domain: no sentiment) given
  random sentiment labels.

Validation: 200 clean held-out movie reviews (the set influence is measured on); test: 2,000 other
held-out movie reviews. One tod-clean run (``--scope head``, the default) and one ordinary fine-tune
(``none``) on the harmed set give the rankings:

- ``influence``: what ``filter`` ranks by once ``--val`` was scored, with every option at its default:
  mean influence of ``--influence auto`` (``gauss-newton`` on the top half of the encoder's blocks) on the
  validation set (lowest first);
- ``gauss-newton``: mean ``--influence gauss-newton`` influence on the validation set (lowest first; since
  ``gauss-newton`` reads the top half of the blocks it is ``influence``'s score, kept for the saved arms);
- ``tod influence``: turn-over dropout's own influence (``--influence turn-over``, the default before
  ``auto`` became ``gauss-newton``; lowest first);
- ``hidden_loss`` and ``full_loss`` of the tod-clean run (highest first within each class; ``full_loss``
  is ``filter``'s default ranking without ``--val``);
- ``training loss``: the ordinary fine-tune's loss on its own training rows (highest first, per class);
- ``influence@2ep``, ``full_loss@2ep``, ``training loss@2ep`` and ``gauss-newton@2ep``: the same, read from
  the runs trained for 2 epochs (tod-clean's default) whatever ``--epochs`` the arms retrain for: a user
  who ranks with tod-clean's defaults and trains their own model longer (``--epochs 5``);
- ``oracle``: the planted rows themselves, in random order (the bound any ranking can reach; at 10% it
  removes every planted row, the clean training set);
- ``random``.

For each ranking and each fraction (1, 2, 5, 10%) the worst rows are removed with ``tod_clean.selection``
(the code ``filter`` runs) and an ordinary fine-tune retrained with the same seed; its test accuracy is
compared per seed (paired t-test and sign counts) to random removal, to removal by training loss and to no
removal. Also reported: the share of planted rows among the removed.

    python bench/known_harm.py --reuse                    # flip, seeds 0-4 (~15 min per seed, 2 cores)
    python bench/known_harm.py --harm offdomain --reuse
    python bench/known_harm.py --report-only
    python bench/known_harm.py --retrain coupled --reuse  # arms retrained under the full run's randomness
    python bench/known_harm.py --retrain coupled --epochs 5 --rankings influence@2ep full_loss@2ep \
        "training loss@2ep" oracle random --reuse --name known_harm-flip-5epochs  # rank at 2, retrain for 5

With ``--reuse`` every finished run, ranking and arm is kept, so an interrupted run resumes.
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
    LABELS,
    RESULTS,
    WORK,
    evaluate,
    flip_labels,
    machine,
    mean_std,
    movie_splits,
    read_jsonl,
    rows_left_out,
    save_json,
    train_config,
    train_run,
    write_splits,
)

RANKINGS = (
    "influence",
    "gauss-newton",
    "tod influence",
    "hidden_loss",
    "full_loss",
    "training loss",
    "influence@2ep",
    "full_loss@2ep",
    "training loss@2ep",
    "gauss-newton@2ep",
    "oracle",
    "random",
)
# the column each ranking reads, and the run (tod-clean "tod" or ordinary "plain") that scores it
COLUMNS = {
    "influence": ("influence", "tod", "auto"),
    "gauss-newton": ("influence", "tod", "gauss-newton"),
    "tod influence": ("influence", "tod", "turn-over"),
    "hidden_loss": ("hidden_loss", "tod", None),
    "full_loss": ("full_loss", "tod", None),
    "training loss": ("full_loss", "plain", None),
}
RUN_SCOPES = {"tod": "head", "plain": "none"}  # the --scope each run is trained with


def ranking_source(name: str, epochs: int) -> tuple[str, int]:
    """(the ranking's column entry, the epochs of the run it is read from): ``NAME@2ep`` reads NAME from
    the runs trained for 2 epochs (tod-clean's default) whatever ``--epochs`` the arms retrain for, the
    workflow of a user who ranks with tod-clean's defaults and trains their own model longer."""
    base, _, suffix = name.partition("@")
    return base, int(suffix.removesuffix("ep")) if suffix else epochs


def harmed_rows(args: argparse.Namespace, seed: int) -> tuple[list[dict], np.ndarray, list[dict], list[dict]]:
    """(training rows, planted mask, validation rows, test rows) of one seed."""
    clean, val_rows, test_rows = movie_splits(args.datasets, args.rows, args.val_rows, args.test_rows, seed)
    planted_count = int(round(args.harm_fraction * args.rows))
    if args.harm == "flip":
        train_rows, planted = flip_labels(clean, args.harm_fraction, seed)
        return train_rows, planted, val_rows, test_rows
    questions = read_jsonl(args.datasets / "trec.jsonl")
    rng = np.random.default_rng([seed, 31337])
    picked = rng.choice(len(questions), size=planted_count, replace=False)
    off = [
        {"id": questions[i]["id"], "text": questions[i]["text"], "label": LABELS[rng.integers(2)]}
        for i in picked
    ]
    mixed = clean[: args.rows - planted_count] + off
    order = rng.permutation(len(mixed))
    train_rows = [mixed[i] for i in order]
    planted = np.array([row["id"].startswith("trec-") for row in train_rows])
    return train_rows, planted, val_rows, test_rows


def signal(
    folder: Path,
    name: str,
    run_path: Path,
    train_path: Path,
    val_path: Path | None,
    method: str | None,
    reuse: bool,
) -> np.ndarray:
    """One score column of a run, kept in ``folder/signal-NAME.json``."""
    from tod_clean.config import ScoreConfig
    from tod_clean.io.inputs import read_table
    from tod_clean.run.rundir import RunDir
    from tod_clean.score import score_run

    saved_path = folder / f"signal-{name.replace(' ', '_')}.json"
    if reuse and saved_path.is_file():
        return np.array(json.loads(saved_path.read_text(encoding="utf-8"))["values"])
    column, _, _ = COLUMNS[name]
    options = {"influence_method": method} if method else {}
    result = score_run(
        RunDir(run_path),
        read_table(str(train_path)),
        val_table=read_table(str(val_path)) if val_path is not None else None,
        config=ScoreConfig(**options),
    )
    values = result.frame[column].to_numpy(dtype=np.float64)
    saved_path.write_text(json.dumps({"values": values.tolist()}), encoding="utf-8")
    return values


def work_folder(args: argparse.Namespace, seed: int, epochs: int | None = None) -> Path:
    """One seed's work folder; a recipe other than 2 epochs gets its own, so that --reuse never mixes arms
    retrained under different recipes (an arm is reused when its removed rows match). ``epochs`` names the
    folder of another recipe (where ``NAME@2ep`` rankings are read); default ``--epochs``."""
    epochs = args.epochs if epochs is None else epochs
    suffix = "" if epochs == 2 else f"-epochs{epochs}"
    return WORK / f"known-harm-{args.harm}-{args.rows}-{seed}{suffix}"


def arm_file(args: argparse.Namespace, seed: int, arm: str) -> Path:
    """Where an arm's result is kept, e.g. ``arm-full_loss_0.1.json`` (``coupled-`` before it when coupled)."""
    prefix = "coupled-" if args.retrain == "coupled" else ""
    return work_folder(args, seed) / f"{prefix}arm-{arm.replace(' ', '_')}.json"


def run_seed(args: argparse.Namespace, seed: int) -> dict[str, Any]:
    from tod_clean.io.inputs import read_table
    from tod_clean.io.writers import write_subset
    from tod_clean.selection import drop_count_for, rows_to_drop

    train_rows, planted, val_rows, test_rows = harmed_rows(args, seed)
    folder = work_folder(args, seed)
    train_path, val_path, test_path = write_splits(folder, train=train_rows, val=val_rows, test=test_rows)
    recipe = {"epochs": args.epochs, "seed": seed, "max_length": args.max_length, "device": args.device}

    table = read_table(str(train_path))
    classes = np.array([LABELS.index(row["label"]) for row in train_rows])
    # the (train, val) files of each recipe's folder (the same rows; @Nep rankings read another recipe's),
    # and the runs trained in this invocation: several rankings read one run, which is trained once
    split_paths = {folder: (train_path, val_path)}
    trained: set[Path] = set()
    orders: dict[str, np.ndarray] = {}
    for name in args.rankings:
        if name in ("random", "oracle"):
            continue
        base, epochs = ranking_source(name, args.epochs)
        column, run, method = COLUMNS[base]
        run_folder = work_folder(args, seed, epochs)
        if run_folder not in split_paths:
            run_train, run_val, _ = write_splits(run_folder, train=train_rows, val=val_rows, test=test_rows)
            split_paths[run_folder] = (run_train, run_val)
        run_train, run_val = split_paths[run_folder]
        run_path = run_folder / f"run-{run}"
        if run_path not in trained:
            config = train_config(scope=RUN_SCOPES[run], **{**recipe, "epochs": epochs})
            train_run(run_train, run_path, config, reuse=args.reuse)
            trained.add(run_path)
        orders[name] = signal(
            run_folder,
            base,
            run_path,
            run_train,
            run_val if column == "influence" else None,
            method,
            args.reuse,
        )

    coupled = args.retrain == "coupled"
    prefix = "coupled-" if coupled else ""

    def retrain(arm: str, dropped: np.ndarray) -> dict[str, Any]:
        arm_path = arm_file(args, seed, arm)
        removed_ids = [train_rows[i]["id"] for i in dropped]
        if args.reuse and arm_path.is_file():
            saved = json.loads(arm_path.read_text(encoding="utf-8"))
            if saved["removed_ids"] == removed_ids:
                return saved
        run_path = folder / f"{prefix}run-{arm.replace(' ', '_')}"
        if coupled:  # the same file and randomness as the run on all rows, the dropped rows' loss left out
            with rows_left_out(dropped):
                _, timer = train_run(train_path, run_path, train_config(scope="none", **recipe))
        else:
            keep = np.setdiff1d(np.arange(len(table)), dropped)
            kept_path = folder / f"train-{arm.replace(' ', '_')}.jsonl"
            write_subset(table, keep.tolist(), str(kept_path))
            _, timer = train_run(kept_path, run_path, train_config(scope="none", **recipe), reuse=args.reuse)
        evaluation, _ = evaluate(run_path, test_path)
        result = {
            "removed": int(len(dropped)),
            "planted_removed": int(planted[dropped].sum()),
            "accuracy": evaluation.accuracy,
            "loss": evaluation.loss,
            "train_seconds": timer.wall,
            "removed_ids": removed_ids,
        }
        print(
            f"{args.harm} seed {seed} {arm}: removed {len(dropped)} ({result['planted_removed']} planted), "
            f"accuracy {evaluation.accuracy:.4f}",
            flush=True,
        )
        arm_path.write_text(json.dumps(result, default=float), encoding="utf-8")
        # the retrained run is not needed again: its weights are the bulk of the work folder
        for weights in run_path.glob("*.safetensors"):
            weights.unlink()
        return result

    arms = {"no removal": retrain("none", np.array([], dtype=np.int64))}
    for fraction in args.fractions:
        count = drop_count_for(len(table), fraction)
        for name in args.rankings:
            if name == "random":
                rng = np.random.default_rng([seed, 1234, count])
                dropped = np.sort(rng.choice(len(table), count, replace=False))
            elif name == "oracle":
                rng = np.random.default_rng([seed, 4321, count])
                candidates = np.flatnonzero(planted)
                dropped = np.sort(rng.choice(candidates, min(count, len(candidates)), replace=False))
            else:
                column = COLUMNS[ranking_source(name, args.epochs)[0]][0]
                dropped = rows_to_drop(orders[name], by=column, count=count, classes=classes)
            arms[f"{name} {fraction:g}"] = retrain(f"{name} {fraction:g}", dropped)
    add_finished_arms(args, seed, arms)
    return {"seed": seed, "planted": int(planted.sum()), "rows": len(train_rows), "arms": arms}


def add_finished_arms(args: argparse.Namespace, seed: int, arms: dict[str, Any]) -> None:
    """Arms of rankings left out of this invocation, finished by an earlier one, are reported too."""
    for name in RANKINGS:
        for fraction in args.fractions:
            saved_path = arm_file(args, seed, f"{name} {fraction:g}")
            if f"{name} {fraction:g}" not in arms and saved_path.is_file():
                arms[f"{name} {fraction:g}"] = json.loads(saved_path.read_text(encoding="utf-8"))


def paired(seeds: list[dict], arm: str, baseline: str, metric: str = "accuracy") -> tuple[np.ndarray, float]:
    """Per-seed gains of ``arm`` over ``baseline`` and the paired t-test p, over the seeds that ran both:
    accuracy points (arm minus baseline), or for ``metric="loss"`` test cross-entropy in millinats
    (baseline minus arm, so that a positive gain is a better arm either way)."""
    from scipy.stats import ttest_rel

    seeds = [s for s in seeds if arm in s["arms"] and baseline in s["arms"]]
    a = np.array([s["arms"][arm][metric] for s in seeds])
    b = np.array([s["arms"][baseline][metric] for s in seeds])
    diff = 100 * (a - b) if metric == "accuracy" else 1000 * (b - a)
    p = float(ttest_rel(a, b).pvalue) if len(seeds) > 1 and diff.std() > 0 else float("nan")
    return diff, p


def duplicate_of(seeds: list[dict], ranking: str, fractions: list[float]) -> str | None:
    """The ranking listed before ``ranking`` in RANKINGS that removed exactly its rows in every arm
    ``ranking`` ran (then both retrained the same model; coupled retraining is deterministic), if any:
    e.g. ``gauss-newton@2ep``, whose saved scores are ``influence@2ep``'s since ``gauss-newton`` reads the
    top half of the blocks. ``None`` when ``ranking`` ran no arm or no such ranking exists."""
    ran = [(x["arms"], f"{f:g}") for x in seeds for f in fractions if f"{ranking} {f:g}" in x["arms"]]
    for other in RANKINGS[: RANKINGS.index(ranking)] if ran else ():
        if all(
            f"{other} {f}" in arms
            and arms[f"{other} {f}"]["removed_ids"] == arms[f"{ranking} {f}"]["removed_ids"]
            for arms, f in ran
        ):
            return other
    return None


def report(name: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = json.loads((RESULTS / f"{name}.json").read_text())
    seeds, config = results["seeds"], results["config"]
    fractions = config["fractions"]
    duplicates = {r: d for r in RANKINGS if (d := duplicate_of(seeds, r, fractions)) is not None}
    shown = [r for r in RANKINGS if r not in duplicates]
    base = mean_std([100 * s["arms"]["no removal"]["accuracy"] for s in seeds])
    lines = [
        f"Harm `{config['harm']}`: {seeds[0]['rows']} training rows, {seeds[0]['planted']} planted; "
        f"{len(seeds)} seeds ({', '.join(str(s['seed']) for s in seeds)}); test {config['test_rows']} "
        f"held-out movie reviews; ordinary fine-tunes retrained ({config.get('retrain', 'reshuffled')}), {config['epochs']} epochs, max length "
        f"{config['max_length']}. No removal: {base[0]:.2f} ± {base[1]:.2f} %.",
        "",
        "Test accuracy (%, mean ± sd over seeds) and planted rows among the removed (mean):",
        "",
        "| ranking | " + " | ".join(f"{f:.0%} removed" for f in fractions) + " |",
        "|---|" + "---|" * len(fractions),
    ]
    for ranking in shown:
        cells = []
        for f in fractions:
            arm = f"{ranking} {f:g}"
            ran = [x for x in seeds if arm in x["arms"]]
            if not ran:
                cells.append("-")
                continue
            m, s = mean_std([100 * x["arms"][arm]["accuracy"] for x in ran])
            hit = np.mean(
                [x["arms"][arm]["planted_removed"] / max(1, x["arms"][arm]["removed"]) for x in ran]
            )
            note = "" if len(ran) == len(seeds) else f"; {len(ran)} seed{'s' if len(ran) > 1 else ''}"
            cells.append(f"{m:.2f} ± {s:.2f} ({hit:.0%} planted{note})")
        if any(cell != "-" for cell in cells):
            lines.append(f"| {ranking} | " + " | ".join(cells) + " |")
    for ranking, other in duplicates.items():
        lines += [
            "",
            f"`{ranking}` is not shown: in every arm it ran it removed exactly `{other}`'s rows "
            "(the same retrained model).",
        ]
    titles = {
        "accuracy": "Paired per seed (accuracy points, mean difference; seeds won/lost; paired t-test p):",
        "loss": "Paired per seed, test loss (mean cross-entropy of the baseline minus the ranking's, in "
        "millinats: positive = the ranking's retrained model is better; seeds won/lost; paired t-test p):",
    }
    for metric, title in titles.items():
        lines += [
            "",
            title,
            "",
            "| ranking | baseline | " + " | ".join(f"{f:.0%}" for f in fractions) + " |",
            "|---|---|" + "---|" * len(fractions),
        ]
        for ranking in shown[:-1]:
            for baseline in ("random", "training loss", "training loss@2ep", "no removal"):
                if baseline == ranking:
                    continue
                cells = []
                for f in fractions:
                    other = "no removal" if baseline == "no removal" else f"{baseline} {f:g}"
                    diff, p = paired(seeds, f"{ranking} {f:g}", other, metric)
                    if len(diff) == 0:
                        cells.append("-")
                        continue
                    digits = 2 if metric == "accuracy" else 1
                    cells.append(
                        f"{diff.mean():+.{digits}f} ({(diff > 0).sum()}/{(diff < 0).sum()}, p {p:.3f})"
                    )
                if any(cell != "-" for cell in cells):
                    lines.append(f"| {ranking} | {baseline} | " + " | ".join(cells) + " |")
    (RESULTS / f"{name}.md").write_text("\n".join(lines) + "\n", encoding="utf-8")

    fig, axis = plt.subplots(figsize=(6.5, 4.2))
    xs = [0.0] + [100 * f for f in fractions]
    for ranking in shown:
        if not all(f"{ranking} {f:g}" in x["arms"] for x in seeds for f in fractions):
            continue  # plotted only where every seed ran it
        means = [base[0]] + [
            mean_std([100 * x["arms"][f"{ranking} {f:g}"]["accuracy"] for x in seeds])[0] for f in fractions
        ]
        axis.plot(xs, means, "-o", label=ranking, markersize=4)
    axis.set_xlabel("training rows removed (%)")
    axis.set_ylabel("test accuracy (%)")
    axis.set_title(f"known harm ({config['harm']}, {len(seeds)} seeds, mean)")
    axis.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(RESULTS / f"{name}.png", dpi=110)
    print((RESULTS / f"{name}.md").read_text())


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    """The options that fix a seed's harmed data and work folder (``harmed_rows``, ``work_folder``)."""
    parser.add_argument("--datasets", type=Path, default=DEFAULT_DATASETS)
    parser.add_argument("--harm", choices=("flip", "offdomain"), default="flip")
    parser.add_argument("--harm-fraction", type=float, default=0.1)
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--val-rows", type=int, default=200)
    parser.add_argument("--test-rows", type=int, default=2000)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_data_arguments(parser)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.01, 0.02, 0.05, 0.1])
    parser.add_argument(
        "--rankings", nargs="+", choices=RANKINGS, default=list(RANKINGS), help="the rankings to retrain by"
    )
    parser.add_argument(
        "--retrain",
        choices=("reshuffled", "coupled"),
        default="reshuffled",
        help="reshuffled: retrain on the file without the removed rows (what a user does); coupled: keep "
        "them in their batches with their loss left out, the randomness of the run on all rows "
        "(common.rows_left_out; bench/retrain_noise.py measures the noise each leaves)",
    )
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--quick", action="store_true", help="300 rows, one seed, 5%% and 10%% (< 10 min)")
    parser.add_argument("--reuse", action="store_true", help="keep finished runs, rankings and arms")
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument("--name", help="results name (default: known_harm-HARM)")
    args = parser.parse_args()
    if args.quick:
        args.rows, args.seeds, args.fractions, args.test_rows, args.val_rows = 300, [0], [0.05, 0.1], 300, 60
    name = args.name or (
        f"known_harm-{args.harm}"
        + ("-coupled" if args.retrain == "coupled" else "")
        + ("-quick" if args.quick else "")
    )
    if not args.report_only:
        # with --reuse, a seed already in the results file with every arm this invocation asks for is kept
        # from it (its work folder may be gone: bench/results/raw is not kept in git)
        saved_path = RESULTS / f"{name}.json"
        saved = {}
        if args.reuse and saved_path.is_file():
            saved = {s["seed"]: s for s in json.loads(saved_path.read_text(encoding="utf-8"))["seeds"]}
        wanted = {f"{r} {f:g}" for r in args.rankings for f in args.fractions} | {"no removal"}
        seeds = []
        config = {k: v for k, v in vars(args).items() if k not in ("datasets", "reuse", "name")}
        for seed in args.seeds:
            if seed in saved and wanted <= set(saved[seed]["arms"]):
                add_finished_arms(args, seed, saved[seed]["arms"])
                seeds.append(saved[seed])
            else:
                seeds.append(run_seed(args, seed))
            save_json(name, {"config": config, "machine": machine(), "seeds": seeds})
    report(name)


if __name__ == "__main__":
    main()
