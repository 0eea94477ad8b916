"""JSON Lines: one JSON object per physical line."""

from __future__ import annotations

import json
from array import array
from typing import Any

from tod_clean.errors import InputError
from tod_clean.io.formats.base import FileFormat
from tod_clean.io.formats.lines import bom_length, line_table, utf8_line
from tod_clean.io.rows import Bytes, physical_lines
from tod_clean.io.table import Table


class _RepeatedKey(Exception):
    def __init__(self, key: str) -> None:
        self.key = key


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found = dict(pairs)
    if len(found) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _RepeatedKey(key)
            seen.add(key)
    return found


def repeated_key(text: str, value: dict[str, Any]) -> str | None:
    """A key that appears twice in the JSON object ``text`` (parsed: ``value``), which ``json`` reads
    with the last copy winning unseen; None when every key is unique.

    Every key is followed by a colon, so an object with no more colons than distinct keys repeats none:
    only other objects (colons in values, nested objects) are parsed again, keeping the key pairs.
    """
    if text.count(":") <= len(value):
        return None
    try:
        json.loads(text.lstrip("\ufeff"), object_pairs_hook=_unique_pairs)
    except _RepeatedKey as repeated:
        return repeated.key
    except ValueError:  # bytes json reads and str does not (UTF-16/32 guessed from NULs): not checked
        return None
    return None


def read_jsonl(source: str, data: Bytes, fmt: str = "jsonl") -> Table:
    """JSON Lines (or a ``.json`` file of them, ``fmt`` 'json'): each non-blank line one JSON object."""
    bom = bom_length(data)
    starts, ends, lines = array("q"), array("q"), array("q")
    columns: dict[str, None] = {}
    # The first bad line is raised once the whole file is known to be UTF-8, which is said first.
    failure: InputError | None = None
    # JSON text cannot hold a raw line break, so records are physical lines (blank ones are skipped)
    for number, (offset, line) in enumerate(physical_lines(data.blocks(), skip=bom), start=1):
        text = utf8_line(source, line, offset)
        if failure is not None or not line.strip():
            continue
        try:
            value = json_value(line, text)
        except json.JSONDecodeError as error:
            failure = InputError(f"{source}: line {number}: not valid JSON ({error.msg})")
            continue
        except UnicodeDecodeError as error:  # bytes guessed to be UTF-16/32 from NUL bytes
            failure = InputError(f"{source}: line {number}: not valid JSON ({error})")
            continue
        if not isinstance(value, dict):
            failure = InputError(
                f"{source}: line {number}: expected a JSON object, found {type(value).__name__}"
            )
            continue
        repeated = repeated_key(text, value)
        if repeated is not None:
            failure = InputError(
                f"{source}: line {number}: key {repeated!r} appears more than once in the object"
            )
            continue
        for key in value:
            if key not in columns:
                columns[key] = None
        starts.append(offset)
        ends.append(offset + len(line))
        lines.append(number)
    if failure is not None:
        raise failure
    header = data.read(0, bom) or None
    return line_table(source, data, fmt, list(columns), parse_json_records, starts, ends, lines, header)


def json_value(line: bytes, text: str) -> Any:
    """``json.loads`` of a line as bytes (which also takes a leading UTF-8 BOM, and guesses UTF-16/32 from
    NUL bytes), through its decoded ``text`` where that is the same and faster."""
    if line[:3] == b"\xef\xbb\xbf" or b"\x00" in line[:4]:
        return json.loads(line)
    return json.loads(text)


def parse_json_records(records: list[bytes]) -> list[dict[str, Any]]:
    return [json_value(record, record.decode("utf-8")) for record in records]


JSONL = FileFormat("jsonl", ".jsonl", read_jsonl)
