"""List cursors: opaque to clients, tamper-evident to the gateway.

A cursor is ``<payload>.<tag>``, both unpadded base64url: the payload is the JSON
``[created_at, task_id]`` of the last task of a page, the tag an HMAC of it and of the user it
was issued to, under a key derived from SERVICE_SECRET. Every replica shares that secret, so
a cursor one issued works on all; a cursor the gateway did not issue (or issued to someone
else) is refused before any of it reaches a query, and what passes is checked field by
field all the same.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import uuid
from datetime import UTC, datetime, timedelta

from mediaflow_libs.problems import ProblemError

# Its own key, not SERVICE_SECRET itself: that one signs internal service tokens, and a value
# computed for one purpose must never pass for the other.
_KEY_LABEL = b"mediaflow gateway list cursor v1"
_TAG_BYTES = 16
# An issued cursor is about 110 characters; anything much longer is not one.
MAX_CURSOR_LENGTH = 256
_SHAPE = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]{22}")


def cursor_key(service_secret: str) -> bytes:
    return hmac.new(service_secret.encode(), _KEY_LABEL, hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _tag(key: bytes, user_id: str, payload: str) -> bytes:
    message = f"{user_id}\n{payload}".encode()
    return hmac.new(key, message, hashlib.sha256).digest()[:_TAG_BYTES]


def seal(key: bytes, user_id: str, payload: bytes) -> str:
    """``payload`` as a cursor signed for ``user_id``."""
    body = _b64(payload)
    return f"{body}.{_b64(_tag(key, user_id, body))}"


def encode_cursor(key: bytes, user_id: str, created_at: datetime, task_id: str) -> str:
    return seal(key, user_id, json.dumps([created_at.isoformat(), task_id]).encode())


def _invalid() -> ProblemError:
    return ProblemError(422, "invalid_cursor", "The cursor is not one this API issued.")


def decode_cursor(key: bytes, user_id: str, cursor: str) -> tuple[datetime, str]:
    """The (created_at, task_id) an issued cursor holds; 422 ``invalid_cursor`` for any other
    text."""
    if len(cursor) > MAX_CURSOR_LENGTH or not _SHAPE.fullmatch(cursor):
        raise _invalid()
    payload, tag = cursor.split(".")
    try:
        given = _unb64(tag)
        if not hmac.compare_digest(given, _tag(key, user_id, payload)):
            raise _invalid()
        fields = json.loads(_unb64(payload))
        if not (isinstance(fields, list) and len(fields) == 2):
            raise _invalid()
        created_at, task_id = fields
        if not (isinstance(created_at, str) and isinstance(task_id, str)):
            raise _invalid()
        when = datetime.fromisoformat(created_at)
        task = str(uuid.UUID(task_id))
        # Exactly the spellings encode_cursor writes: PostgreSQL's timestamptz, always with
        # its offset (UTC), and a UUID's canonical form.
        if when.isoformat() != created_at or when.utcoffset() != timedelta(0):
            raise _invalid()
        if task != task_id:
            raise _invalid()
        return when.astimezone(UTC), task
    except (binascii.Error, ValueError, OverflowError, UnicodeDecodeError) as exc:
        raise _invalid() from exc
