"""Reading request bodies safely: a JSON object within a size limit, and text fields that
can be stored."""

from __future__ import annotations

import json
import re
from typing import Any

from litestar import Request

from mediaflow_libs.problems import ProblemError


def _is_json(content_type: str) -> bool:
    """``application/json``, alone or with ``charset=utf-8`` (the only charset JSON has,
    RFC 8259 §8.1); type, subtype and parameter names are case-insensitive."""
    media_type, *parameters = content_type.split(";")
    if media_type.strip().lower() != "application/json":
        return False
    for parameter in parameters:
        name, _, value = parameter.partition("=")
        if name.strip().lower() != "charset" or value.strip().strip('"').lower() != "utf-8":
            return False
    return True


def _unsupported_media_type() -> ProblemError:
    return ProblemError(
        415,
        "unsupported_media_type",
        "The body must be JSON, sent with Content-Type: application/json.",
        # RFC 9110 §15.5.16: Accept names the media type that would have been accepted.
        headers={"Accept": "application/json"},
    )


def _not_json(constant: str) -> None:
    # Python's parser takes NaN and Infinity, which JSON (RFC 8259) has no place for.
    raise ValueError(f"{constant} is not JSON")


async def read_json_object(
    request: Request[Any, Any, Any], max_bytes: int = 64 * 1024
) -> dict[str, Any]:
    """The request body as a JSON object, or a problem: 415 ``unsupported_media_type`` when
    it is declared as anything but JSON (or, not declared at all, is not empty), 413 past
    ``max_bytes``, 400 ``invalid_json`` when it is not a JSON object (or past the parser's
    limits). The media type is checked first: a form or text body, which a page of another
    site may send without asking, is refused before anything reads it."""
    declared_types = request.headers.getall("content-type", [])
    if declared_types and not (len(declared_types) == 1 and _is_json(declared_types[0])):
        raise _unsupported_media_type()
    declared = request.headers.get("content-length", "")
    # (20 digits are past any limit, and int() refuses thousands.)
    announced = int(declared[:20]) if declared.isascii() and declared.isdigit() else 0
    if not declared_types and announced > 0:
        raise _unsupported_media_type()  # a body announced without saying what it is
    # Refuses an announced excess early; the stream below enforces the limit either way.
    if announced > max_bytes:
        raise ProblemError(413, "payload_too_large", f"The body may be at most {max_bytes} bytes.")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_bytes:
            raise ProblemError(
                413, "payload_too_large", f"The body may be at most {max_bytes} bytes."
            )
    if not declared_types and body:
        raise _unsupported_media_type()
    try:
        value = json.loads(body.decode("utf-8"), parse_constant=_not_json)
    except UnicodeDecodeError as exc:
        raise ProblemError(400, "invalid_json", "The body is not valid UTF-8.") from exc
    except (ValueError, RecursionError) as exc:
        # ValueError covers syntax errors and integers past Python's digit limit;
        # RecursionError, nesting deeper than the parser goes.
        raise ProblemError(400, "invalid_json", "The body is not valid JSON.") from exc
    if not isinstance(value, dict):
        raise ProblemError(400, "invalid_json", "The body must be a JSON object.")
    return value


# JSON may escape NUL and lone surrogates (``"\u0000"``, ``"\ud800"``): PostgreSQL text
# cannot hold the first and UTF-8 cannot encode the second, which is no character at all.
_UNSTORABLE_TEXT = re.compile(r"[\x00\ud800-\udfff]")


def storable_text(value: object) -> str | None:
    """``value`` when it is a string that can be encoded and stored, else None; each field
    read from a body goes through here, so its own problem code names the bad field."""
    if not isinstance(value, str) or _UNSTORABLE_TEXT.search(value):
        return None
    return value
