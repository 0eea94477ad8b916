"""``tod-clean report``: the HTML page and its figures on tiny trained runs, its escaping, and bad input
(one clear error line, non-zero exit, nothing written)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
from PIL import Image

from tests.cli.conftest import invoke, ok, train_run, user_error
from tests.conftest import make_rows, write_rows
from tests.report.test_render import assert_self_contained
from tod_clean.report.render import figures_folder
from tod_clean.selection import worst_first

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
LONG_WORD = "x" * 400


@pytest.fixture(scope="module")
def model_args(tiny_model_dir: Path) -> list[str]:
    return [
        "--model", str(tiny_model_dir), "--epochs", "1", "--batch-size", "4", "--max-length", "16",
        "--device", "cpu", "--quiet",
    ]  # fmt: skip


def contradicting_val_rows() -> list[dict[str, str]]:
    """Each text twice, with both labels: whatever the model predicts, half the rows are misclassified."""
    rows = make_rows(4, offset=20, id_prefix="v")
    flipped = [
        {
            "id": f"w{i:03d}",
            "text": row["text"],
            "label": "negative" if row["label"] == "positive" else "positive",
        }
        for i, row in enumerate(rows)
    ]
    return rows + flipped


@pytest.fixture(scope="module")
def head_run(tmp_path_factory: pytest.TempPathFactory, model_args: list[str]) -> SimpleNamespace:
    """16 training rows keyed by id (one with markup, one very long), scope head, scored with --val."""
    folder = tmp_path_factory.mktemp("report")
    rows = make_rows(16)
    rows[5]["text"] = "<script>alert('x')</script> & a <b>bold</b> review"
    rows[6]["text"] = "A very long review " + " ".join(["that goes on and on"] * 60) + " " + LONG_WORD
    train = write_rows(folder / "train.jsonl", rows)
    val = write_rows(folder / "val.jsonl", contradicting_val_rows())
    run = train_run(folder, train, model_args, "--id-col", "id")
    ok(invoke("score", "--run", run, "--val", val, "--quiet"))
    return SimpleNamespace(folder=folder, train=train, val=val, run=run, rows=rows)


def outputs(folder: Path) -> tuple[Path, Path]:
    out = folder / "report.html"
    return out, figures_folder(out)


def assert_png(path: Path) -> None:
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.width > 200 and image.height > 100


# ---- the page --------------------------------------------------------------------------------------


def test_report_of_a_scored_run(head_run: SimpleNamespace, tmp_path: Path) -> None:
    out, folder = outputs(tmp_path)
    result = ok(
        invoke(
            "report", "--run", head_run.run, "--out", out, "--by", "influence", "--drop", "0.25", "--top", "4"
        )
    )
    assert result.stdout == ""
    summary = [line for line in result.stderr.splitlines() if line.startswith("report -> ")]
    assert summary and "4 of 16 rows flagged by the lowest influence" in " ".join(result.stderr.split())

    page = out.read_text(encoding="utf-8")
    assert_self_contained(page)
    assert str(head_run.run) in page and str(head_run.train.resolve()) in page
    assert "(final training loss" in page and str(head_run.val) in page

    scores = pd.read_parquet(head_run.run / "scores.parquet")
    order = worst_first(scores["influence"].to_numpy(), "influence")
    top_ids = scores["id"].to_numpy()[order[:4]]
    flagged_table = page.split('id="flagged"')[1].split('id="explanations"')[0]
    for row_id in top_ids:
        assert f">{row_id}<" in flagged_table
    assert flagged_table.count("<tr") == 1 + 4  # the header and --top rows
    assert flagged_table.count('class="flagged"') == 4

    explained = page.split('id="explanations"')[1]
    assert "validation id " in explained and ">hurt<" in explained and ">helped<" in explained
    assert "could not be explained" not in explained

    pngs = sorted(p.name for p in folder.iterdir())
    assert pngs == sorted(
        ["influence.png", "self_influence.png", "hidden_loss.png", "full_loss.png", "flagged_per_class.png"]
    )
    for png in folder.iterdir():
        assert_png(png)
    assert page.count('src="data:image/png;base64,') == 5
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary files left


def test_report_escapes_training_text_and_wraps_long_text(head_run: SimpleNamespace, tmp_path: Path) -> None:
    out, _ = outputs(tmp_path)
    ok(invoke("report", "--run", head_run.run, "--out", out, "--top", "16", "-q"))
    page = out.read_text(encoding="utf-8")
    assert "<script>" not in page and "<b>bold</b>" not in page
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; a &lt;b&gt;bold&lt;/b&gt;" in page
    assert "A very long review that goes on" in page and "…" in page  # shortened in the table
    assert LONG_WORD in page  # kept whole in the hover title


@pytest.mark.slow
def test_report_by_drop_and_max_explained(head_run: SimpleNamespace, tmp_path: Path) -> None:
    out, folder = outputs(tmp_path)
    result = ok(
        invoke(
            "report", "--run", head_run.run, "--out", out, "--by", "hidden_prob", "--drop", "0.5",
            "--max-explained", "1",
        )
    )  # fmt: skip
    assert "8 of 16 rows flagged by the lowest hidden_prob" in " ".join(result.stderr.split())
    assert "1 misclassified validation rows explained" in " ".join(result.stderr.split())
    page = out.read_text(encoding="utf-8")
    assert page.count('<section class="card">') == 1
    assert (folder / "hidden_prob.png").is_file()  # the ranking column gets its histogram too
    assert "--drop 0.5" in page


def test_report_with_an_explicit_val_file(head_run: SimpleNamespace, tmp_path: Path) -> None:
    val = write_rows(tmp_path / "other.csv", contradicting_val_rows()[:2] + contradicting_val_rows()[4:6])
    out, _ = outputs(tmp_path)
    ok(invoke("report", "--run", head_run.run, "--out", out, "--val", val, "-q"))
    page = out.read_text(encoding="utf-8")
    assert f"{val}: the full network gets 2 of 4 validation rows wrong" in page


def test_recorded_val_file_that_moved_becomes_a_note(head_run: SimpleNamespace, tmp_path: Path) -> None:
    run = Path(shutil.copytree(head_run.run, tmp_path / "run"))
    meta = json.loads((run / "scores.json").read_text())
    meta["val_file"] = str(tmp_path / "gone.jsonl")
    (run / "scores.json").write_text(json.dumps(meta))
    out, _ = outputs(tmp_path)
    ok(invoke("report", "--run", run, "--out", out, "-q"))
    page = out.read_text(encoding="utf-8")
    assert "gone.jsonl) was not found; pass --val FILE" in page
    assert '<section class="card">' not in page


def test_report_of_a_scope_none_run(tmp_path: Path, model_args: list[str]) -> None:
    train = write_rows(tmp_path / "train.csv", make_rows(10))
    run = train_run(tmp_path, train, model_args, "--scope", "none")
    ok(invoke("score", "--run", run, "-q"))
    out, folder = outputs(tmp_path)
    stale = folder / "influence.png"
    folder.mkdir()
    stale.write_bytes(b"an older report's figure")
    ok(invoke("report", "--run", run, "--out", out, "--drop", "0.2", "-q"))
    page = out.read_text(encoding="utf-8")
    assert_self_contained(page)
    assert sorted(p.name for p in folder.iterdir()) == ["flagged_per_class.png", "full_loss.png"]
    assert "histogram of influence" not in page and "histogram of full_loss" in page
    assert "pass --val FILE" in page  # the default influence (gauss-newton) would explain with one
    assert "highest <code>full_loss</code>" in page
    assert '<section class="card">' not in page
    ok(invoke("report", "--run", run, "--out", out, "--influence", "turn-over", "-q"))
    assert "scope &#39;none&#39; (no instance masks), so --influence turn-over" in out.read_text(
        encoding="utf-8"
    )


def test_report_default_ranking_and_drop_count(head_run: SimpleNamespace, tmp_path: Path) -> None:
    out, _ = outputs(tmp_path)
    result = ok(invoke("report", "--run", head_run.run, "--out", out, "--drop-count", "3", "-q"))
    # the default signal is said even with --quiet, as by filter
    assert result.stderr.splitlines() == [
        "ranking by influence on the validation set (the default when it was scored: removing the rows that "
        "hurt it most raised retrained accuracy under domain shift, where removing by full_loss lowered it, "
        "BENCHMARKS.md section 2); pass --by full_loss to remove the likeliest label errors first"
    ]
    page = out.read_text(encoding="utf-8")
    assert "tod-clean filter --by influence --drop-count 3</code> would drop" in page
    scores = pd.read_parquet(head_run.run / "scores.parquet")
    flagged_table = page.split('id="flagged"')[1].split('id="explanations"')[0]
    for row_id in scores.sort_values("rank")["id"].head(3):  # rank: filter's default ranking
        assert f">{row_id}<" in flagged_table
    assert flagged_table.count('class="flagged"') == 3


def test_report_threshold_keeps_a_row_of_each_class_and_warns(
    head_run: SimpleNamespace, tmp_path: Path
) -> None:
    out, folder = outputs(tmp_path)
    scores = pd.read_parquet(head_run.run / "scores.parquet")
    above_all = f"{scores['influence'].max() + 1:.6f}"
    args = ["report", "--run", head_run.run, "--out", out, "--by", "influence", "--threshold", above_all]
    result = ok(invoke(*args, "-q"))
    warning = (
        "class 'positive' loses 7 of 8 rows (87.50%): its last row kept (pass --allow-empty-class to drop "
        "it); class 'negative' loses 7 of 8 rows (87.50%): its last row kept (pass --allow-empty-class to "
        "drop it); against 87.50% of all rows: check these rows before removing them"
    )
    assert result.stderr.splitlines() == [f"warning: {warning}"]
    page = out.read_text(encoding="utf-8")
    assert f"--threshold {float(above_all)}</code> would drop" in page
    assert f"Warning: {warning}.".replace("'", "&#39;") in page
    user_error(
        invoke(*args, "--allow-empty-class"),
        f"--threshold {float(above_all)} drops all 16 rows by influence: nothing would be left to train on",
        absent=(out.with_name("other.html"),),
    )


# ---- bad input ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (("--by", "loss"), ("--by loss", "choose one of")),
        (("--drop", "0"), ("--drop", "got 0.0")),
        (("--drop", "1.5"), ("--drop", "got 1.5")),
        (("--top", "0"), ("--top", "got 0")),
        (("--max-explained", "-1"), ("--max-explained", "got -1")),
        (("--drop-count", "-1"), ("--drop-count must be 0 or more, got -1",)),
        (("--threshold", "nan"), ("--threshold must be a finite number, got nan",)),
        (("--drop", "0.1", "--drop-count", "2"), ("give exactly one of --drop, --drop-count, --threshold",)),
        (("--val", "missing.jsonl"), ("missing.jsonl", "no such file")),
        (("--device", "tpu"), ("--device 'tpu'",)),
    ],
)
def test_bad_options(
    head_run: SimpleNamespace, tmp_path: Path, args: tuple[str, ...], needles: tuple[str, ...]
) -> None:
    out, folder = outputs(tmp_path)
    user_error(
        invoke("report", "--run", head_run.run, "--out", out, *args, "-q"), *needles, absent=(out, folder)
    )


def test_bad_run_and_output(head_run: SimpleNamespace, tmp_path: Path, model_args: list[str]) -> None:
    out, folder = outputs(tmp_path)
    user_error(
        invoke("report", "--run", tmp_path / "nope", "--out", out),
        "no such run directory",
        absent=(out, folder),
    )
    (tmp_path / "empty").mkdir()
    user_error(
        invoke("report", "--run", tmp_path / "empty", "--out", out),
        "not a tod-clean run",
        absent=(out, folder),
    )
    missing = tmp_path / "no-folder" / "report.html"
    user_error(invoke("report", "--run", head_run.run, "--out", missing), "does not exist", absent=(missing,))
    user_error(
        invoke("report", "--run", head_run.run, "--out", tmp_path / "r.txt"), ".html", absent=(out, folder)
    )

    unscored = Path(shutil.copytree(head_run.run, tmp_path / "unscored"))
    (unscored / "scores.parquet").unlink()
    user_error(
        invoke("report", "--run", unscored, "--out", out),
        "no scores yet",
        "tod-clean score",
        absent=(out, folder),
    )


def test_by_a_column_the_run_does_not_have(tmp_path: Path, model_args: list[str]) -> None:
    train = write_rows(tmp_path / "train.jsonl", make_rows(8))
    run = train_run(tmp_path, train, model_args, "--scope", "none")
    ok(invoke("score", "--run", run, "-q"))
    out, folder = outputs(tmp_path)
    user_error(
        invoke("report", "--run", run, "--out", out, "--by", "self_influence"),
        "self_influence",
        "columns found",
        absent=(out, folder),
    )


# ---- in a real browser ---------------------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs chromium (apt-get install chromium)")
def test_report_renders_in_chromium(head_run: SimpleNamespace, tmp_path: Path) -> None:
    out, _ = outputs(tmp_path)
    ok(invoke("report", "--run", head_run.run, "--out", out, "-q"))
    png = tmp_path / "shot.png"
    script = Path(__file__).parents[2] / "scripts" / "render_report.py"
    done = subprocess.run(
        [sys.executable, str(script), str(out), str(png), "--height", "900"],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr
    with Image.open(png) as image:
        assert image.size == (1280, 900)
        colors = image.convert("RGB").getcolors(maxcolors=1 << 16)
    assert colors is None or len(colors) > 50  # a page with text and figures, not a blank screen
