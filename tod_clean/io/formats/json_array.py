"""JSON files: a JSON array of objects, each element's text kept; a ``.json`` file that holds no array is
read as JSON Lines.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from typing import Any

from tod_clean.errors import InputError
from tod_clean.io.formats.base import FileFormat
from tod_clean.io.formats.jsonl import read_jsonl, repeated_key
from tod_clean.io.formats.lines import BOM, bom_length
from tod_clean.io.rows import Bytes
from tod_clean.io.table import Table


def _first_byte(data: Bytes) -> bytes:
    """The first byte after a UTF-8 BOM and white space (``[`` starts a JSON array)."""
    skip = bom_length(data)
    with contextlib.closing(data.blocks()) as blocks:
        for block in blocks:
            cut = min(skip, len(block))
            rest, skip = block[cut:].lstrip(), skip - cut
            if rest:
                return rest[:1]
    return b""


def _decode(source: str, data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise InputError(
            f"{source}: not UTF-8 text (byte {error.start}: {data[error.start : error.start + 1]!r})"
        ) from None


def _columns_of(rows: list[dict[str, Any]]) -> list[str]:
    seen: dict[str, None] = {}
    for row in rows:
        for key in row:
            seen.setdefault(key, None)
    return list(seen)


def read_json_array(source: str, data: bytes, sha: str) -> Table:
    """A JSON array of objects, keeping each element's exact text so filtered output is byte for byte."""
    text = _decode(source, data)
    bom = BOM if data.startswith(BOM) else b""
    decoder = json.JSONDecoder()

    def fail(position: int, message: str) -> InputError:
        return InputError(
            f"{source}: not valid JSON (line {text.count(chr(10), 0, position) + 1}: {message})"
        )

    def skip_space(position: int) -> int:
        while position < len(text) and text[position] in " \t\r\n":
            position += 1
        return position

    start = skip_space(0)
    if text[start : start + 1] != "[":
        raise fail(start, "expected a JSON array of objects")
    position = skip_space(start + 1)
    spans: list[tuple[int, int]] = []
    rows: list[dict[str, Any]] = []
    if text[position : position + 1] == "]":
        end_of_array = position
    else:
        while True:
            try:
                value, end = decoder.raw_decode(text, position)
            except json.JSONDecodeError as error:
                raise fail(error.pos, error.msg) from None
            if not isinstance(value, dict):
                raise InputError(
                    f"{source}: row {len(rows)}: expected a JSON object, found {type(value).__name__}"
                )
            repeated = repeated_key(text[position:end], value)
            if repeated is not None:
                raise InputError(
                    f"{source}: row {len(rows)}: key {repeated!r} appears more than once in the object"
                )
            rows.append(value)
            spans.append((position, end))
            position = skip_space(end)
            if text[position : position + 1] == ",":
                position = skip_space(position + 1)
                continue
            if text[position : position + 1] != "]":
                raise fail(position, "expected ',' or ']' after an array element")
            end_of_array = position
            break
    if text[skip_space(end_of_array + 1) :]:
        raise fail(skip_space(end_of_array + 1), "extra data after the array")
    # Elements are joined with the file's own separator; UTF-8 re-encodes each span to its original bytes.
    first = spans[0][0] if spans else end_of_array
    separator = text[spans[0][1] : spans[1][0]] if len(spans) > 1 else ", "
    footer = text[spans[-1][1] :] if spans else text[end_of_array:]
    return Table(
        source,
        "json",
        _columns_of(rows),
        rows,
        sha,
        raw=[text[a:b].encode("utf-8") for a, b in spans],
        header=bom + text[:first].encode("utf-8"),
        separator=separator.encode("utf-8"),
        footer=footer.encode("utf-8"),
    )


def read_json(source: str, data: Bytes) -> Table:
    """A ``.json`` file: a JSON array of objects (held in memory), or else JSON Lines."""
    if _first_byte(data) == b"[":
        whole = b"".join(data.blocks())
        return read_json_array(source, whole, hashlib.sha256(whole).hexdigest())
    return read_jsonl(source, data, "json")


JSON = FileFormat("json", ".json", read_json)
