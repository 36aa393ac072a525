"""Input bounds shared by the request schemas: dates every database can store, text every database
accepts (no NUL, no lone surrogate), and JSON trees of bounded depth."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import AfterValidator

MIN_YEAR = 1970
MAX_YEAR = 9999
MAX_JSON_DEPTH = 16


def bounded_utc(value: datetime) -> datetime:
    """`value` in UTC (naive means UTC), or ValueError when it falls outside years 1970..9999 in UTC."""
    try:
        utc = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except OverflowError as exc:  # e.g. 9999-12-31T23:59:59-14:00 is in year 10000 once in UTC
        raise ValueError(f"datetime must fall within years {MIN_YEAR}..{MAX_YEAR} in UTC") from exc
    if not MIN_YEAR <= utc.year <= MAX_YEAR:
        raise ValueError(f"datetime must fall within years {MIN_YEAR}..{MAX_YEAR} in UTC")
    return utc


def safe_text(value: str) -> str:
    """`value`, or ValueError when it holds a NUL character or a lone surrogate (PostgreSQL and UTF-8
    refuse both, so no database could store it faithfully)."""
    if "\x00" in value:
        raise ValueError("text must not contain NUL (\\u0000) characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError("text must not contain lone surrogate code points") from exc
    return value


def bounded_json(value: Any, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """`value`, or ValueError when its nesting exceeds `max_depth` or a key or string is not `safe_text`.

    Iterative, so a hostile depth costs no recursion. The strings are checked together, joined once
    (a NUL or a surrogate code point in any of them is one in the join): one call per string was
    most of a batch POST's validation time (issue 12 profile)."""
    strings: list[str] = []
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict | list):
            if depth > max_depth:
                raise ValueError(f"JSON nesting must not exceed {max_depth} levels")
            children: Iterable[Any] = node
            if isinstance(node, dict):
                strings.extend(key for key in node if isinstance(key, str))
                children = node.values()
            for child in children:
                if isinstance(child, str):
                    strings.append(child)
                elif isinstance(child, dict | list):
                    stack.append((child, depth + 1))
        elif isinstance(node, str):
            strings.append(node)
    safe_text("".join(strings))
    return value


BoundedDatetime = Annotated[datetime, AfterValidator(bounded_utc)]
SafeText = Annotated[str, AfterValidator(safe_text)]
