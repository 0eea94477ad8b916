"""Progress in a log (stderr not a terminal): plain lines at an interval, not a bar shown only at the end."""

from __future__ import annotations

import pytest

from tod_clean.cli import LogProgress, RichProgress, progress_for
from tod_clean.runtime.progress import NullProgress


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_log_progress_prints_a_line_per_interval(capsys: pytest.CaptureFixture[str]) -> None:
    clock = FakeClock()
    progress = LogProgress(interval=30.0, clock=clock)
    progress.start("epoch 1/2", 100)
    for _ in range(10):  # 10 steps of 10 s each: lines at 30, 60 and 90 s
        clock.now += 10.0
        progress.advance(10, rows_per_s=12.5)
    progress.finish()
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "epoch 1/2: started (100 steps)"
    assert lines[1] == "epoch 1/2: 30/100 (30%), 30 s, eta 70 s  rows/s 12.5"
    assert lines[2] == "epoch 1/2: 60/100 (60%), 60 s, eta 40 s  rows/s 12.5"
    assert lines[3] == "epoch 1/2: 90/100 (90%), 90 s, eta 10 s  rows/s 12.5"
    assert lines[4] == "epoch 1/2: 100/100 (100%), 100 s  rows/s 12.5 done"
    assert len(lines) == 5


def test_log_progress_shows_markup_like_descriptions_verbatim(capsys: pytest.CaptureFixture[str]) -> None:
    progress = LogProgress(interval=0.0, clock=FakeClock())
    progress.start("score [/x] hf:data", 1)
    progress.finish()
    assert capsys.readouterr().err.splitlines()[0] == "score [/x] hf:data: started (1 steps)"


def test_progress_sink_follows_the_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    from tod_clean import cli

    assert isinstance(progress_for(True), NullProgress)
    monkeypatch.setattr(type(cli.console), "is_terminal", property(lambda self: False))
    assert isinstance(progress_for(False), LogProgress)
    monkeypatch.setattr(type(cli.console), "is_terminal", property(lambda self: True))
    assert isinstance(progress_for(False), RichProgress)


def test_summary_lines_are_not_broken_in_a_log(capsys: pytest.CaptureFixture[str]) -> None:
    """With stderr a file (nohup, SLURM), a long message stays one line: Rich cut lines at 80 columns
    there, splitting summaries such as 'kept 310 of 320 rows ... -> PATH' in two."""
    from tod_clean.cli import console

    text = (
        "kept 310 of 320 rows; dropped 10 (3.12%) with the highest full_loss -> "
        + "/data/" * 10
        + "kept.jsonl"
    )
    console.print(text, highlight=False)
    assert capsys.readouterr().err == text + "\n"
