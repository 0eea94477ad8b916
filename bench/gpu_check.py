"""GPU check (run where a CUDA device is available): training and scoring speed on the GPU in bf16, and the
same scores as on the CPU in fp32, within tolerance.

Per scope (default ``head`` and ``lora``): train one epoch on the GPU (``--precision auto``: bf16 autocast
where the GPU supports it; the head and the losses stay fp32), score every training row and its influence
on a validation set on the GPU, then score the same run again on the CPU (fp32). Reports rows/s of the
training loop, scoring wall time and (training, validation) pairs/s, and how far the GPU's bf16 scores are
from the CPU's fp32 ones: Spearman correlation of ``influence`` and of ``hidden_loss`` and the largest
absolute difference of ``hidden_loss``. Exits non-zero when a Spearman correlation is below
``--min-spearman`` (default 0.98), so a device check fails loudly.

    python bench/gpu_check.py                          # 4,000 rt_polarity rows, 500 electronics rows
    python bench/gpu_check.py --rows 10662 --scopes head lora layers:1

Results: bench/results/gpu_check.{json,md}.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    DEFAULT_DATASETS,
    RESULTS,
    WORK,
    machine,
    movie_reviews,
    product_reviews,
    save_json,
    stratified_subset,
    train_config,
    train_run,
    write_splits,
)


def score_on(run_path: Path, train_path: Path, val_path: Path, device: str) -> tuple[Any, float]:
    import torch

    from tod_clean.io.inputs import read_table
    from tod_clean.run.rundir import RunDir
    from tod_clean.score import score_run

    if device.startswith("cuda"):
        torch.cuda.synchronize()
    started = time.perf_counter()
    result = score_run(
        RunDir(run_path), read_table(str(train_path)), val_table=read_table(str(val_path)), device=device
    )
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return result.frame, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--datasets", type=Path, default=DEFAULT_DATASETS)
    parser.add_argument("--rows", type=int, default=4000)
    parser.add_argument("--val-rows", type=int, default=500)
    parser.add_argument("--scopes", nargs="+", default=["head", "lora"])
    parser.add_argument("--min-spearman", type=float, default=0.98)
    args = parser.parse_args()

    import torch
    from scipy.stats import spearmanr

    if not torch.cuda.is_available():
        sys.exit("gpu_check: no CUDA device here; run it on a machine with a GPU")
    folder = WORK / f"gpu-check-{args.rows}"
    train_path, val_path = write_splits(
        folder,
        train=stratified_subset(movie_reviews(args.datasets), args.rows, 0),
        val=stratified_subset(product_reviews(args.datasets), args.val_rows, 0),
    )
    results: dict[str, Any] = {"machine": machine(), "config": vars(args) | {"datasets": None}, "scopes": {}}
    lines = [
        f"GPU: {torch.cuda.get_device_name(0)}; {args.rows} rt_polarity training rows, {args.val_rows} "
        "amazon_electronics validation rows; one epoch, batch 32, max length 128, bf16 autocast on the GPU.",
        "",
        "| scope | training rows/s (GPU) | scoring s GPU / CPU | pairs/s GPU | Spearman influence GPU vs CPU "
        "| Spearman hidden_loss | max abs diff hidden_loss |",
        "|---|---|---|---|---|---|---|",
    ]
    failed = []
    for scope in args.scopes:
        run_path = folder / f"run-{scope.replace(':', '')}"
        result, _ = train_run(
            train_path, run_path, train_config(scope=scope, epochs=1, device="cuda", precision="auto")
        )
        rows_per_second = result.info.epochs[-1]["rows_per_second"]
        gpu, gpu_seconds = score_on(run_path, train_path, val_path, "cuda")
        cpu, cpu_seconds = score_on(run_path, train_path, val_path, "cpu")
        rho_influence = float(spearmanr(gpu["influence"], cpu["influence"]).statistic)
        rho_hidden = float(spearmanr(gpu["hidden_loss"], cpu["hidden_loss"]).statistic)
        max_diff = float(np.abs(gpu["hidden_loss"].to_numpy() - cpu["hidden_loss"].to_numpy()).max())
        pairs_per_second = args.rows * args.val_rows / gpu_seconds
        results["scopes"][scope] = {
            "train_rows_per_second": rows_per_second,
            "score_seconds_gpu": gpu_seconds,
            "score_seconds_cpu": cpu_seconds,
            "pairs_per_second_gpu": pairs_per_second,
            "spearman_influence": rho_influence,
            "spearman_hidden_loss": rho_hidden,
            "max_abs_diff_hidden_loss": max_diff,
        }
        lines.append(
            f"| {scope} | {rows_per_second:.0f} | {gpu_seconds:.1f} / {cpu_seconds:.1f} | {pairs_per_second:.3g} "
            f"| {rho_influence:.4f} | {rho_hidden:.4f} | {max_diff:.4f} |"
        )
        if min(rho_influence, rho_hidden) < args.min_spearman:
            failed.append(scope)
    save_json("gpu_check", results)
    (RESULTS / "gpu_check.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))
    if failed:
        sys.exit(f"gpu_check: GPU bf16 scores disagree with CPU fp32 for {', '.join(failed)}")


if __name__ == "__main__":
    main()
