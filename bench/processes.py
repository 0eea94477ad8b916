"""Several processes (``accelerate launch``) against one: training and scoring rows per second.

Each round trains one epoch of the default model (MiniLM-L6, head scope) on the same rt_polarity rows with
1 process and with 2 (``accelerate launch --multi_gpu --num_processes 2``, gloo on CPU), then scores each
run's training rows with their influence on held-out rows, with as many processes as trained it. The
processes split the machine's cores between them (one process: every core; two: half each), so the figures
compare ways to use the same machine. Rounds alternate which count goes first; the figures are medians.

Timed inside the processes (``--worker``), so interpreter start and imports are left out:
- training: the training loop (``rows_per_second`` of the run's config.json), and the whole ``train`` call
  (model loading and tokenizing too);
- scoring: the whole ``score_run`` call (model loading, tokenizing, self-scores and influence).

    python bench/processes.py                  # 1,000 training rows, 200 held-out rows, 2 rounds
    python bench/processes.py --quick          # 100 rows, 20 held-out rows, 1 round (a smoke test)
    python bench/processes.py --device cuda    # on a machine with GPUs: one GPU per process
    python bench/processes.py --layouts 1x2,1x1,2x1   # processes x torch threads each (CPU)

``--layouts`` lists processes x torch threads per process (CPU; default ``1x2,2x1``: the two ways to use
2 cores). With ``1x1`` and ``2x1`` both measured, each process has a core of its own in both, and the
report gives the two-process efficiency (rows/s of 2 processes over twice those of 1): what several
processes cost beyond splitting the rows (gradient all-reduce, a second start-up, duplicated work).

On a GPU machine the report adds a projection to 8 GPUs from the measured throughput per process (linear
scaling assumed, marked as a projection); on a CPU machine it projects 8 processes of one core each from
the 1-core throughput and the two-process efficiency, also marked as a projection.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    DEFAULT_DATASETS,
    RESULTS,
    ROOT,
    WORK,
    machine,
    read_jsonl,
    split_rest,
    stratified_subset,
    write_jsonl,
)

PROJECTED_GPUS = 8


def worker(args: argparse.Namespace) -> None:
    """One process of a measurement (every process of a launch runs this; the main one writes the timing)."""
    from common import quiet_transformers, train_config

    from tod_clean.io.inputs import read_table
    from tod_clean.run.rundir import RunDir
    from tod_clean.runtime.device import pick_device
    from tod_clean.runtime.processes import current_processes
    from tod_clean.score import score_run
    from tod_clean.training.loop import train

    quiet_transformers()
    processes = current_processes(args.device)
    table = read_table(str(args.train))
    started = time.perf_counter()
    if args.worker == "train":
        config = train_config(epochs=1, seed=0, device=args.device, max_length=args.max_length)
        result = train(config, table, RunDir(args.run), train_path=str(args.train), overwrite=True)
        timing = {"loop_rows_per_second": result.info.epochs[0]["rows_per_second"]}
    else:
        score_run(RunDir(args.run), table, val_table=read_table(str(args.val)), device=args.device)
        timing = {}
    seconds = time.perf_counter() - started
    if processes.is_main:
        import torch

        timing |= {
            "seconds": seconds,
            "rows_per_second": len(table) / seconds,
            "processes": processes.count,
            "device": str(processes.device or pick_device(args.device)),
            "torch_threads": torch.get_num_threads(),
        }
        Path(args.timing).write_text(json.dumps(timing) + "\n", encoding="utf-8")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def measure(
    task: str, count: int, threads: int | None, paths: dict[str, Path], args: argparse.Namespace
) -> dict[str, Any]:
    """Run one ``--worker`` measurement with ``count`` processes of ``threads`` torch threads; its timing."""
    timing = paths["work"] / f"timing-{task}-{count}.json"
    timing.unlink(missing_ok=True)
    worker_args = [
        str(Path(__file__).resolve()),
        "--worker", task,
        "--run", str(paths["work"] / f"run-{count}"),
        "--train", str(paths["train"]),
        "--val", str(paths["val"]),
        "--device", args.device,
        "--max-length", str(args.max_length),
        "--timing", str(timing),
    ]  # fmt: skip
    if count == 1:
        command = [sys.executable, *worker_args]
    else:
        command = [
            sys.executable, "-m", "accelerate.commands.launch",
            "--multi_gpu", "--num_processes", str(count), "--main_process_port", str(_free_port()),
            *worker_args,
        ]  # fmt: skip
    if threads is None:
        threads = max(1, (os.cpu_count() or 1) // count) if args.device == "cpu" else 1
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
        "TOKENIZERS_PARALLELISM": "false",
    }
    subprocess.run(command, env=env, check=True)
    return json.loads(timing.read_text(encoding="utf-8"))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--datasets", type=Path, default=DEFAULT_DATASETS)
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--val-rows", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--processes", default="1,2", help="comma-separated process counts (threads: cores / count)"
    )
    parser.add_argument(
        "--layouts", help="comma-separated PROCESSESxTHREADS (e.g. 1x2,1x1,2x1); overrides --processes"
    )
    parser.add_argument("--device", default="cpu", help="cpu, or auto / cuda for one GPU per process")
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--worker", choices=("train", "score"), help=argparse.SUPPRESS)
    parser.add_argument("--run", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--train", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--val", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--timing", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    name = "processes"
    if args.quick:
        args.rows, args.val_rows, args.rounds, name = 100, 20, 1, "processes-quick"
    layouts: list[tuple[int, int | None]] = (
        [(int(p), int(t)) for p, t in (layout.split("x") for layout in args.layouts.split(","))]
        if args.layouts
        else [(int(count), None) for count in args.processes.split(",")]
    )
    rows = read_jsonl(args.datasets / "rt_polarity.jsonl")
    train_rows = stratified_subset(rows, args.rows, 0)
    val_rows = stratified_subset(split_rest(rows, train_rows), args.val_rows, 1)
    work = WORK / f"processes-{args.rows}"
    paths = {
        "work": work,
        "train": write_jsonl(work / "train.jsonl", train_rows),
        "val": write_jsonl(work / "val.jsonl", val_rows),
    }

    def label(layout: tuple[int, int | None]) -> str:
        return str(layout[0]) if layout[1] is None else f"{layout[0]}x{layout[1]}"

    measured: dict[str, dict[str, list[dict[str, Any]]]] = {
        label(layout): {"train": [], "score": []} for layout in layouts
    }
    for round_index in range(args.rounds):
        order = layouts[round_index % len(layouts) :] + layouts[: round_index % len(layouts)]
        for layout in order:
            for task in ("train", "score"):
                timing = measure(task, layout[0], layout[1], paths, args)
                measured[label(layout)][task].append(timing)
                print(
                    f"round {round_index} {label(layout)} {task}: {timing['rows_per_second']:.1f} rows/s",
                    flush=True,
                )

    def median(key_: str, task: str, key: str) -> float:
        return statistics.median(timing[key] for timing in measured[key_][task])

    rates = ("train_loop_rows_per_second", "score_rows_per_second")
    summary = {
        key_: {
            "processes": measured[key_]["train"][0]["processes"],
            "train_loop_rows_per_second": median(key_, "train", "loop_rows_per_second"),
            "train_call_rows_per_second": median(key_, "train", "rows_per_second"),
            "score_rows_per_second": median(key_, "score", "rows_per_second"),
            "device": measured[key_]["train"][0]["device"],
            "torch_threads_per_process": measured[key_]["train"][0]["torch_threads"],
        }
        for key_ in measured
    }
    on_gpu = all(value["device"].startswith("cuda") for value in summary.values())
    projection = None
    efficiency = None
    if on_gpu:  # only from GPU figures: CPU processes share cores, GPUs do not
        most = max(summary, key=lambda key_: summary[key_]["processes"])
        count = summary[most]["processes"]
        projection = {key: PROJECTED_GPUS * summary[most][key] / count for key in rates} | {
            "from_processes": count,
            "gpus": PROJECTED_GPUS,
            "assumes": "linear scaling per process",
        }
    elif "1x1" in summary and "2x1" in summary:  # one core per process in both: the cost of processes
        efficiency = {key: summary["2x1"][key] / (2 * summary["1x1"][key]) for key in rates}
        projection = {key: PROJECTED_GPUS * summary["1x1"][key] * efficiency[key] for key in rates} | {
            "processes": PROJECTED_GPUS,
            "assumes": "one core per process, the two-process efficiency held at 8 processes",
        }
    config = vars(args) | {
        "datasets": str(args.datasets),
        "run": None,
        "train": None,
        "val": None,
        "timing": None,
    }
    (RESULTS / f"{name}.json").write_text(
        json.dumps(
            {
                "config": config,
                "machine": machine(),
                "results": summary,
                "rounds": measured,
                "two_process_efficiency": efficiency,
                "projection": projection,
            },
            indent=1,
        )
        + "\n"
    )
    lines = [
        f"{args.rows} rt_polarity training rows (1 epoch, MiniLM-L6, head scope, batch 32, max length "
        f"{args.max_length}); scoring with influence on {args.val_rows} held-out rows; device {args.device}; "
        f"median of {args.rounds} round(s).",
        "",
        "| processes | torch threads each | training loop rows/s | train call rows/s | scoring rows/s |",
        "|---|---|---|---|---|",
    ]
    for value in summary.values():
        lines.append(
            f"| {value['processes']} | {value['torch_threads_per_process']} | "
            f"{value['train_loop_rows_per_second']:.1f} | {value['train_call_rows_per_second']:.1f} | "
            f"{value['score_rows_per_second']:.1f} |"
        )
    lines.append("")
    if on_gpu and projection is not None:
        lines.append(
            f"Projection, not a measurement: {PROJECTED_GPUS} GPUs at the measured throughput per process of "
            f"{projection['from_processes']} processes, assuming linear scaling: training loop "
            f"{projection['train_loop_rows_per_second']:.0f} rows/s, scoring {projection['score_rows_per_second']:.0f} rows/s."
        )
    elif efficiency is not None and projection is not None:
        lines.append(
            f"Two-process efficiency (one core per process; 2 processes' rows/s over twice 1's): training loop "
            f"{efficiency['train_loop_rows_per_second']:.2f}, scoring {efficiency['score_rows_per_second']:.2f}."
        )
        lines.append(
            f"Projection, not a measurement: {PROJECTED_GPUS} processes of one core each at the 1-core throughput "
            f"and that efficiency: training loop {projection['train_loop_rows_per_second']:.0f} rows/s, "
            f"scoring {projection['score_rows_per_second']:.0f} rows/s."
        )
    else:
        lines.append(
            "Measured on CPU only: processes share the machine's cores, so no projection to GPUs is made."
        )
    (RESULTS / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
