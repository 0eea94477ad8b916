"""Benchmark 14: what each ``--influence`` estimator costs to score, side by side on one run.

One ``head`` run (the default scope; one epoch, since scoring cost does not depend on training length) on N
rt_polarity rows; then ``score --val`` on V held-out rows (electronics reviews when fewer than V movie
reviews are left) with each estimator, in alternating order,
``--repeats`` times, each end to end through ``tod_clean.score.score_run`` (model load, encoding, the
self-scores every scoring computes, the influence). Medians and each estimator's median ratio to
``turn-over`` (turn-over dropout's own estimate: the head scope's exact GEMM, the default before ``auto``
became ``gauss-newton``), measured in the same process one after another. (The results in BENCHMARKS.md
section 14 were measured before that change, when this column was named ``auto``.)

    python bench/estimator_cost.py                          # N x V = 1,000 x 100 and 10,000 x 1,000
    python bench/estimator_cost.py --sizes 2000x200 --repeats 1 --name estimator_cost-quick
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    DEFAULT_DATASETS,
    RESULTS,
    WORK,
    machine,
    movie_reviews,
    peak_rss_mib,
    product_reviews,
    save_json,
    split_rest,
    stratified_subset,
    timed,
    train_config,
    train_run,
    write_splits,
)

METHODS = ("turn-over", "gradient", "gauss-newton")
BASE = "turn-over"


def measure(args: argparse.Namespace, rows: int, val_rows: int) -> dict[str, Any]:
    from tod_clean.config import ScoreConfig
    from tod_clean.io.inputs import read_table
    from tod_clean.run.rundir import RunDir
    from tod_clean.score import score_run

    movies = movie_reviews(args.datasets)
    train_rows = stratified_subset(movies, rows, 0)
    rest = split_rest(movies, train_rows)
    # 10,000 movie reviews leave 662: a larger validation set is electronics reviews (timing only)
    val = stratified_subset(rest if len(rest) >= val_rows else product_reviews(args.datasets), val_rows, 1)
    folder = WORK / f"estimator-cost-{rows}-{val_rows}"
    train_path, val_path = write_splits(folder, train=train_rows, val=val)
    run_path = folder / "run-head"
    train_run(train_path, run_path, train_config(scope="head", epochs=1, device=args.device), reuse=True)
    train_table, val_table = read_table(str(train_path)), read_table(str(val_path))
    seconds: dict[str, list[float]] = {m: [] for m in args.methods}
    for repeat in range(args.repeats):
        order = list(args.methods) if repeat % 2 == 0 else list(reversed(args.methods))
        for method in order:
            with timed() as timer:
                score_run(
                    RunDir(run_path),
                    train_table,
                    val_table=val_table,
                    config=ScoreConfig(influence_method=method),
                    device=args.device,
                )
            seconds[method].append(timer.wall)
            print(f"{rows} x {val_rows} {method}: {timer.wall:.1f} s", flush=True)
    medians = {m: statistics.median(v) for m, v in seconds.items()}
    return {
        "rows": rows,
        "val_rows": val_rows,
        "seconds": seconds,
        "median": medians,
        "ratio_to_base": {m: medians[m] / medians[BASE] for m in medians} if BASE in medians else {},
        "peak_rss_mib": peak_rss_mib(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--datasets", type=Path, default=DEFAULT_DATASETS)
    parser.add_argument("--sizes", nargs="+", default=["1000x100", "10000x1000"], help="NxV pairs")
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--name", default="estimator_cost")
    args = parser.parse_args()
    results = []
    for size in args.sizes:
        rows, val_rows = (int(x) for x in size.split("x"))
        results.append(measure(args, rows, val_rows))
        save_json(
            args.name,
            {"config": {k: str(v) for k, v in vars(args).items()}, "machine": machine(), "sizes": results},
        )
    lines = [
        "End-to-end `score --val` seconds on one `head` run (median of "
        f"{args.repeats}, alternating order), and the ratio to `{BASE}`:",
        "",
        "| N train x V validation | " + " | ".join(args.methods) + " |",
        "|---|" + "---|" * len(args.methods),
    ]
    for r in results:
        cells = [
            f"{r['median'][m]:.1f} s ({r['ratio_to_base'].get(m, float('nan')):.2f}×)" for m in args.methods
        ]
        lines.append(f"| {r['rows']:,} x {r['val_rows']:,} | " + " | ".join(cells) + " |")
    (RESULTS / f"{args.name}.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
