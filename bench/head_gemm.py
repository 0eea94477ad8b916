"""Head-scope influence against the bare matrix product it cannot beat, side by side in one process.

With C classes a pair's loss depends only on its C - 1 logit differences, so the floor of head-scope
influence for N training x V validation rows of width D is one fp32 GEMM of shape [V, D] x [D, N*(C-1)]
(2*N*V*D*(C-1) FLOP). For each size, one fresh process:

1. runs tod-clean's ``head_influence`` once (warm-up) and records its peak RSS before any bare GEMM has run;
2. then alternates, ``--repeats`` times, tod-clean's head influence and the bare GEMM (``torch.mm`` into a
   preallocated output, 0/1 float32 masks as the right operand), and reports the medians and their ratio.

    python bench/head_gemm.py                    # N=1e5 x V=1e4 x D=384, C=2; N=2e4 x V=1e4, C=4
    python bench/head_gemm.py --sizes 20000,10000,2 --repeats 5
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, peak_rss_mib, save_json  # noqa: E402

WIDTH = 384
DEFAULT_SIZES = ["100000,10000,2", "20000,10000,4"]


def child(num_train: int, num_val: int, num_classes: int, repeats: int) -> dict[str, Any]:
    import torch

    import tod_clean
    from tod_clean.influence.head_gemm import head_influence

    generator = torch.Generator().manual_seed(0)
    features = torch.rand((num_val, WIDTH), generator=generator) * 2 - 1
    labels = torch.randint(0, num_classes, (num_val,), generator=generator)
    weight = torch.randn((num_classes, WIDTH), generator=generator) * 0.05
    bias = torch.zeros(num_classes)
    keys = torch.arange(num_train, dtype=torch.int64)

    def run_tod_clean() -> float:
        start = time.perf_counter()
        values = head_influence(features, labels, weight, bias, keys, keep_prob=0.5, mask_seed=0)
        seconds = time.perf_counter() - start
        assert np.isfinite(values).all()
        return seconds

    rss_before = peak_rss_mib()
    warmup = run_tod_clean()
    rss_tod = peak_rss_mib()
    columns = num_train * (num_classes - 1)
    masks = (torch.rand((WIDTH, columns), generator=generator) < 0.5).float()
    product = torch.empty((num_val, columns), dtype=torch.float32)

    def bare_gemm() -> float:
        start = time.perf_counter()
        torch.mm(features, masks, out=product)
        return time.perf_counter() - start

    bare_gemm()  # touch the output's pages once, so the GEMM is timed alone
    tod_times, gemm_times = [], []
    for _ in range(repeats):
        tod_times.append(run_tod_clean())
        gemm_times.append(bare_gemm())
    tod, gemm = statistics.median(tod_times), statistics.median(gemm_times)
    return {
        "train": num_train,
        "val": num_val,
        "classes": num_classes,
        "width": WIDTH,
        "threads": torch.get_num_threads(),
        "tod_clean": str(Path(tod_clean.__file__).resolve().parent),
        "warmup_seconds": warmup,
        "tod_clean_seconds": tod_times,
        "gemm_seconds": gemm_times,
        "tod_clean_median": tod,
        "gemm_median": gemm,
        "ratio": tod / gemm,
        "gemm_gflops": 2 * num_train * num_val * WIDTH * (num_classes - 1) / gemm / 1e9,
        "rss_before_mib": rss_before,
        "peak_rss_tod_clean_mib": rss_tod,
        "peak_rss_with_gemm_mib": peak_rss_mib(),
        "load_average": os.getloadavg(),
    }


def report(results: dict[str, Any]) -> str:
    lines = [
        "| N train | V validation | C | tod-clean s (median) | bare GEMM s (median) | ratio | GEMM GFLOP/s | "
        "peak RSS MiB tod-clean (before) | load avg (1 min) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in results["rows"]:
        lines.append(
            f"| {row['train']:,} | {row['val']:,} | {row['classes']} | {row['tod_clean_median']:.2f} | "
            f"{row['gemm_median']:.2f} | {row['ratio']:.2f} | {row['gemm_gflops']:.0f} | "
            f"{row['peak_rss_tod_clean_mib']:.0f} ({row['rss_before_mib']:.0f}) | {row['load_average'][0]:.1f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", nargs="+", default=DEFAULT_SIZES, help="N,V,C triples")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child", nargs=4, type=int, help=argparse.SUPPRESS)
    parser.add_argument("--name", default="head_gemm", help="results file name under bench/results")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(*args.child)))
        return
    rows = []
    for size in args.sizes:
        num_train, num_val, num_classes = (int(part) for part in size.split(","))
        output = subprocess.run(
            [
                sys.executable,
                __file__,
                "--child",
                str(num_train),
                str(num_val),
                str(num_classes),
                str(args.repeats),
            ],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        row = json.loads(output.strip().splitlines()[-1])
        print(json.dumps(row), flush=True)
        rows.append(row)
    results = {"machine": machine(), "command": " ".join(sys.argv), "rows": rows}
    save_json(args.name, results)
    table = report(results)
    (Path(__file__).resolve().parent / "results" / f"{args.name}.md").write_text(
        table + "\n", encoding="utf-8"
    )
    print(table)


if __name__ == "__main__":
    main()
