"""Options shared by several commands, and the options built from the config dataclasses' fields.

A config field declared with ``tod_clean.config.option`` (type, default, help text, flag) becomes a
command's option through ``config_option``; ``with_options`` puts such options in a command's signature
in place of its ``**options``, where Typer reads them. So an option of ``train`` is declared once, in
``TrainConfig``, and the command line, the API, config.json and ``--resume``'s comparison follow from it.
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
from collections.abc import Callable
from enum import Enum
from typing import Annotated, Any, TypeVar

import typer

from tod_clean.config import DataColumns, ScoreConfig, TrainConfig, flag_of
from tod_clean.errors import ConfigError

F = TypeVar("F", bound=Callable[..., Any])


def _declared(config: type, name: str) -> tuple[dataclasses.Field[Any], Any]:
    """The field ``name`` of ``config`` and its type (resolved: the module postpones annotations)."""
    field = next(f for f in dataclasses.fields(config) if f.name == name)
    return field, typing.get_type_hints(config)[name]


def config_option(config: type, name: str, *, help: str | None = None) -> inspect.Parameter:
    """The command-line option of the ``config`` field ``name``: its type, default, flag and help text
    (``help`` replaces the text where a command says more specifically what the option does there)."""
    field, annotation = _declared(config, name)
    default = field.default if field.default_factory is dataclasses.MISSING else field.default_factory()
    if field.metadata.get("typed") is not None:
        annotation, default = field.metadata["typed"]
    flag = field.metadata.get("flag")
    info = typer.Option(*([flag] if flag else []), help=help or field.metadata["help"])
    return inspect.Parameter(
        name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=Annotated[annotation, info]
    )


def train_options(*names: str, help: dict[str, str] | None = None) -> list[inspect.Parameter]:
    """The options of ``TrainConfig`` (its columns first) named by ``names`` (default: every one), in the
    order they are declared."""
    declared = [f.name for f in dataclasses.fields(DataColumns)]
    declared += [f.name for f in dataclasses.fields(TrainConfig) if f.name not in ("columns", "mask_scheme")]
    chosen = [name for name in declared if not names or name in names]
    help = help or {}
    return [
        config_option(DataColumns if name in COLUMNS else TrainConfig, name, help=help.get(name))
        for name in chosen
    ]


COLUMNS = tuple(f.name for f in dataclasses.fields(DataColumns))


def train_spelling(name: str) -> str:
    """A ``TrainConfig`` or ``DataColumns`` field's name as the command line spells it (learning_rate ->
    --lr), for ``OptionError.spelled``."""
    return flag_of(TrainConfig, name)


def with_options(*options: inspect.Parameter, after: str) -> Callable[[F], F]:
    """Put ``options`` in the command's signature after its parameter ``after``, in place of its
    ``**options`` (which receives them), for Typer to read."""

    def decorate(command: F) -> F:
        signature = inspect.signature(command, eval_str=True)
        parameters: list[inspect.Parameter] = []
        for parameter in signature.parameters.values():
            if parameter.kind is inspect.Parameter.VAR_KEYWORD:
                continue
            parameters.append(parameter.replace(kind=inspect.Parameter.KEYWORD_ONLY))
            if parameter.name == after:
                parameters.extend(options)
        command.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
        return command

    return decorate


class StdinFormat(str, Enum):
    """The formats data on standard input (``-``) may be in; a file says its own by its extension."""

    jsonl = "jsonl"
    csv = "csv"
    tsv = "tsv"
    json = "json"
    parquet = "parquet"


# One declaration for every command that reads data from standard input.
StdinFormatOption = Annotated[
    StdinFormat | None,
    typer.Option(
        "--stdin-format",
        metavar="<format>",  # the choices are in the help: a long metavar would widen every command's help
        help="Format of the data read from - (standard input): jsonl (default), csv, tsv, json or parquet. "
        "A file's format is its extension's: refused when no input is -.",
        show_default=False,
    ),
]


def stdin_format_for(stdin_format: StdinFormat | None, *inputs: str | None) -> str | None:
    """The value of --stdin-format, refused when none of the command's ``inputs`` is ``-``."""
    if stdin_format is None:
        return None
    if "-" not in inputs:
        named = [str(path) for path in inputs if path is not None]
        raise ConfigError(
            "--stdin-format applies to - (standard input) only"
            + (f", not to {named[0]}" if named else ", and no input here is -")
        )
    return stdin_format.value


def _score_field(name: str) -> Any:
    field, annotation = _declared(ScoreConfig, name)
    flag = field.metadata.get("flag")
    return Annotated[annotation, typer.Option(*([flag] if flag else []), help=field.metadata["help"])]


# --influence and --batch-size of the commands that run a trained model (ScoreConfig's fields).
InfluenceOption = _score_field("influence_method")
BatchSizeOption = _score_field("batch_size")
INFERENCE_BATCH_SIZE: int = ScoreConfig.batch_size
DeviceOption = Annotated[str, typer.Option(help=TrainConfig.__dataclass_fields__["device"].metadata["help"])]
QuietOption = Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")]
MovedTrainOption = Annotated[
    str | None,
    typer.Option(help="The training file, if it moved (must be unchanged: sha256 is checked)."),
]

# The validation set's split and columns (score, explain; report takes the split).
ValSplitOption = Annotated[
    str | None, typer.Option(help="Split of --val (a DatasetDict folder or an hf: dataset).")
]
ValTextColOption = Annotated[str | None, typer.Option(help="Text column of --val (default: training's).")]
ValTextPairColOption = Annotated[str | None, typer.Option(help="Second text column of --val.")]
ValLabelColOption = Annotated[str | None, typer.Option(help="Label column of --val (default: training's).")]
