"""Hugging Face hub datasets already in the local ``datasets`` cache, named ``hf:NAME[/CONFIG]``, and their
reader (a ``DatasetSource``).

tod-clean never downloads. A hub dataset loaded once with ``datasets.load_dataset`` is prepared in the
``datasets`` cache as Arrow files under ``<cache>/<namespace>___<name>/<config>/<version>/<hash>/``
(``<name>/...`` without a namespace); ``hf:`` references read those files with the builder that
``load_dataset`` itself uses when it is offline, so the network is never touched. The cache is the one
``datasets`` uses: ``$HF_DATASETS_CACHE``, else ``$HF_HOME/datasets``, else ``~/.cache/huggingface/datasets``,
read when the data is read (not when ``datasets`` was imported).

``hf:NAME`` (``imdb``), ``hf:NAMESPACE/NAME`` (``stanfordnlp/imdb``), ``hf:NAME/CONFIG`` (``glue/sst2``) and
``hf:NAMESPACE/NAME/CONFIG`` (``nyu-mll/glue/sst2``). Two parts are a namespaced dataset when the cache holds
one by that name, otherwise a dataset and its configuration. Without a configuration, the dataset's only
cached one is used.

Why the cache layout is found here and not by ``datasets`` (evaluated against datasets 5.2): it offers no
public offline way to locate a cached dataset that keeps what tod-clean promises. ``load_dataset`` in
offline mode does fall back to the ``Cache`` builder used here, but offline mode and the cache folder
(``datasets.config.HF_HUB_OFFLINE``, ``HF_DATASETS_CACHE``) are fixed when ``datasets`` is imported, so
one read cannot be made offline, nor follow the environment as it is now, without setting private
configuration; its errors ("Couldn't find cache for ...") name neither the cached configurations nor the
``hf:`` reference to write. ``Cache`` given no hash finds the latest preparation through the private
``_find_hash_in_cache``, which also opens unfinished ``*.incomplete`` folders and logs a warning, and
neither can tell ``hf:NAMESPACE/NAME`` from ``hf:NAME/CONFIG``. So the folder is located here (the layout
above, as ``_find_hash_in_cache`` reads it) and only the reading is left to ``Cache``.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tod_clean.errors import InputError
from tod_clean.io.formats.base import DatasetSource
from tod_clean.io.formats.dataset_dir import DATASET_FORMAT, DatasetRows, arrow_sha256
from tod_clean.io.table import Table

PREFIX = "hf:"
_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*\Z")


def is_hub_ref(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is an ``hf:`` reference (a local file whose name starts ``hf:`` is ``./hf:...``)."""
    return isinstance(path, str) and path.startswith(PREFIX)


def datasets_cache() -> Path:
    """The ``datasets`` cache folder, from the environment as it is now."""
    folder = os.environ.get("HF_DATASETS_CACHE")
    if not folder:
        home = os.environ.get("HF_HOME") or os.path.join(
            os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache"), "huggingface"
        )
        folder = os.path.join(home, "datasets")
    return Path(os.path.expanduser(folder))


def _snake(name: str) -> str:
    """The cache's folder name for a dataset name (``datasets.naming.camelcase_to_snakecase``)."""
    from datasets.naming import camelcase_to_snakecase

    return str(camelcase_to_snakecase(name))


@dataclass(frozen=True)
class CachedDataset:
    """One configuration of a hub dataset in the cache: its prepared folder and what it holds."""

    repo: str  # "imdb" or "stanfordnlp/imdb"
    config: str
    folder: Path  # <cache>/<namespace>___<name>/<config>/<version>/<hash>
    splits: tuple[str, ...]

    @property
    def ref(self) -> str:
        """The reference that names this configuration unambiguously: ``hf:REPO/CONFIG``."""
        return f"{PREFIX}{self.repo}/{self.config}"

    @property
    def dataset_name(self) -> str:
        return self.repo.split("/")[-1]


def _prepared(config_folder: Path) -> list[Path]:
    """The finished ``<version>/<hash>`` folders of one cached configuration (unfinished ones are skipped)."""
    return [
        folder
        for folder in config_folder.glob("*/*")
        if folder.is_dir()
        and not folder.name.endswith(".incomplete")
        and (folder / "dataset_info.json").is_file()
    ]


def _configs(root: Path) -> dict[str, list[Path]]:
    if not root.is_dir():
        return {}
    found = {folder.name: _prepared(folder) for folder in sorted(root.iterdir()) if folder.is_dir()}
    return {name: prepared for name, prepared in found.items() if prepared}


def _root(repo: str, cache: Path) -> Path:
    *namespace, name = repo.split("/")
    return cache / "___".join([*namespace, _snake(name)])


def parse_ref(ref: str) -> list[str]:
    """The ``/``-separated parts of an ``hf:`` reference, refused when malformed."""
    parts = ref[len(PREFIX) :].split("/")
    if not 1 <= len(parts) <= 3 or not all(_PART.match(part) for part in parts):
        raise InputError(
            f"{ref}: not a hub dataset reference; write hf:NAME, hf:NAMESPACE/NAME, hf:NAME/CONFIG or "
            "hf:NAMESPACE/NAME/CONFIG"
        )
    return parts


def locate(ref: str) -> CachedDataset:
    """The cached configuration an ``hf:`` reference names; an InputError when it is not cached."""
    parts = parse_ref(ref)
    cache = datasets_cache()
    candidates: list[tuple[str, str | None]]
    if len(parts) == 3:
        candidates = [(f"{parts[0]}/{parts[1]}", parts[2])]
    elif len(parts) == 2:
        candidates = [("/".join(parts), None), (parts[0], parts[1])]
    else:
        candidates = [(parts[0], None)]
    for repo, config in candidates:
        configs = _configs(_root(repo, cache))
        if not configs:
            continue
        if config is None:
            if len(configs) > 1:
                raise InputError(
                    f"{ref}: the local Hugging Face cache holds configurations {', '.join(configs)}; "
                    f"choose one with hf:{repo}/CONFIG"
                )
            config = next(iter(configs))
        if config not in configs:
            raise InputError(
                f"{ref}: configuration {config!r} of {repo} is not in the local Hugging Face cache "
                f"({cache}); cached configurations: {', '.join(configs)}"
            )
        folder = max(configs[config], key=lambda path: path.stat().st_mtime)  # the latest, as datasets does
        info = _read_info(folder, ref)
        splits = tuple(info.get("splits") or ())
        if not splits:
            raise InputError(
                f"{ref}: the cached dataset in {folder} records no splits; load it again with datasets"
            )
        return CachedDataset(repo, config, folder, splits)
    call = ", ".join(
        json.dumps(part)
        for part in ([f"{parts[0]}/{parts[1]}", parts[2]] if len(parts) == 3 else ["/".join(parts)])
    )
    raise InputError(
        f"{ref}: not in the local Hugging Face cache ({cache}); tod-clean never downloads: load it once "
        f"with datasets.load_dataset({call}) where the hub is reachable (into this cache, or set "
        "HF_DATASETS_CACHE to a copy of one), or give a save_to_disk folder or a data file"
    )


def _read_info(folder: Path, ref: str) -> dict[str, Any]:
    try:
        info = json.loads((folder / "dataset_info.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise InputError(f"{ref}: cannot read {folder / 'dataset_info.json'} ({error})") from None
    if not isinstance(info, dict):
        raise InputError(f"{ref}: {folder / 'dataset_info.json'} is not a dataset_info object")
    return info


def choose_split(cached: CachedDataset, split: str | None, ref: str) -> str:
    if split is None:
        if len(cached.splits) != 1:
            raise InputError(f"{ref}: splits {', '.join(cached.splits)}; choose one with --split")
        return cached.splits[0]
    if split not in cached.splits:
        raise InputError(f"{ref}: no split {split!r}; splits found: {', '.join(cached.splits)}")
    return split


def load_split(cached: CachedDataset, split: str) -> tuple[Any, list[Path]]:
    """The split as a ``datasets.Dataset`` read from the cache's Arrow files, and those files.

    Reads with ``datasets``' ``Cache`` builder, the one ``load_dataset`` falls back to offline, given the
    exact folder: nothing is looked up on the hub.
    """
    from datasets.packaged_modules.cache.cache import Cache

    version, hash_ = cached.folder.parent.name, cached.folder.name
    builder = Cache(
        cache_dir=str(cached.folder.parents[3]),
        dataset_name=cached.dataset_name,
        repo_id=cached.repo,
        config_name=cached.config,
        version=version,
        hash=hash_,
    )
    if Path(builder.cache_dir).resolve() != cached.folder.resolve():  # pragma: no cover - a datasets change
        raise InputError(
            f"{cached.ref}: datasets resolves the cache to {builder.cache_dir}, not {cached.folder}"
        )
    try:
        dataset = builder.as_dataset(split=split)
    except (OSError, ValueError) as error:
        raise InputError(
            f"{cached.ref}: cannot read split {split!r} from {cached.folder} ({error})"
        ) from None
    files = [Path(entry["filename"]) for entry in dataset.cache_files]
    return dataset, files


def read_hub_dataset(ref: str, split: str | None = None) -> Table:
    """A hub dataset in the local Hugging Face cache (``hf:NAME[/CONFIG]``, see the module docstring) as a
    Table (format ``dataset``), read offline; refused with one line when it is not cached.

    A dataset with several splits needs ``split``. ``ClassLabel`` columns hold label names. ``sha256`` is a
    hash of the split's Arrow files in the cache; ``ref`` names the configuration read (``hf:REPO/CONFIG``),
    so a run finds the same rows again even when another configuration is cached later.
    """
    cached = locate(ref)
    split = choose_split(cached, split, ref)
    dataset, files = load_split(cached, split)
    source = f"{ref} (split {split})"
    if dataset.num_rows == 0:
        raise InputError(f"{source}: the dataset holds no rows")
    sha = arrow_sha256(files)
    return Table(
        source,
        DATASET_FORMAT,
        list(dataset.column_names),
        DatasetRows(dataset),
        sha,
        dataset=dataset,
        split=split,
        ref=cached.ref,
    )


HUB = DatasetSource("hf: dataset", is_hub_ref, read_hub_dataset)
