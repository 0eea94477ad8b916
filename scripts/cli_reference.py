"""Write docs/cli.md, the command reference, from the CLI's own --help (so the two cannot drift).

    python scripts/cli_reference.py          # rewrite docs/cli.md
    python scripts/cli_reference.py --check  # exit 1 if docs/cli.md is not what the CLI prints

tests/cli/test_help.py runs the check.
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from typer.testing import CliRunner

from tod_clean.cli import app

REFERENCE = Path(__file__).resolve().parent.parent / "docs" / "cli.md"
WIDTH = 100  # the help's line width: fixed, so the file does not depend on the terminal


def help_text(*args: str) -> str:
    result = CliRunner().invoke(app, [*args, "--help"], terminal_width=WIDTH, env={"COLUMNS": str(WIDTH)})
    if result.exit_code != 0:
        raise RuntimeError(f"tod-clean {' '.join(args)} --help failed: {result.output}")
    return result.output.rstrip() + "\n"


def reference() -> str:
    """The whole page: the root help, then each command's, in the order --help lists them."""
    group = typer.main.get_command(app)
    names = group.list_commands(None)  # type: ignore[attr-defined, arg-type]
    parts = [
        "# tod-clean command reference\n\n",
        "Generated from the CLI by `python scripts/cli_reference.py`; the test suite checks that it is\n",
        "current. The [user guide](guide.md) explains the commands and their outputs.\n\n",
        "```\n$ tod-clean --help\n" + help_text() + "```\n",
    ]
    for name in names:
        parts.append(f"\n## `tod-clean {name}`\n\n```\n$ tod-clean {name} --help\n{help_text(name)}```\n")
    return "".join(parts)


def main() -> int:
    text = reference()
    if "--check" in sys.argv[1:]:
        current = REFERENCE.read_text(encoding="utf-8") if REFERENCE.exists() else ""
        if current != text:
            print(f"{REFERENCE} is out of date: run python scripts/cli_reference.py", file=sys.stderr)
            return 1
        return 0
    REFERENCE.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
