"""Sharded scoring (``score --shard K/N``) and ``merge``: the parts put back together equal the unsharded
scores; merge refuses missing, repeated and foreign parts with one line naming the file."""

from __future__ import annotations

import glob
import json
import os
import re
import shlex
import shutil
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

import tod_clean.score
from tests.cli.conftest import invoke, model_args, ok, sha256, train_run, user_error  # noqa: F401
from tests.conftest import make_rows, write_rows
from tod_clean.runtime.shard import Shard

ROOT = Path(__file__).resolve().parents[2]
SLURM_SCRIPT = ROOT / "scripts" / "slurm_score_array.sh"


@pytest.fixture(scope="module", autouse=True)
def small_windows() -> Iterator[None]:
    """Self-scores batch rows inside windows of 4 rows here, so windows cut across the shards' blocks."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tod_clean.score, "SELF_WINDOW_ROWS", 4)
        yield


@pytest.fixture(scope="module")
def sharded(tmp_path_factory: pytest.TempPathFactory, model_args: list[str]) -> SimpleNamespace:  # noqa: F811
    """A head run on 17 rows (shards of 5, 6 and 6 rows) with ids, its unsharded scores, and 3 parts."""
    folder = tmp_path_factory.mktemp("shards")
    train = write_rows(folder / "train.jsonl", make_rows(17))
    val = write_rows(folder / "val.jsonl", make_rows(7, offset=30))
    run = train_run(folder, train, model_args, "--id-col", "id")
    ok(invoke("score", "--run", run, "--val", val, "--out", folder / "full.parquet", "--quiet"))
    parts = []
    for index in range(3):
        part = folder / f"part-{index}.parquet"
        ok(invoke("score", "--run", run, "--val", val, "--shard", f"{index}/3", "--out", part, "--quiet"))
        parts.append(part)
    return SimpleNamespace(folder=folder, train=train, val=val, run=run, parts=parts, model_args=model_args)


def assert_same_scores(merged: pd.DataFrame, full: pd.DataFrame) -> None:
    """Same columns, dtypes, row order and values: the self-scores bit for bit (a shard scores the whole
    length-sorting windows around its rows, so every row runs in the same batch as in the unsharded run);
    the default influence (gauss-newton) to float rounding, since a shard's rows get their gradients in
    other batches (the preconditioner is fitted on every row: without the other shards' rows it would be
    off by far more, see tests/influence/test_gradients.py)."""
    pd.testing.assert_frame_equal(
        merged.drop(columns="influence"), full.drop(columns="influence"), check_exact=True
    )
    scale = float(full["influence"].abs().max())
    assert scale > 0 and merged["influence"].dtype == full["influence"].dtype
    np.testing.assert_allclose(merged["influence"], full["influence"], rtol=0, atol=1e-5 * scale)


def test_three_shards_merge_to_the_unsharded_scores(sharded: SimpleNamespace, tmp_path: Path) -> None:
    full = pd.read_parquet(sharded.folder / "full.parquet")
    for index, part in enumerate(sharded.parts):
        frame = pd.read_parquet(part)
        start, stop = Shard(index, 3).rows(17)
        assert list(frame["row"]) == list(range(start, stop))  # global row numbers
        assert "rank" not in frame.columns  # rank depends on every row: merge computes it
        record = frame.attrs["tod_clean_shard"]
        assert (record["index"], record["count"], record["start"], record["stop"]) == (index, 3, start, stop)
        assert record["meta"]["val_sha256"] == sha256(sharded.val)
        assert frame.attrs["tod_clean_scores"] == full.attrs["tod_clean_scores"]
    merged_path = tmp_path / "merged.parquet"
    ok(invoke("merge", *reversed(sharded.parts), "--out", merged_path, "--quiet"))  # any order
    merged = pd.read_parquet(merged_path)
    assert_same_scores(merged, full)
    assert merged.attrs == full.attrs  # the run's fingerprint and training file, as score writes them
    # CSV too, and filter reads the merged file like score's own
    ok(invoke("merge", *sharded.parts, "--out", tmp_path / "merged.csv", "--quiet"))
    ok(invoke("score", "--run", sharded.run, "--val", sharded.val, "--out", tmp_path / "full.csv", "--quiet"))
    assert_same_scores(pd.read_csv(tmp_path / "merged.csv"), pd.read_csv(tmp_path / "full.csv"))
    for scores in (merged_path, tmp_path / "merged.csv"):
        kept = ok(invoke("filter", "--run", sharded.run, "--scores", scores, "--drop-count", "3", "-q"))
        expected = ok(invoke("filter", "--run", sharded.run, "--drop-count", "3", "-q"))
        assert kept.stdout == expected.stdout


def test_turn_over_shards_merge_to_its_unsharded_scores(sharded: SimpleNamespace, tmp_path: Path) -> None:
    """Turn-over dropout's own influence (the head scope's GEMM) shards too, to float32 rounding."""
    run = Path(shutil.copytree(sharded.run, tmp_path / "run"))  # an unsharded score rewrites its scores
    options = ["--run", run, "--val", sharded.val, "--influence", "turn-over", "--quiet"]
    ok(invoke("score", *options, "--out", tmp_path / "full.parquet"))
    parts = []
    for index in range(3):
        parts.append(tmp_path / f"part-{index}.parquet")
        ok(invoke("score", *options, "--shard", f"{index}/3", "--out", parts[-1]))
    ok(invoke("merge", *parts, "--out", tmp_path / "merged.parquet", "--quiet"))
    merged, full = pd.read_parquet(tmp_path / "merged.parquet"), pd.read_parquet(tmp_path / "full.parquet")
    assert json.loads((run / "scores.json").read_text())["influence_method"] == "exact"
    pd.testing.assert_frame_equal(
        merged.drop(columns="influence"), full.drop(columns="influence"), check_exact=True
    )
    scale = float(full["influence"].abs().max())
    assert scale > 0
    np.testing.assert_allclose(merged["influence"], full["influence"], rtol=0, atol=1e-6 * scale)


def test_shards_never_write_the_run_copy(sharded: SimpleNamespace, tmp_path: Path) -> None:
    before = sha256(sharded.run / "scores.parquet")
    ok(invoke("score", "--run", sharded.run, "--shard", "1/2", "--out", tmp_path / "p.parquet", "--quiet"))
    assert sha256(sharded.run / "scores.parquet") == before


def slurm_commands() -> list[str]:
    """The tod-clean command lines of the SLURM script, as written there."""
    lines = [line.strip() for line in SLURM_SCRIPT.read_text(encoding="utf-8").splitlines()]
    commands = [line for line in lines if line.startswith("tod-clean ")]
    assert len(commands) == 2 and "--shard" in commands[0] and " merge " in f" {commands[1]} "
    return commands


def run_script_command(command: str, env: dict[str, str]) -> None:
    """Expand the script's variables and globs as bash would, then run the command in-process."""
    expanded = re.sub(r"\$(\w+)", lambda match: env[match.group(1)], command)
    args: list[str] = []
    for word in shlex.split(expanded)[1:]:
        args.extend(sorted(glob.glob(word)) if "*" in word else [word])
    ok(invoke(*args))


@pytest.mark.slow
def test_slurm_script_scores_shards_and_merges_into_the_run(sharded: SimpleNamespace, tmp_path: Path) -> None:
    run = Path(shutil.copytree(sharded.run, tmp_path / "run"))
    (run / "scores.parquet").unlink()
    (run / "scores.json").unlink()
    score_line, merge_line = slurm_commands()
    env = {"RUN": str(run), "VAL": str(sharded.val), "SHARDS": "4", "PARTS": str(tmp_path / "parts")}
    os.makedirs(env["PARTS"])
    for task in range(4):
        run_script_command(score_line, {**env, "SLURM_ARRAY_TASK_ID": str(task)})
    run_script_command(merge_line, env)
    full = pd.read_parquet(sharded.folder / "full.parquet")
    assert_same_scores(pd.read_parquet(run / "scores.parquet"), full)
    assert_same_scores(pd.read_parquet(tmp_path / "parts" / "scores.parquet"), full)
    meta = json.loads((run / "scores.json").read_text(encoding="utf-8"))
    assert meta["val_sha256"] == sha256(sharded.val) and meta["rank_by"] == "influence"
    # filter (no --scores) and report find the merged scores in the run
    kept = ok(invoke("filter", "--run", run, "--drop-count", "2", "-q")).stdout
    assert kept == ok(invoke("filter", "--run", sharded.run, "--drop-count", "2", "-q")).stdout
    ok(invoke("report", "--run", run, "--out", tmp_path / "report.html", "--device", "cpu", "-q"))
    assert (tmp_path / "report.html").stat().st_size > 0


def edit_metadata(part: Path, dest: Path, key: str, field: str, value: object) -> Path:
    """A copy of ``part`` whose recorded ``attrs[key][field]`` is ``value``."""
    frame = pd.read_parquet(part)
    frame.attrs[key] = {**frame.attrs[key], field: value}
    frame.to_parquet(dest, index=False)
    return dest


def test_merge_refuses_bad_parts(sharded: SimpleNamespace, tmp_path: Path) -> None:
    p0, p1, p2 = (str(part) for part in sharded.parts)
    out = tmp_path / "merged.parquet"
    user_error(invoke("merge", p0, p2, "--out", out), "missing shard 1/3", "rows 5..10", absent=(out,))
    copy = shutil.copy(p1, tmp_path / "again.parquet")
    user_error(invoke("merge", p0, p1, copy, p2, "--out", out), str(copy), "shard 1/3", p1, absent=(out,))
    # the unsharded scores and a CSV are not parts
    full = str(sharded.folder / "full.parquet")
    user_error(invoke("merge", p0, full, p2, "--out", out), full, "not a shard", absent=(out,))
    csv = write_rows(tmp_path / "part.csv", [{"row": 0}])
    user_error(invoke("merge", p0, csv, "--out", out), str(csv), "not a shard", absent=(out,))
    # a part of another split, and a part whose rows were changed after scoring
    half = tmp_path / "half.parquet"
    ok(invoke("score", "--run", sharded.run, "--val", sharded.val, "--shard", "1/2", "--out", half, "-q"))
    user_error(invoke("merge", p0, half, p2, "--out", out), str(half), "of 2", absent=(out,))
    cut = tmp_path / "cut.parquet"
    frame = pd.read_parquet(p1)
    frame.iloc[:-1].to_parquet(cut, index=False)
    user_error(invoke("merge", p0, cut, p2, "--out", out), str(cut), "rows 5..10", absent=(out,))


def test_merge_refuses_parts_of_another_run_file_or_validation_set(
    sharded: SimpleNamespace, tmp_path: Path
) -> None:
    p0, p1, p2 = (str(part) for part in sharded.parts)
    out = tmp_path / "merged.parquet"
    # another run of the same training file: a copy whose recorded training differs (its fingerprint)
    other = Path(shutil.copytree(sharded.run, tmp_path / "other-run"))
    config = json.loads((other / "config.json").read_text(encoding="utf-8"))
    config["epochs"][-1]["note"] = "a copy trained again"
    (other / "config.json").write_text(json.dumps(config), encoding="utf-8")
    foreign = tmp_path / "foreign.parquet"
    ok(invoke("score", "--run", other, "--val", sharded.val, "--shard", "1/3", "--out", foreign, "-q"))
    user_error(invoke("merge", p0, foreign, p2, "--out", out), str(foreign), "another run", absent=(out,))
    # ... refused against --run as well, even when every part agrees with the others
    user_error(invoke("merge", p0, p1, p2, "--run", other), p0, "another run")
    # a part scored on a changed training file (its recorded sha256)
    changed = edit_metadata(
        Path(p1), tmp_path / "changed.parquet", "tod_clean_scores", "train_sha256", "0" * 64
    )
    user_error(
        invoke("merge", p0, changed, p2, "--out", out), str(changed), "another training file", absent=(out,)
    )
    # a part scored on another validation file
    val2 = write_rows(tmp_path / "val2.jsonl", make_rows(5, offset=40))
    moved = tmp_path / "val2-part.parquet"
    ok(invoke("score", "--run", sharded.run, "--val", val2, "--shard", "2/3", "--out", moved, "-q"))
    user_error(
        invoke("merge", p0, p1, moved, "--out", out), str(moved), "another validation file", absent=(out,)
    )
    no_val = tmp_path / "no-val.parquet"
    ok(invoke("score", "--run", sharded.run, "--shard", "2/3", "--out", no_val, "-q"))
    user_error(
        invoke("merge", p0, p1, no_val, "--out", out), str(no_val), "no validation file", absent=(out,)
    )


def test_merge_refuses_parts_scored_another_way(sharded: SimpleNamespace, tmp_path: Path) -> None:
    """Parts of one validation file whose influence was computed another way (another --influence, other
    validation columns) hold other numbers: merged, they would pass for one scoring."""
    out = tmp_path / "merged.parquet"
    rows = [{**row, "text2": row["text"][::-1], "label2": row["label"]} for row in make_rows(7, offset=30)]
    rows[0]["label2"] = "negative" if rows[0]["label"] == "positive" else "positive"
    val = write_rows(tmp_path / "val.jsonl", rows)

    def part(index: int, *options: str) -> str:
        path = tmp_path / f"part-{index}{'-'.join(options)}.parquet"
        args = ["score", "--run", sharded.run, "--val", val, "--shard", f"{index}/3", "--out", path, "-q"]
        ok(invoke(*args, *options))
        return str(path)

    p0, p2 = part(0), part(2)
    for options, needle in (
        (("--influence", "linear"), "scored with --influence linear, but {p0} with --influence gauss-newton"),
        (
            ("--val-label-col", "label2"),
            "scored with --val-label-col label2, but {p0} with --val-label-col label",
        ),
        (("--val-text-col", "text2"), "scored with --val-text-col text2, but {p0} with --val-text-col text"),
    ):
        odd = part(1, *options)
        user_error(
            invoke("merge", p0, odd, p2, "--out", out), f"{odd}: " + needle.format(p0=p0), absent=(out,)
        )
    ok(invoke("merge", p0, part(1, "--influence", "gauss-newton"), p2, "--out", out, "-q"))  # auto is it


@pytest.mark.parametrize(
    ("shard", "needle"),
    [
        ("0/0", "1 or more"),
        ("3/2", "0 to 1"),
        ("2/2", "0 to 1"),
        ("a/b", "K/N"),
        ("1", "K/N"),
        ("-1/2", "K/N"),
    ],
)
def test_shard_option_refuses_bad_values(
    sharded: SimpleNamespace, tmp_path: Path, shard: str, needle: str
) -> None:
    out = tmp_path / "part.parquet"
    result = invoke("score", "--run", sharded.run, "--shard", shard, "--out", out, "-q")
    assert result.exit_code == 1  # a bad value (README: 1), not a parser-level usage error (2)
    user_error(result, "--shard", needle, absent=(out,))


def test_shard_needs_a_parquet_out_and_no_whole_run_outputs(sharded: SimpleNamespace, tmp_path: Path) -> None:
    run = sharded.run
    user_error(invoke("score", "--run", run, "--shard", "0/2", "-q"), "--out PART.parquet")
    out = tmp_path / "part.csv"
    user_error(
        invoke("score", "--run", run, "--shard", "0/2", "--out", out, "-q"),
        "--out PART.parquet",
        absent=(out,),
    )
    part = tmp_path / "part.parquet"
    user_error(
        invoke(
            "score",
            "--run",
            run,
            "--val",
            sharded.val,
            "--shard",
            "0/2",
            "--out",
            part,
            "--matrix",
            tmp_path / "m.npy",
        ),
        "--matrix",
        absent=(part,),
    )
    user_error(invoke("merge", *sharded.parts), "--out")


def test_a_shard_with_no_rows_is_refused(sharded: SimpleNamespace, tmp_path: Path) -> None:
    """More shards than rows would leave shards empty: refused before any work, naming the limit."""
    assert Shard(0, 18).rows(17) == (0, 0)
    part = tmp_path / "empty.parquet"
    result = invoke("score", "--run", sharded.run, "--shard", "0/18", "--out", part, "-q")
    assert result.exit_code == 1
    user_error(result, "--shard 0/18", "at most 17 shards", absent=(part,))
    ok(invoke("score", "--run", sharded.run, "--shard", "16/17", "--out", part, "-q"))  # one row each
    assert list(pd.read_parquet(part)["row"]) == [16]
