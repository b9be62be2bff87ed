"""What a JSONB column can hold, checked before a document is stored.

PostgreSQL refuses a NUL character in a string (`\\u0000`) and has no NaN or Infinity in JSON;
Python's json module accepts all three, and numbers beyond a double's range parse as infinity.
Deeply nested documents are legal for PostgreSQL but cost every reader recursion: a depth limit
keeps each stored document readable by anyone. `parse_document` answers with the problem and
where it is, so a client gets a 422 it can act on, never a 5xx.
"""

from __future__ import annotations

import json
import math
from typing import Any


class DocumentError(ValueError):
    """The document cannot be stored; the message names the problem and its location."""


def _no_constant(name: str) -> Any:
    raise DocumentError(f"{name} is not valid JSON for storage (no NaN or Infinity)")


def parse_document(raw: bytes, max_depth: int) -> dict[str, Any]:
    """A JSON object from `raw`, checked for JSONB; or `DocumentError`."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise DocumentError("the body is not UTF-8") from None
    try:
        document = json.loads(text, parse_constant=_no_constant)
    except RecursionError:
        raise DocumentError(f"the document is nested deeper than {max_depth} levels") from None
    except DocumentError:
        raise
    except ValueError as exc:
        raise DocumentError(f"the body is not valid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise DocumentError("the body must be a JSON object")
    check_document(document, max_depth)
    return document


def check_document(document: Any, max_depth: int) -> None:
    """Iterative (a hostile document must not exhaust the stack of the checker itself)."""
    stack: list[tuple[Any, str, int]] = [(document, "$", 1)]
    while stack:
        value, path, depth = stack.pop()
        if isinstance(value, dict | list):
            if depth > max_depth:
                raise DocumentError(f"{path}: nested deeper than {max_depth} levels")
            items = value.items() if isinstance(value, dict) else enumerate(value)
            for key, item in items:
                if isinstance(key, str):
                    _check_string(key, f"{path} (a key)")
                    child = f"{path}.{key}" if key.isidentifier() else f"{path}[{key!r}]"
                else:
                    child = f"{path}[{key}]"
                stack.append((item, child, depth + 1))
        elif isinstance(value, str):
            _check_string(value, path)
        elif isinstance(value, float) and not math.isfinite(value):
            raise DocumentError(f"{path}: number out of range (NaN or infinite)")


def _check_string(value: str, path: str) -> None:
    if "\x00" in value:
        raise DocumentError(f"{path}: a string holds a NUL character (\\u0000)")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise DocumentError(f"{path}: a string holds an unpaired surrogate") from None
