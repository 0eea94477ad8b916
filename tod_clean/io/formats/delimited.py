"""CSV (RFC 4180, quoted fields may hold line breaks) and TSV (IANA text/tab-separated-values: no quoting)."""

from __future__ import annotations

import csv
import functools
import sys
from array import array
from collections.abc import Callable, Iterator
from typing import Any

from tod_clean.errors import InputError
from tod_clean.io.columns import check_header
from tod_clean.io.formats.base import FileFormat
from tod_clean.io.formats.lines import bom_length, line_table, utf8_line
from tod_clean.io.rows import Bytes, physical_lines
from tod_clean.io.table import Table


def read_delimited(source: str, data: Bytes, fmt: str) -> Table:
    bom = bom_length(data)
    consumed = [0, bom]  # physical lines read so far, and the offset where they end

    def feed() -> Iterator[str]:
        for offset, line in physical_lines(data.blocks(), skip=bom):
            text = utf8_line(source, line, offset)
            consumed[:] = [consumed[0] + 1, offset + len(line)]
            yield text

    physical = feed()
    reader = delimited_reader(physical, fmt)
    starts, ends, lines = array("q"), array("q"), array("q")
    header: list[str] | None = None
    header_span = (bom, bom)
    # A bad header or field count is raised once the whole file is known to be readable CSV.
    problem: InputError | None = None
    first_line, first_offset = 0, bom  # where the record being read starts
    try:
        for fields in reader:
            if any(f.strip() for f in fields):
                if header is None:
                    header, header_span = fields, (first_offset, consumed[1])
                    try:
                        check_header(source, header, first_line + 1)
                    except InputError as error:
                        problem = error
                else:
                    if len(fields) != len(header) and problem is None:
                        problem = InputError(
                            f"{source}: line {first_line + 1}: {len(fields)} fields, but the header has {len(header)}"
                        )
                    starts.append(first_offset)
                    ends.append(consumed[1])
                    lines.append(first_line + 1)
            first_line, first_offset = consumed
    except csv.Error as error:
        malformed = InputError(f"{source}: line {reader.line_num}: malformed {fmt.upper()} ({error})")
        for _ in physical:  # the rest must still be UTF-8, which is said first
            pass
        raise malformed from None
    if header is None:
        raise InputError(f"{source}: the file holds no rows")
    if problem is not None:
        raise problem
    return line_table(
        source,
        data,
        fmt,
        list(header),
        delimited_parser(list(header), fmt),
        starts,
        ends,
        lines,
        data.read(0, bom) + data.read(*header_span),
    )


def delimited_parser(header: list[str], fmt: str) -> Callable[[list[bytes]], list[dict[str, Any]]]:
    """A parser of CSV/TSV records (each one or more physical lines) into dicts keyed by ``header``."""

    def parse(records: list[bytes]) -> list[dict[str, Any]]:
        lines = (line.decode("utf-8") for record in records for line in record.splitlines(keepends=True))
        rows = [dict(zip(header, fields, strict=True)) for fields in delimited_reader(lines, fmt)]
        assert len(rows) == len(records)
        return rows

    return parse


def delimited_reader(lines: Iterator[str], fmt: str) -> Any:
    # TSV (IANA text/tab-separated-values) has no quoting: a quote is an ordinary character.
    if fmt == "tsv":
        return csv.reader(lines, delimiter="\t", quoting=csv.QUOTE_NONE)
    return csv.reader(lines, delimiter=",")


def _raise_field_size_limit() -> None:
    """Let fields be as large as the platform allows (the csv module's default stops at 128 KiB)."""
    limit = sys.maxsize
    while True:
        try:
            csv.field_size_limit(limit)
            return
        except OverflowError:  # a C long narrower than sys.maxsize (Windows)
            limit //= 2


_raise_field_size_limit()


CSV = FileFormat("csv", ".csv", functools.partial(read_delimited, fmt="csv"))
TSV = FileFormat("tsv", ".tsv", functools.partial(read_delimited, fmt="tsv"))
