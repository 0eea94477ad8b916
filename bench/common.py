"""Shared helpers of the benchmarks: data subsets, label noise, timing, metrics, machine description.

Datasets (cite with any result):
- rt_polarity: Pang & Lee (2005), sentence polarity dataset v1.0.
- amazon_electronics: Blitzer, Dredze & Pereira (2007), Multi-Domain Sentiment Dataset, electronics.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
WORK = RESULTS / "raw"  # ignored by git: run directories and temporary data
TIMING = "bench-timing.json"  # wall and CPU seconds of a benchmark's training run, in its run directory
DEFAULT_DATASETS = ROOT.parent / "shared" / "datasets"

LABELS = ("negative", "positive")


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


def stratified_subset(rows: list[dict[str, Any]], size: int, seed: int) -> list[dict[str, Any]]:
    """``size`` rows with the label balance of ``rows``, chosen with ``seed``; in a seeded random order."""
    rng = np.random.default_rng(seed)
    by_label: dict[str, list[int]] = {}
    for index, row in enumerate(rows):
        by_label.setdefault(row["label"], []).append(index)
    chosen: list[int] = []
    labels = sorted(by_label)
    for position, label in enumerate(labels):
        members = by_label[label]
        share = size - len(chosen) if position == len(labels) - 1 else round(size * len(members) / len(rows))
        chosen.extend(rng.choice(members, size=share, replace=False).tolist())
    rng.shuffle(chosen)
    return [rows[i] for i in chosen]


def split_rest(rows: list[dict[str, Any]], taken: list[dict[str, Any]]) -> list[dict[str, Any]]:
    ids = {row["id"] for row in taken}
    return [row for row in rows if row["id"] not in ids]


def movie_reviews(datasets: Path) -> list[dict[str, Any]]:
    """The rt_polarity rows ``{"id", "text", "label"}`` in ``datasets``."""
    return read_jsonl(datasets / "rt_polarity.jsonl")


def product_reviews(datasets: Path) -> list[dict[str, Any]]:
    """The amazon_electronics rows in ``datasets``, as ``{"id", "text", "label"}`` (other fields dropped)."""
    return [
        {"id": r["id"], "text": r["text"], "label": r["label"]}
        for r in read_jsonl(datasets / "amazon_electronics.jsonl")
    ]


def write_splits(folder: Path, **splits: list[dict[str, Any]]) -> list[Path]:
    """Each split's rows as ``folder/NAME.jsonl``; the paths, in the order given."""
    return [write_jsonl(folder / f"{name}.jsonl", rows) for name, rows in splits.items()]


def flip_labels(
    rows: list[dict[str, Any]], fraction: float, seed: int
) -> tuple[list[dict[str, Any]], np.ndarray]:
    """Copies of ``rows`` with ``fraction`` of the labels flipped (seeded); and the flipped mask ``[N]``."""
    rng = np.random.default_rng([seed, 7919])
    count = int(round(fraction * len(rows)))
    flipped = np.zeros(len(rows), dtype=bool)
    flipped[rng.choice(len(rows), size=count, replace=False)] = True
    noisy = []
    for row, flip in zip(rows, flipped, strict=True):
        row = dict(row)
        if flip:
            row["label"] = LABELS[1 - LABELS.index(row["label"])]
        noisy.append(row)
    return noisy, flipped


@dataclass
class Timer:
    wall: float = 0.0
    cpu: float = 0.0

    def __iadd__(self, other: Timer) -> Timer:
        self.wall += other.wall
        self.cpu += other.cpu
        return self


@contextmanager
def timed() -> Iterator[Timer]:
    """Wall time and CPU time (all threads of this process) of a block."""
    timer = Timer()
    wall, cpu = time.perf_counter(), time.process_time()
    try:
        yield timer
    finally:
        timer.wall = time.perf_counter() - wall
        timer.cpu = time.process_time() - cpu


def ranking_metrics(scores: np.ndarray, positives: np.ndarray) -> dict[str, float]:
    """AUROC, average precision, precision and recall at k = number of positives (higher score = positive)."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    k = int(positives.sum())
    top = np.argsort(-scores, kind="stable")[:k]
    hits = int(positives[top].sum())
    return {
        "auroc": float(roc_auc_score(positives, scores)),
        "ap": float(average_precision_score(positives, scores)),
        "precision_at_k": hits / k,
        "recall_at_k": hits / k,  # equal to precision when k is the number of positives
    }


def machine() -> dict[str, Any]:
    import torch

    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
    }


def run_measured(command: list[str], env: dict[str, str], folder: Path, name: str) -> dict[str, Any]:
    """Run ``command`` in a fresh process: its wall seconds, its own peak RSS (MiB, ru_maxrss from wait4)
    and the JSON object it printed last, if any. Its output goes to ``folder/.child-{stdout,stderr}``;
    ``name`` names it in the error raised when it fails."""
    folder.mkdir(parents=True, exist_ok=True)
    out_path, err_path = folder / ".child-stdout", folder / ".child-stderr"
    with open(out_path, "w") as out, open(err_path, "w") as err:
        started = time.perf_counter()
        pid = os.posix_spawnp(
            command[0],
            command,
            env,
            file_actions=[(os.POSIX_SPAWN_DUP2, out.fileno(), 1), (os.POSIX_SPAWN_DUP2, err.fileno(), 2)],
        )
        _, status, usage = os.wait4(pid, 0)
        seconds = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{name} failed:\n{err_path.read_text()[-3000:]}")
    lines = [line for line in out_path.read_text().splitlines() if line.startswith("{")]
    result = json.loads(lines[-1]) if lines else {}
    return {"seconds": round(seconds, 2), "peak_rss_mib": round(usage.ru_maxrss / 1024, 1), **result}


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def save_json(name: str, value: Any) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(value, indent=1, default=_plain) + "\n", encoding="utf-8")
    return path


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(type(value))


def mean_std(values: list[float]) -> tuple[float, float]:
    array = np.asarray(values, dtype=np.float64)
    return float(array.mean()), float(array.std(ddof=1)) if len(array) > 1 else 0.0


def fmt(values: list[float], digits: int = 3) -> str:
    mean, std = mean_std(values)
    return f"{mean:.{digits}f} ± {std:.{digits}f}" if len(values) > 1 else f"{mean:.{digits}f}"


# ---- driving tod-clean through its Python API ---------------------------------------------------


def quiet_transformers() -> None:
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()


def train_config(**options: Any) -> Any:
    """A TrainConfig with the benchmark recipe (id column as instance key) and the given overrides."""
    from tod_clean.config import DataColumns, TrainConfig

    options.setdefault("columns", DataColumns(id_col="id"))
    return TrainConfig(**options)


def train_run(
    data_path: Path, run_path: Path, config: Any, on_epoch_end: Any = None, *, reuse: bool = False
) -> tuple[Any, Timer]:
    """Train through ``tod_clean.training.loop.train``; return (TrainResult, wall/CPU time).

    With ``reuse``, a complete run directory trained with the same options on the same file is kept and
    its recorded time returned instead (result ``None``): lets an interrupted benchmark pick up where it
    stopped. Runs saved before timing was recorded report the training loop's wall time and CPU time NaN.
    """
    from tod_clean.io.inputs import read_table
    from tod_clean.run.rundir import RunDir
    from tod_clean.training.loop import train

    quiet_transformers()
    if reuse and (saved := reusable_run(data_path, run_path, config)) is not None:
        return None, saved
    with timed() as timer:
        result = train(
            config,
            read_table(str(data_path)),
            RunDir(run_path),
            train_path=str(data_path),
            overwrite=True,
            on_epoch_end=on_epoch_end,
        )
    (run_path / TIMING).write_text(
        json.dumps({"wall": timer.wall, "cpu": timer.cpu}) + "\n", encoding="utf-8"
    )
    return result, timer


def movie_splits(
    datasets: Path, rows: int, val_rows: int, test_rows: int, seed: int
) -> tuple[list[dict], list[dict], list[dict]]:
    """(training, validation, test) rows of rt_polarity for one seed, disjoint: a seeded stratified
    training subset, then a stratified validation subset of the rest, then the first test rows after it."""
    movies = movie_reviews(datasets)
    train = stratified_subset(movies, rows, seed)
    rest = split_rest(movies, train)
    val = stratified_subset(rest, val_rows, seed + 100)
    return train, val, split_rest(rest, val)[:test_rows]


@contextmanager
def rows_left_out(rows: np.ndarray) -> Iterator[None]:
    """Within this block, training leaves training-table rows ``rows`` (0-based) out of every loss while
    keeping them in their batches: a retraining without them under the full run's randomness.

    Removing rows from the file instead reshuffles every epoch (the order is drawn for the new row count)
    and shifts the batches, so two retrainings that differ by 10 rows differ by their whole data order too.
    Here the batches, their order, the padding, the standard-dropout draws and the head's initialisation
    are those of the run on all rows; the left-out rows' labels become -100, which cross-entropy ignores
    (a batch's loss is the mean over its kept rows, scaled by the batch's full row count: a batch that lost
    one of 32 rows weighs its 31 by 1/31 instead of 1/32). A paired design (common random numbers) for
    measuring what a removal does; not what ``tod-clean train`` on a filtered file does.
    """
    import dataclasses

    import tod_clean.training.loop as loop

    original = loop._fit

    def fit(model: Any, tokenizer: Any, instances: Any, *args: Any, **kwargs: Any) -> Any:
        labels = np.array(instances.labels, copy=True)
        labels[rows] = -100
        return original(model, tokenizer, dataclasses.replace(instances, labels=labels), *args, **kwargs)

    loop._fit = fit
    try:
        yield
    finally:
        loop._fit = original


def reusable_run(data_path: Path, run_path: Path, config: Any) -> Timer | None:
    """The recorded time of a complete run of ``config`` on ``data_path`` in ``run_path``; else None."""
    from tod_clean.io.rows import sha256_of_file

    try:
        info = json.loads((run_path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if (
        info.get("status") != "complete"
        or info.get("train") != json.loads(json.dumps(config.to_dict()))
        or info.get("train_file", {}).get("sha256") != sha256_of_file(data_path)
    ):
        return None
    timing_path = run_path / TIMING
    if timing_path.is_file():
        saved = json.loads(timing_path.read_text(encoding="utf-8"))
        return Timer(saved["wall"], saved["cpu"])
    return Timer(sum(epoch["seconds"] for epoch in info["epochs"]), float("nan"))


def score(
    run_path: Path, data_path: Path, val_path: Path | None = None, influence: str = "auto"
) -> tuple[Any, Timer]:
    """Score through ``tod_clean.score.score_run`` with the estimator ``influence``; return (ScoreResult,
    wall/CPU time)."""
    from tod_clean.config import ScoreConfig
    from tod_clean.io.inputs import read_table
    from tod_clean.run.rundir import RunDir
    from tod_clean.score import score_run

    with timed() as timer:
        result = score_run(
            RunDir(run_path),
            read_table(str(data_path)),
            val_table=read_table(str(val_path)) if val_path is not None else None,
            config=ScoreConfig(influence_method=influence),
        )
    return result, timer


def evaluate(run_path: Path, data_path: Path) -> tuple[Any, Timer]:
    from tod_clean.evaluate import evaluate_run
    from tod_clean.io.inputs import read_table
    from tod_clean.run.rundir import RunDir

    with timed() as timer:
        result = evaluate_run(RunDir(run_path), read_table(str(data_path)))
    return result, timer
