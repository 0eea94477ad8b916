"""The run directory: config, weights, tokenizer, checkpoints and scores of one turn-over-dropout run.

Layout::

    run/
      .tod-clean-run        marker: this folder is a tod-clean run (JSON: tool, format version)
      config.json           every option, label map, masks, instance-key scheme, training file + sha256,
                            per-epoch metrics and status
      model.safetensors     weights of the whole classifier (encoder + head), written at every epoch
      encoder/config.json   the encoder architecture, to rebuild it with no download
      tokenizer/            the tokenizer files (text runs)
      image_processor/      the image processor's preprocessor_config.json (image runs)
      checkpoint/epoch-N/   weights, optimizer, scheduler and RNG state of the last finished epoch, for
                            --resume (safetensors + JSON); removed when training completes
      train.<format>        a copy of the training data when it came from standard input, in its format
                            (train.jsonl, train.csv, ...: read back by that extension)
      scores.parquet        the latest `score` output, found by `filter` with no arguments
      scores.json           what produced scores.parquet
      tokens/               the training rows' token ids (memory-mapped by train and score; a cache)

Only safetensors and JSON are read back: nothing is ever unpickled.

tod-clean replaces or deletes files only in a folder that provably holds a run (the marker, or, for runs
written before the marker existed, a config.json that reads as a tod-clean run), only with --overwrite,
and then only the files listed above: anything else in the folder is left alone.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from tod_clean.config import TrainConfig
from tod_clean.encoding import TOKENIZER_FILES, empty_vocabulary
from tod_clean.errors import ConfigError, RunDirError, first_line, spelled, switched_on
from tod_clean.io.formats import FORMATS
from tod_clean.io.paths import atomic_output, check_distinct_outputs, stream_kind
from tod_clean.modeling.classifier import TodClassifier
from tod_clean.modeling.loading import build_classifier
from tod_clean.scopes import Scope
from tod_clean.version import __version__

CONFIG = "config.json"
WEIGHTS = "model.safetensors"
ENCODER_DIR = "encoder"
TOKENIZER_DIR = "tokenizer"
IMAGE_PROCESSOR_DIR = "image_processor"
CHECKPOINT_DIR = "checkpoint"
STDIN_COPY = "train.jsonl"  # the copy of JSON Lines from stdin (the only kind before --stdin-format)
# The copy of standard input in each format: its extension says how score and filter read it back.
STDIN_COPIES = tuple(f"train{extension}" for extension in FORMATS)
SCORES = "scores.parquet"
SCORES_META = "scores.json"
TOKENS_DIR = "tokens"
MARKER = ".tod-clean-run"
MARKER_FORMAT = 1
# Everything tod-clean writes in a run directory (the stdin copy only when it made one).
OWN_FILES = (
    MARKER,
    CONFIG,
    WEIGHTS,
    ENCODER_DIR,
    TOKENIZER_DIR,
    IMAGE_PROCESSOR_DIR,
    CHECKPOINT_DIR,
    SCORES,
    SCORES_META,
    TOKENS_DIR,
)


def write_json(path: Path, value: Any) -> None:
    """Write JSON atomically (temporary file + rename)."""
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(value, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def save_tensors(
    path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None
) -> None:
    """Write tensors as safetensors atomically."""
    with atomic_output(path) as tmp:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp), metadata=metadata)


@dataclass
class TrainFile:
    """The training data a run was trained on."""

    path: str
    sha256: str
    rows: int
    format: str
    split: str | None = None  # the split of a DatasetDict folder


@dataclass
class RunInfo:
    """Everything config.json holds about a run."""

    train: TrainConfig
    labels: list[Any]
    train_file: TrainFile
    instance_key: str  # "row" (row number) or "id:<column>" (hash of that column's value)
    encoder: dict[str, Any]
    epochs: list[dict[str, Any]] = field(default_factory=list)
    status: str = "training"
    version: str = __version__
    world_size: int = 1  # processes of the latest training (accelerate launch --num_processes)

    @property
    def scope(self) -> Scope:
        return self.train.parsed_scope

    @property
    def keep_prob(self) -> float:
        """The keep probability the run trained with (``TrainConfig`` resolves a None)."""
        assert self.train.keep_prob is not None
        return self.train.keep_prob

    def to_dict(self) -> dict[str, Any]:
        return {
            "tod_clean_version": self.version,
            "status": self.status,
            "train": self.train.to_dict(),
            "labels": self.labels,
            "train_file": {k: v for k, v in vars(self.train_file).items() if k != "split" or v is not None},
            "instance_key": self.instance_key,
            "masks": {
                "scope": str(self.scope),
                "keep_prob": self.train.keep_prob,
                "mask_seed": self.train.mask_seed,
                "scheme": self.train.mask_scheme,
                "groups": self.train.mask_groups,
                "hash": "lowbias32 counter hash of (mask_seed, instance_key, site, unit)"
                + (", 64-bit key in two 32-bit lanes" if self.train.mask_scheme >= 2 else ""),
                "exposed_scale": "1/keep_prob",
                "hidden_scale": "1/(1-keep_prob)",
            },
            "encoder": self.encoder,
            "world_size": self.world_size,
            "epochs": self.epochs,
        }

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> RunInfo:
        """Raises KeyError, TypeError or ValueError (or ConfigError) for a config that is not a run's."""
        expected = {"train": dict, "labels": list, "train_file": dict, "instance_key": str}
        for key, kind in expected.items():
            if not isinstance(values[key], kind):
                raise TypeError(f"{key!r} is {type(values[key]).__name__}, expected {kind.__name__}")
        if not isinstance(values.get("epochs", []), list) or not all(
            isinstance(epoch, dict) for epoch in values.get("epochs", [])
        ):
            raise TypeError("'epochs' must be a list of objects")
        return cls(
            train=TrainConfig.from_dict(values["train"]),
            labels=list(values["labels"]),
            train_file=TrainFile(**values["train_file"]),
            instance_key=values["instance_key"],
            encoder=values.get("encoder", {}),
            epochs=list(values.get("epochs", [])),
            status=values.get("status", "training"),
            version=values.get("tod_clean_version", "?"),
            world_size=int(values.get("world_size", 1)),
        )

    def train_source(self, *, instead: str | None = None) -> str:
        """The recorded training data, to read again (score, filter, resume...). Refuses, instead of
        blocking on it forever, data that came from a pipe or a device: it can be read only once.
        ``instead`` says how the caller gives the data another way (default: as a file, by ``train``)."""
        path = self.train_file.path
        kind = stream_kind(path)
        if kind is not None:
            raise RunDirError(
                f"{path}: this run was trained on {kind}, which cannot be read again; "
                + (instead or f"pass the same rows as a file with {spelled('train', 'FILE')}")
            )
        return path

    @property
    def id_col(self) -> str | None:
        return self.instance_key.split(":", 1)[1] if self.instance_key.startswith("id:") else None

    @property
    def fingerprint(self) -> str:
        """A sha256 that tells this run's outputs from another's: options, labels, training data and the
        per-epoch metrics (whose timings differ between any two trainings). A copied run keeps it."""
        identity = {
            "train": self.train.to_dict(),
            "labels": self.labels,
            "train_sha256": self.train_file.sha256,
            "rows": self.train_file.rows,
            "instance_key": self.instance_key,
            "epochs": self.epochs,
        }
        text = json.dumps(identity, sort_keys=True, ensure_ascii=True, default=str)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()


def stdin_copy_name(fmt: str) -> str:
    """The file a run keeps its copy of standard input in, for data in format ``fmt`` (train.csv, ...)."""
    return f"train.{fmt}"


class RunDir:
    """Paths and I/O of one run directory."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def file(self, name: str) -> Path:
        return self.path / name

    def exists(self) -> bool:
        return self.file(CONFIG).is_file()

    def has_marker(self) -> bool:
        """Whether the folder holds the marker tod-clean writes into every run it creates."""
        try:
            values = json.loads(self.file(MARKER).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
        return isinstance(values, dict) and values.get("tool") == "tod-clean" and "format" in values

    def is_run(self) -> bool:
        """Whether this folder provably holds a tod-clean run, so that --overwrite may replace it.

        Runs written before the marker existed are recognised by a config.json that reads as a run.
        """
        if self.has_marker():
            return True
        try:
            values = json.loads(self.file(CONFIG).read_text(encoding="utf-8"))
            RunInfo.from_dict(values)
        except (OSError, ValueError, KeyError, TypeError, AttributeError, ConfigError):
            return False
        return isinstance(values, dict) and "tod_clean_version" in values

    def stdin_copy(self) -> Path | None:
        """The run's copy of training data read from standard input, if it has one."""
        try:
            recorded = json.loads(self.file(CONFIG).read_text(encoding="utf-8"))["train_file"]["path"]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        copies = (self.file(name) for name in STDIN_COPIES)
        return next((copy for copy in copies if copy.is_file() and Path(recorded) == copy.resolve()), None)

    def own_files(self, *, exclude: tuple[str, ...] = ()) -> dict[str, Path]:
        """tod-clean's files in this run (named for messages), for checks that outputs avoid them."""
        names = [name for name in (*OWN_FILES, *STDIN_COPIES) if name not in exclude]
        return {f"the run's {name}": self.file(name) for name in names}

    def check_target(self, *, overwrite: bool, stdin_copy: str | None = None) -> None:
        """Refuse, before any work, to train into a folder that holds anything but a tod-clean run,
        or into a run without ``overwrite``, or a file named ``stdin_copy`` (the copy of standard input
        to write, see ``stdin_copy_name``) that tod-clean did not write. Changes nothing."""
        if self.path.exists() and not self.path.is_dir():
            raise RunDirError(f"{self.path}: exists and is not a folder")
        self.check_writable()
        if not self.path.exists() or not any(self.path.iterdir()):
            return
        if not self.is_run():
            raise RunDirError(
                f"{self.path}: is not empty and is not a tod-clean run directory; tod-clean writes runs "
                "only into a new or empty folder (choose another --run)"
            )
        if not overwrite:
            raise RunDirError(f"{self.path}: already holds a run; {self._how_to_continue()}")
        copy = self.file(stdin_copy) if stdin_copy is not None else None
        if copy is not None and copy.exists() and self.stdin_copy() != copy:
            raise RunDirError(
                f"{copy}: was not written by tod-clean, and the copy of standard input would replace it "
                "(move it, or choose another --run)"
            )

    def check_writable(self) -> None:
        """Refuse, before the model loads and trains, a run folder that cannot be written or created: a
        read-only folder or file system, or one of another user."""
        folder = Path(os.path.abspath(self.path))
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        if not folder.is_dir():
            raise RunDirError(f"{self.path}: cannot create the run folder ({folder} is not a folder)")
        # access() also says no on a read-only file system, where even root cannot write
        if not os.access(folder, os.W_OK | os.X_OK):
            where = "the folder is" if folder == Path(os.path.abspath(self.path)) else f"{folder} is"
            raise RunDirError(f"{self.path}: cannot write the run there ({where} not writable)")

    def create(self, *, overwrite: bool, stdin_copy: str | None = None) -> bool:
        """Make the folder ready for a new run and mark it; returns whether the folder was created.

        A run being replaced loses exactly tod-clean's own files; nothing else in the folder is touched.
        """
        self.check_target(overwrite=overwrite, stdin_copy=stdin_copy)
        created = not self.path.exists()
        if not created:
            self.remove_own_files()
        self.path.mkdir(parents=True, exist_ok=True)
        write_json(self.file(MARKER), {"tool": "tod-clean", "format": MARKER_FORMAT, "version": __version__})
        return created

    def remove_own_files(self) -> None:
        """Delete the files tod-clean writes in a run (see the module docstring), and nothing else."""
        doomed = [self.file(name) for name in OWN_FILES if name != MARKER]
        copy = self.stdin_copy()  # read config.json before it goes
        if copy is not None:
            doomed.append(copy)
        for path in (*doomed, self.file(MARKER)):  # the marker last: an interrupted removal stays a run
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)

    def discard(self, *, created: bool) -> None:
        """Remove a run that failed before it could be resumed; the folder too if tod-clean made it."""
        self.remove_own_files()
        if created:
            with contextlib.suppress(OSError):  # something else was put there meanwhile: leave it
                self.path.rmdir()

    def check_outputs(self, inputs: dict[str, str | None]) -> None:
        """Refuse input files that are among the files a new run would write or delete here."""
        check_distinct_outputs(inputs, self.own_files())

    def read_info(self) -> RunInfo:
        if not self.path.is_dir():
            raise RunDirError(f"{self.path}: no such run directory; create one with 'tod-clean train'")
        if not self.exists():
            raise RunDirError(f"{self.path}: not a tod-clean run directory (no {CONFIG})")
        try:
            values = json.loads(self.file(CONFIG).read_text(encoding="utf-8"))
            if not isinstance(values, dict):
                raise TypeError(f"holds a JSON {type(values).__name__}, expected an object")
            return RunInfo.from_dict(values)
        except KeyError as error:
            raise RunDirError(
                f"{self.file(CONFIG)}: not a valid tod-clean run config (no key {error})"
            ) from None
        except (
            ValueError,
            TypeError,
            AttributeError,
            ConfigError,
        ) as error:  # JSONDecodeError is a ValueError
            raise RunDirError(f"{self.file(CONFIG)}: not a valid tod-clean run config ({error})") from None
        except OSError as error:
            raise RunDirError(f"{self.file(CONFIG)}: cannot read ({error.strerror})") from None

    def read_complete_info(self) -> RunInfo:
        info = self.read_info()
        if info.status != "complete" or not self.file(WEIGHTS).is_file():
            done = f"{self.path}: training did not finish ({len(info.epochs)} of {info.train.epochs} epochs)"
            if info.status != "complete" and self.can_resume(info):
                raise RunDirError(f"{done}; continue it with 'tod-clean train --resume --run {self.path}'")
            raise RunDirError(
                f"{done} and cannot be resumed; train it again with 'tod-clean train --overwrite'"
            )
        return info

    def _how_to_continue(self) -> str:
        """What a user can do about an existing run: --resume is offered only where it would work."""
        replace = f"pass {switched_on('overwrite')} to replace it"
        try:
            info = self.read_info()
        except RunDirError:
            return replace
        if info.status == "complete":
            return f"{replace} (its training finished: nothing to resume)"
        if self.can_resume(info):
            return f"{replace}, or --resume to continue it"
        return f"{replace} (it cannot be resumed: no epoch of it finished)"

    def can_resume(self, info: RunInfo) -> bool:
        """Whether --resume can continue this run: a checkpoint of its last finished epoch exists."""
        folder = self.file(CHECKPOINT_DIR) / f"epoch-{len(info.epochs)}"
        return bool(info.epochs) and all(
            (folder / name).is_file() for name in ("state.json", "optimizer.safetensors", WEIGHTS)
        )

    def write_info(self, info: RunInfo) -> None:
        write_json(self.file(CONFIG), info.to_dict())

    # ---- model ----------------------------------------------------------------------------------

    def save_model(self, model: TodClassifier, preprocessor: Any) -> None:
        """The encoder's config, the preprocessor (a tokenizer, or an image processor for a model that reads
        images) and the weights."""
        encoder_dir = self.file(ENCODER_DIR)
        encoder_dir.mkdir(exist_ok=True)
        encoder_config: Any = model.encoder.config
        encoder_config.to_json_file(str(encoder_dir / "config.json"))
        preprocessor.save_pretrained(str(self.file(IMAGE_PROCESSOR_DIR if model.images else TOKENIZER_DIR)))
        self.save_weights(model)

    def save_weights(self, model: TodClassifier) -> None:
        save_tensors(self.file(WEIGHTS), dict(model.state_dict()), metadata={"format": "pt"})

    def load_model(self, info: RunInfo, device: torch.device | str = "cpu") -> TodClassifier:
        from transformers import AutoConfig, AutoModel

        encoder_dir = self.file(ENCODER_DIR)
        if not (encoder_dir / "config.json").is_file():
            raise RunDirError(f"{encoder_dir / 'config.json'}: missing; the run directory is incomplete")
        try:
            encoder_config = AutoConfig.from_pretrained(str(encoder_dir), local_files_only=True)
            encoder = AutoModel.from_config(encoder_config)
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise RunDirError(
                f"{encoder_dir / 'config.json'}: cannot rebuild the encoder ({first_line(error)})"
            ) from None
        model = build_classifier(encoder, info.train, len(info.labels))
        state = load_tensor_file(self.file(WEIGHTS))
        # A config.json edited (labels, head_dim, lora_rank...) or copied from another run builds a model of
        # other shapes: say which, instead of load_state_dict's many-line RuntimeError.
        expected = model.state_dict()
        for name, tensor in state.items():
            if name in expected and tuple(tensor.shape) != tuple(expected[name].shape):
                raise RunDirError(
                    f"{self.file(WEIGHTS)}: weights do not match the run's {CONFIG} ({name} has shape "
                    f"{list(tensor.shape)}, but {len(info.labels)} labels and the saved options make "
                    f"{list(expected[name].shape)}); the weights and {CONFIG} are of different runs"
                )
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise RunDirError(
                f"{self.file(WEIGHTS)}: weights do not match the model "
                f"(missing {missing[:3]}, unexpected {unexpected[:3]})"
            )
        return model.to(device).eval()

    def load_preprocessor(self, info: RunInfo) -> Any:
        """What turns the run's rows into model inputs: its image processor for images, else its tokenizer."""
        if not info.train.columns.images:
            return self.load_tokenizer()
        from tod_clean.modeling.vision import load_image_processor

        folder = self.file(IMAGE_PROCESSOR_DIR)
        if not (folder / "preprocessor_config.json").is_file():
            raise RunDirError(
                f"{folder / 'preprocessor_config.json'}: missing; the run directory is incomplete"
            )
        try:
            return load_image_processor(folder)
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise RunDirError(f"{folder}: cannot load the image processor ({first_line(error)})") from None

    def load_tokenizer(self) -> Any:
        from transformers import AutoTokenizer

        folder = self.file(TOKENIZER_DIR)
        # a path that is not a folder would be taken for a hub repository name
        if not folder.is_dir():
            raise RunDirError(f"{folder}: missing; the run directory is incomplete")
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise RunDirError(f"{folder}: cannot load the tokenizer ({first_line(error)})") from None
        size = empty_vocabulary(tokenizer)
        if size is not None:
            raise RunDirError(
                f"{folder}: the tokenizer's files are missing (none of {TOKENIZER_FILES}); it would know only "
                f"its {size} special tokens; the run directory is incomplete"
            )
        return tokenizer


def load_tensor_file(path: Path) -> dict[str, torch.Tensor]:
    """A safetensors file, with one clear error when it is missing, truncated or not safetensors."""
    if not path.is_file():
        raise RunDirError(f"{path}: missing; the run directory is incomplete")
    try:
        return load_file(str(path))
    except (OSError, ValueError, SafetensorError) as error:
        raise RunDirError(f"{path}: damaged or not a safetensors file ({first_line(error)})") from None
