"""Every command's --help renders (plain text, no markup crash) and lists every option it takes."""

from __future__ import annotations

import pytest
import typer
from typer.core import TyperOption
from typer.testing import CliRunner

from tod_clean.cli import WORKFLOW, app

runner = CliRunner()
COMMANDS = typer.main.get_command(app)
NAMES = sorted(COMMANDS.commands)  # type: ignore[attr-defined]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_of_every_command_renders_every_option(name: str, flag: str) -> None:
    result = runner.invoke(app, [name, flag])
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"Usage: tod-clean {name} ")
    for param in COMMANDS.commands[name].params:  # type: ignore[attr-defined]
        if isinstance(param, TyperOption):
            for option in param.opts:
                assert option in result.output, f"{name} --help does not show {option}"
        if param.help:
            # Help texts are shown as written (no markup eaten): their first words appear.
            words = " ".join(param.help.split()[:3])
            assert words in " ".join(result.output.split()), f"{name}: help of {param.name} not shown"


def test_root_help_lists_commands_in_workflow_order() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0, result.output
    listed = [line.split()[0] for line in result.output.split("Commands:")[1].strip().splitlines()]
    assert sorted(listed) == NAMES
    in_workflow = [name for name in listed if name in WORKFLOW]
    assert in_workflow == sorted(in_workflow, key=WORKFLOW.index)
    assert listed[0] == "train"


def test_usage_error_points_to_a_help_that_works() -> None:
    result = runner.invoke(app, ["filter", "--no-such-option"])
    assert result.exit_code == 2
    assert "tod-clean filter --help" in result.output or "tod-clean filter -h" in result.output
    assert runner.invoke(app, ["filter", "--help"]).exit_code == 0


def test_train_help_names_every_scope() -> None:
    from tod_clean.scopes import SCOPE_KINDS

    text = " ".join(runner.invoke(app, ["train", "--help"]).output.split())
    for kind in SCOPE_KINDS:
        assert (f"{kind}:K" if kind in ("layers", "ffn") else kind) in text, kind


def test_the_command_reference_in_docs_is_what_the_cli_prints() -> None:
    """docs/cli.md is generated from --help: regenerate it (python scripts/cli_reference.py) when an
    option changes, so the reference cannot drift from the CLI."""
    import importlib.util
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "scripts" / "cli_reference.py"
    spec = importlib.util.spec_from_file_location("cli_reference", script)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    current = module.REFERENCE.read_text(encoding="utf-8")
    assert current == module.reference(), "docs/cli.md is out of date: run python scripts/cli_reference.py"
    assert "## `tod-clean train`" in current and "--keep-prob" in current
