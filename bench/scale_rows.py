"""Benchmark 10: peak memory and time of train, score and filter as the training file grows.

Synthetic JSON Lines rows of short texts (id, text of 6-9 words, label; ~80 bytes a row) at 10^4, 10^5 and
10^6 rows. Each phase runs in a fresh process, so its peak RSS (ru_maxrss of that child, from wait4) is
its own:

- imports: a process that only imports torch, transformers and tod-clean's train, score and filter: the
  floor every phase starts from.
- train: read and validate the N-row file, tokenise all N rows (kept in the run's tokens/), then the
  head-scope training loop for ONE EPOCH CUT TO ITS FIRST --slice ROWS (the first batches of the shuffled
  epoch; a full epoch over 10^6 rows would take hours on 2 cores, and the loop's memory does not depend on
  N; the learning-rate schedule is still the full epoch's). The run is a complete run on the N-row file, so
  the next phases are the ordinary commands on it. Times: reading, preparing (validation, model, tokenising)
  and the training loop.
- score: ``tod-clean score --run RUN`` with no validation set: every one of the N rows through the network
  (self-influence and losses), reading the training rows' tokens from tokens/.
- filter: ``tod-clean filter --run RUN --drop 0.01 --out kept.jsonl``: the kept 99% streamed from the
  training file; the output's row count is checked.

    python bench/scale_rows.py                         # 10^4, 10^5, 10^6 rows (scoring 10^6 rows: hours on 2 cores)
    python bench/scale_rows.py --sizes 10000           # a smoke run (minutes)
    python bench/scale_rows.py --code /path/to/checkout --name scale_rows-before   # another version's code
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, ROOT, WORK, machine, run_measured, save_json  # noqa: E402

WORDS = [
    "a",
    "the",
    "film",
    "movie",
    "story",
    "plot",
    "cast",
    "acting",
    "music",
    "scene",
    "ending",
    "script",
    "warm",
    "funny",
    "dull",
    "slow",
    "great",
    "clever",
    "boring",
    "moving",
    "bold",
    "flat",
    "sweet",
    "long",
    "short",
    "fine",
    "weak",
    "strong",
    "lovely",
    "ugly",
    "fresh",
    "tired",
]


def write_rows(path: Path, count: int, seed: int) -> Path:
    """``count`` rows of short random texts, a chunk at a time."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    with open(path, "w", encoding="utf-8") as handle:
        for first in range(0, count, 10_000):
            size = min(10_000, count - first)
            lengths = rng.integers(6, 10, size)
            words = rng.integers(0, len(WORDS), (size, 9))
            labels = rng.integers(0, 2, size)
            handle.write(
                "".join(
                    json.dumps(
                        {
                            "id": f"r{first + i:07d}",
                            "text": " ".join(WORDS[w] for w in words[i, : lengths[i]]),
                            "label": "positive" if labels[i] else "negative",
                        }
                    )
                    + "\n"
                    for i in range(size)
                )
            )
    return path


def measure(command: list[str], code: Path) -> dict[str, Any]:
    """Run ``command`` with ``code`` on PYTHONPATH: its wall seconds, its own peak RSS (MiB, ru_maxrss from
    wait4) and the JSON object it printed last, if any."""
    env = {**os.environ, "PYTHONPATH": str(code), "TOKENIZERS_PARALLELISM": "false"}
    return run_measured(command, env, WORK / "scale-rows", " ".join(command))


def train_phase(data: Path, run: Path, args: argparse.Namespace) -> None:
    """The train phase, in its own process: prints its timings as JSON."""
    import importlib

    from tod_clean.config import DataColumns, TrainConfig
    from tod_clean.io.inputs import read_table
    from tod_clean.run.rundir import RunDir

    train_module = importlib.import_module("tod_clean.training.loop")
    batches = math.ceil(args.slice / args.batch_size)
    full_epoch = train_module.length_grouped_batches
    train_module.length_grouped_batches = lambda *a, **k: full_epoch(*a, **k)[
        :batches
    ]  # the epoch's first batches

    class Clock:
        loop_started = loop_finished = 0.0

        def start(self, description: str, total: int) -> None:
            self.loop_started = time.perf_counter()

        def advance(self, steps: int = 1, **fields: float) -> None:
            pass

        def finish(self) -> None:
            self.loop_finished = time.perf_counter()

    clock = Clock()
    started = time.perf_counter()
    table = read_table(str(data))
    read = time.perf_counter()
    config = TrainConfig(
        model=args.model,
        columns=DataColumns(id_col="id"),
        scope="head",
        epochs=1,
        batch_size=args.batch_size,
        max_length=args.max_length,
        device="cpu",
    )
    train_module.train(config, table, RunDir(run), train_path=str(data), overwrite=True, progress=clock)
    print(
        json.dumps(
            {
                "read_s": round(read - started, 2),
                "prepare_s": round(clock.loop_started - read, 2),
                "loop_s": round(clock.loop_finished - clock.loop_started, 2),
                "trained_rows": min(len(table), batches * args.batch_size),
            }
        )
    )


def folder_mib(folder: Path) -> float:
    return (
        round(sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2**20, 1)
        if folder.is_dir()
        else 0.0
    )


def count_lines(path: Path) -> int:
    with open(path, "rb") as handle:
        return sum(block.count(b"\n") for block in iter(lambda: handle.read(1 << 20), b""))


def report(name: str, results: dict[str, Any]) -> None:
    args = results["args"]
    lines = [
        f"# Train, score and filter as the training file grows ({name})",
        "",
        f"Machine: {results['machine']['cpu']}, {results['machine']['cores']} cores, "
        f"{results['machine']['memory_gib']} GiB; code: {args['code']}.",
        f"Synthetic JSON Lines rows of 6-9 random words (id, text, label); model {args['model']}, head scope, "
        f"batch {args['batch_size']}, max length {args['max_length']}. Each phase in its own process; "
        "peak RSS is that process's ru_maxrss.",
        f"train = read + validate + tokenise all N rows, then one epoch cut to its first {args['slice']:,} rows "
        "(not a full epoch: hours at 10^6 rows on 2 cores; the loop's memory does not grow with N). "
        "score = `tod-clean score` of all N rows (no validation set). filter = `tod-clean filter --drop 0.01`.",
        "tod-clean reads a file of up to 1 MiB into memory (10,000 rows here); a larger one stays on disk and is "
        "read a chunk at a time.",
        "",
        f"A process importing torch, transformers and tod-clean peaks at {results['imports']['peak_rss_mib']:.0f} MiB.",
        "",
        "| rows | file MiB | train: read s | prepare s | loop s | peak MiB | tokens/ MiB | score s | peak MiB | filter s | peak MiB |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for size in results["sizes"]:
        train, score, filtered = size["train"], size["score"], size["filter"]
        lines.append(
            f"| {size['rows']:,} | {size['file_mib']} | {train['read_s']} | {train['prepare_s']} | {train['loop_s']} "
            f"| {train['peak_rss_mib']:.0f} | {size['tokens_mib']} | {score['seconds']} | {score['peak_rss_mib']:.0f} "
            f"| {filtered['seconds']} | {filtered['peak_rss_mib']:.0f} |"
        )
    lines += [
        "",
        "prepare = validating the columns, loading the model and tokenising every row; loop = the "
        f"{args['slice']:,}-row training loop. Seconds of train are measured inside its process; score and "
        "filter are the whole command (start-up included).",
    ]
    (RESULTS / f"{name}.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print((RESULTS / f"{name}.md").read_text())


TINY = "tiny-random"


def tiny_model() -> Path:
    """A 2-layer, 64-wide random BERT (fixed seed) with the embedded MiniLM tokenizer, saved once."""
    folder = WORK / "scale-rows" / "tiny-random-bert"
    if (folder / "config.json").is_file():
        return folder
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from tod_clean.config import default_model_path

    tokenizer = AutoTokenizer.from_pretrained(default_model_path())
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=128,
        max_position_embeddings=128,
    )
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--slice", type=int, default=2_000, help="rows of the (cut) training epoch")
    parser.add_argument(
        "--model",
        default="minilm",
        help=f"a model folder, 'minilm', or '{TINY}' (a 2-layer, 64-wide random BERT with MiniLM's "
        "tokenizer: the same data path at a fraction of the compute, for memory at 10^6 rows)",
    )
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--code", type=Path, default=ROOT, help="checkout whose tod_clean is measured")
    parser.add_argument("--name", default="scale_rows")
    parser.add_argument("--report-only", action="store_true", help="rewrite the .md from the saved .json")
    parser.add_argument("--train-phase", nargs=2, type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.train_phase:
        train_phase(*args.train_phase, args)
        return
    if args.report_only:
        report(args.name, json.loads((RESULTS / f"{args.name}.json").read_text(encoding="utf-8")))
        return

    python = sys.executable
    if args.model == TINY:
        args.model = str(tiny_model())
    options = ["--slice", str(args.slice), "--model", args.model]
    options += ["--batch-size", str(args.batch_size), "--max-length", str(args.max_length)]
    imports = "import torch, transformers, tod_clean.training.loop, tod_clean.score, tod_clean.selection, tod_clean.cli"
    results: dict[str, Any] = {
        "machine": machine(),
        "args": {**vars(args), "code": str(args.code.resolve())},
        "imports": measure([python, "-c", imports], args.code),
        "sizes": [],
    }
    for rows in args.sizes:
        folder = WORK / "scale-rows" / f"{args.name}-{rows}"
        data = write_rows(folder / "train.jsonl", rows, args.seed)
        run = folder / "run"
        print(f"{rows:,} rows: train", flush=True)
        train = measure([python, __file__, "--train-phase", str(data), str(run), *options], args.code)
        print(f"{rows:,} rows: score", flush=True)
        score = measure(
            [python, "-m", "tod_clean", "score", "--run", str(run), "--device", "cpu", "-q"], args.code
        )
        kept = folder / "kept.jsonl"
        print(f"{rows:,} rows: filter", flush=True)
        command = [
            python,
            "-m",
            "tod_clean",
            "filter",
            "--run",
            str(run),
            "--drop",
            "0.01",
            "--out",
            str(kept),
            "-q",
        ]
        filtered = measure(command, args.code)
        expected = rows - round(rows * 0.01)
        if count_lines(kept) != expected:
            raise RuntimeError(f"{kept}: {count_lines(kept)} rows, expected {expected}")
        results["sizes"].append(
            {
                "rows": rows,
                "file_mib": round(data.stat().st_size / 2**20, 1),
                "tokens_mib": folder_mib(run / "tokens"),
                "train": train,
                "score": score,
                "filter": filtered,
            }
        )
        save_json(args.name, results)
    report(args.name, results)


if __name__ == "__main__":
    main()
