"""The Scope interface: parsing ``--scope`` through the registry of kinds."""

from __future__ import annotations

import pytest

from tod_clean.errors import ConfigError
from tod_clean.scopes import Scope

# ---- scope parsing ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("none", Scope.of("none", 0)),
        ("head", Scope.of("head", 0)),
        ("layers:1", Scope.of("layers", 1)),
        ("ffn:2", Scope.of("ffn", 2)),
        (" layers:3 ", Scope.of("layers", 3)),
    ],
)
def test_scope_parse_accepts(text: str, expected: Scope) -> None:
    scope = Scope.parse(text)
    assert scope == expected
    assert Scope.parse(str(scope)) == scope
    assert scope.masked == (expected.kind != "none")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("layers:0", "positive number"),
        ("foo", "is not one of"),
        ("head:2", "takes no layer count"),
        ("none:1", "takes no layer count"),
        ("layers", "positive number"),
        ("ffn:", "positive number"),
        ("layers:-1", "positive number"),
        ("ffn:x", "positive number"),
        ("", "is not one of"),
    ],
)
def test_scope_parse_rejects(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Scope.parse(text)


@pytest.mark.parametrize("text", ["layers:\u00b2", "ffn:\u00b3"])
def test_scope_parse_rejects_unicode_digits_with_config_error(text: str) -> None:
    # '²'.isdigit() is True but int('²') fails: a typo must give the one-line ConfigError,
    # not a ValueError with a traceback
    with pytest.raises(ConfigError):
        Scope.parse(text)
