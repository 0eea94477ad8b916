"""What the console script loads before it answers: help and input errors come before training's heavy
imports (transformers' trainer utilities, peft), which take seconds. Checked by module, not by time."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

PROBE = """
import sys
from typer.testing import CliRunner
from tod_clean.cli import app
result = CliRunner().invoke(app, sys.argv[1:])
print(result.exit_code, "peft" in sys.modules, "tod_clean.training.loop" in sys.modules)
print(result.output)
"""


def probe(*args: str) -> tuple[str, str]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *args], capture_output=True, text=True, timeout=300, check=True
    )
    first, _, output = done.stdout.partition("\n")
    return first, output


def test_help_loads_no_training_code() -> None:
    first, output = probe("train", "--help")
    assert first == "0 False False", output


def test_a_missing_column_is_reported_before_training_code_loads(tmp_path: Path) -> None:
    data = tmp_path / "train.jsonl"
    data.write_text('{"txt": "a", "label": "x"}\n{"txt": "b", "label": "y"}\n', encoding="utf-8")
    first, output = probe("train", str(data), "--run", str(tmp_path / "run"))
    assert first == "1 False False", output
    assert "column 'text' not found; columns found: txt, label" in output
    assert not (tmp_path / "run").exists()
