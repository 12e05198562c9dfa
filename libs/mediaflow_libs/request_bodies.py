"""Reading request bodies safely: a JSON object within a size limit, text fields that can
be stored, and typed bodies. A typed body is a msgspec Struct whose fields say, beside
their type, the problem a missing or mistyped value gets (API.md's code for that field); it
is checked one field after another in declaration order (the first bad field is the one
reported, whatever order the client wrote them in), and the published schema describes it
from the same type."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import msgspec
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


Body = TypeVar("Body", bound=msgspec.Struct)
# The key of a route handler's ``opt`` naming the body type it reads: the published schema
# describes the route's request body from it.
TYPED_BODY = "typed_body"


@dataclass(frozen=True)
class Refusal:
    """What a field that is missing, of the wrong type, or (``text``) a string that cannot
    be stored (NUL, a lone surrogate) gets: this problem. A string outside its type's
    constraints (its length), or that ``check`` refuses (raising ValueError), gets
    ``out_of_range`` as the detail, when given; ``check`` returns the value to use."""

    status: int
    code: str
    detail: str
    out_of_range: str | None = None
    check: Callable[[Any], Any] | None = None
    text: bool = True

    def problem(self, value: Any) -> ProblemError:
        out_of_range = isinstance(value, str) and storable_text(value) is not None
        return ProblemError(self.status, self.code, self._detail(out_of_range))

    def _detail(self, out_of_range: bool) -> str:
        return self.out_of_range if out_of_range and self.out_of_range else self.detail


@dataclass(frozen=True)
class Fallback:
    """A field that is missing or of the wrong type takes ``value`` instead of being refused
    (sign-in: a credential that is no text names no account, and simply fails)."""

    value: Any
    text: bool = True


_MISSING = object()


def _rule(annotation: Any) -> Refusal | Fallback:
    for metadata in getattr(annotation, "__metadata__", ()):
        if isinstance(metadata, Refusal | Fallback):
            return metadata
    raise TypeError(f"{annotation!r} names no Refusal or Fallback")


def _field_value(raw: dict[str, Any], field: msgspec.structs.FieldInfo) -> Any:
    if field.encode_name in raw:
        return raw[field.encode_name]
    if field.default is not msgspec.NODEFAULT:
        return field.default
    return _MISSING


def _converted(field: msgspec.structs.FieldInfo, rule: Refusal | Fallback, value: Any) -> Any:
    try:
        if value is _MISSING:
            raise ValueError(f"`{field.encode_name}` is missing")
        converted = msgspec.convert(value, field.type)
        if rule.text and isinstance(converted, str) and storable_text(converted) is None:
            raise ValueError(f"`{field.encode_name}` cannot be stored")
    except (msgspec.ValidationError, ValueError) as exc:
        if isinstance(rule, Fallback):
            return rule.value
        raise rule.problem(value) from exc
    return converted


def typed_body(
    body_type: type[Body],
    raw: dict[str, Any],
    checks: Mapping[str, Callable[[Any], Any]] | None = None,
) -> Body:
    """``raw`` (a JSON object) as ``body_type``, or the first bad field's problem; fields the
    type does not name are ignored. ``checks`` add rules the deployment decides (a field's
    own :class:`Refusal` ``check`` otherwise); they may raise a problem of their own."""
    values: dict[str, Any] = {}
    for field in msgspec.structs.fields(body_type):
        rule = _rule(field.type)
        value = _converted(field, rule, _field_value(raw, field))
        check = (checks or {}).get(field.name) or getattr(rule, "check", None)
        if check is not None:
            try:
                value = check(value)
            except ValueError as exc:
                assert isinstance(rule, Refusal)
                raise ProblemError(rule.status, rule.code, rule._detail(True)) from exc
        values[field.name] = value
    return body_type(**values)


async def read_body(
    request: Request[Any, Any, Any],
    body_type: type[Body],
    *,
    max_bytes: int = 64 * 1024,
    checks: Mapping[str, Callable[[Any], Any]] | None = None,
) -> Body:
    """The request's JSON body as ``body_type``: the problems of
    :func:`read_json_object`, then of :func:`typed_body`."""
    raw = await read_json_object(request, max_bytes=max_bytes)
    return typed_body(body_type, raw, checks)


def body_schema(body_type: type[msgspec.Struct]) -> dict[str, Any]:
    """The JSON Schema of a body type, as an OpenAPI request body's schema (no references:
    a body's fields are strings, numbers and choices)."""
    schema: dict[str, Any] = msgspec.json.schema(body_type)
    return dict(schema["$defs"][body_type.__name__])
