"""What a reader of one input format implements: a ``FileFormat`` for data files, named by their suffix,
or a ``DatasetSource`` for rows that are not a file of bytes, recognised by their path.

A new file format is one module in this folder that defines ``read(source, data) -> Table`` and a
``FileFormat`` holding it (``jsonl.py`` is the example to copy), plus its entry in ``FILE_FORMATS`` in
``tod_clean/io/formats/__init__.py``. ``read`` must

- parse every record of ``data`` (the file's bytes, in memory or re-read from the file, see
  ``tod_clean.io.rows``) and refuse the first bad one with an ``InputError`` naming ``source`` and its line
  or row;
- return a ``Table`` whose ``format`` is the format's name and whose ``rows`` parse the records again when
  used (``raw`` and ``header`` keep the bytes a subset is written back from, where the format has them);
- leave to ``read_table`` what every format shares: refusing a file without rows, the table's ``data``
  and ``ref``.

A subset of a new format's rows is written by ``tod_clean.io.writers``, which needs a branch for it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tod_clean.io.rows import Bytes
    from tod_clean.io.table import Table


@dataclass(frozen=True)
class FileFormat:
    """A data-file format: ``name`` (a Table's ``format``, a choice of ``--stdin-format``), the file
    ``suffix`` that names it, and ``read(source, data)``, its reader (see the module docstring)."""

    name: str
    suffix: str
    read: Callable[[str, Bytes], Table]


@dataclass(frozen=True)
class DatasetSource:
    """Rows read by path rather than as bytes: ``claims(path)`` tells whether ``path`` is one,
    ``read(path, split)`` reads it as a Table (format ``dataset``), ``split`` choosing among its splits."""

    name: str
    claims: Callable[[str], bool]
    read: Callable[[str, str | None], Table]
