"""Calls to S3 with their failures sorted: a busy or unreachable store is worth another
attempt (:class:`Retry`), a refusal (access denied, no such bucket) is not."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import structlog
from botocore import exceptions as boto

from mediaflow_worker.errors import Retry, TaskFailure

log = structlog.get_logger(__name__)

# Error codes S3 and its look-alikes answer when they are overloaded or briefly broken.
TRANSIENT_CODES = frozenset(
    {
        "SlowDown",
        "ServiceUnavailable",
        "InternalError",
        "RequestTimeout",
        "Throttling",
        "ThrottlingException",
        "RequestLimitExceeded",
        "TooManyRequests",
    }
)
_MESSAGE = "Storing the media failed."


def is_transient(exc: boto.ClientError) -> bool:
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
    code = str(exc.response.get("Error", {}).get("Code", ""))
    return status >= 500 or status == 429 or code in TRANSIENT_CODES


async def storage_call(method: Callable[..., Awaitable[Any]], **kwargs: Any) -> Any:
    """``await method(**kwargs)``, its failures as ``storage_error`` (transient or not)."""
    try:
        return await method(**kwargs)
    except boto.ClientError as exc:
        log.warning("storage.error", operation=method.__name__, error=repr(exc))
        if is_transient(exc):
            raise Retry("storage_error", _MESSAGE) from exc
        raise TaskFailure("storage_error", _MESSAGE) from exc
    except boto.UnseekableStreamError as exc:
        # botocore would send a streamed part again after a transient failure, but its bytes
        # are gone: the job starts over instead.
        log.warning("storage.streamed_part_failed", operation=method.__name__, error=repr(exc))
        raise Retry("storage_error", _MESSAGE) from exc
    except (boto.ConnectionError, boto.HTTPClientError, aiohttp.ClientError, OSError) as exc:
        # botocore's connection and timeout errors, and whatever reaches us unwrapped.
        log.warning("storage.unreachable", operation=method.__name__, error=repr(exc))
        raise Retry("storage_error", _MESSAGE) from exc
