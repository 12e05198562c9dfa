"""The worker's S3 client: the dozen calls it makes, signed with AWS Signature V4 and sent
with aiohttp, which the worker loads anyway to fetch sources.

Why not aiobotocore, as the gateway uses: botocore's modules (~14 MiB resident) and the
endpoint tables, S3 service model and rule set it loads for a client (~12 MiB more) were a
third of the worker's memory budget (``bench/worker_rss.py``: peak RSS at most 80 MiB while
streaming 2 GiB). The calls, their arguments and their results have botocore's shape, and
failures are botocore's :class:`ClientError` with the same ``Error``/``ResponseMetadata``
fields, so code and tests written against aiobotocore's client work with this one.

Path-style addressing (as configured for aiobotocore in ``mediaflow_libs.s3``); payloads held
in memory are signed (their SHA-256 is part of the signature), so plain-http endpoints inside
a cluster still get integrity, and busy or briefly broken answers (5xx, 429, SlowDown) and
connection errors are tried again, twice, like botocore's standard retry mode. A
:class:`StreamedBody` (a part passed through from its source as it arrives) is the
exception: its hash is known only once it is sent, so it goes ``UNSIGNED-PAYLOAD``, and once,
since its bytes are not kept for a second attempt.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import io
from collections.abc import AsyncIterable, AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote
from xml.etree import ElementTree

import aiohttp
from botocore.exceptions import ClientError
from yarl import URL

from mediaflow_libs.settings import S3Settings

_RETRY_PAUSES = (0.1, 0.5)
_RETRY_CODES = frozenset({"SlowDown", "InternalError", "ServiceUnavailable", "RequestTimeout"})
_BUCKET_EXISTS_CODES = frozenset({"BucketAlreadyOwnedByYou", "BucketAlreadyExists"})
_SEND_CHUNK = 256 * 1024
_EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
_UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
_META_PREFIX = "x-amz-meta-"


@dataclass(frozen=True)
class StreamedBody:
    """A body of known ``length`` whose bytes are produced while it is sent."""

    pieces: AsyncIterable[bytes | memoryview]
    length: int


Body = bytes | io.BytesIO | StreamedBody


def _uri(value: str, safe: str = "~") -> str:
    return quote(value, safe=safe)


def _parse(content: bytes) -> ElementTree.Element:
    # Answers of the store this worker is configured with, not of user-named hosts.
    return ElementTree.fromstring(content)  # noqa: S314


def _children(element: ElementTree.Element, name: str) -> list[ElementTree.Element]:
    """Child elements called ``name``, whatever XML namespace the server puts them in."""
    return [child for child in element if child.tag.rsplit("}", 1)[-1] == name]


def _text(element: ElementTree.Element, name: str) -> str:
    found = _children(element, name)
    return (found[0].text or "") if found else ""


@dataclass(frozen=True)
class _Credentials:
    access_key: str
    secret_key: str
    region: str


def _sign(
    method: str,
    host: str,
    path: str,
    query: Mapping[str, str],
    headers: dict[str, str],
    payload_sha256: str,
    credentials: _Credentials,
    now: datetime | None = None,
) -> None:
    """Add ``x-amz-date``, ``x-amz-content-sha256`` and ``Authorization`` to ``headers``."""
    now = now or datetime.now(UTC)
    stamp, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
    headers["x-amz-date"] = stamp
    headers["x-amz-content-sha256"] = payload_sha256
    signed = {"host": host} | {name.lower(): value.strip() for name, value in headers.items()}
    names = sorted(signed)
    canonical = "\n".join(
        [
            method,
            path,
            _query_string(query),
            "".join(f"{name}:{signed[name]}\n" for name in names),
            ";".join(names),
            payload_sha256,
        ]
    )
    scope = f"{day}/{credentials.region}/s3/aws4_request"
    to_sign = "\n".join(
        ["AWS4-HMAC-SHA256", stamp, scope, hashlib.sha256(canonical.encode()).hexdigest()]
    )
    key = f"AWS4{credentials.secret_key}".encode()
    for part in (day, credentials.region, "s3", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    headers["Authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={credentials.access_key}/{scope}, "
        f"SignedHeaders={';'.join(names)}, Signature={signature}"
    )


def _query_string(query: Mapping[str, str]) -> str:
    return "&".join(f"{_uri(k)}={_uri(v)}" for k, v in sorted(query.items()))


async def _pieces(view: memoryview) -> AsyncIterator[memoryview]:
    # Sent piece by piece as the socket drains: a whole part handed to the transport at
    # once would be copied into its buffer.
    for start in range(0, len(view), _SEND_CHUNK):
        yield view[start : start + _SEND_CHUNK]


class ObjectStore:
    """An S3 client for one endpoint; see the module's doc for what it does and why."""

    def __init__(self, session: aiohttp.ClientSession, settings: S3Settings) -> None:
        self._session = session
        self._endpoint = settings.s3_endpoint_url.rstrip("/")
        self._host = self._endpoint.split("://", 1)[1].split("/", 1)[0]
        self._credentials = _Credentials(
            settings.s3_access_key_id.get_secret_value(),
            settings.s3_secret_access_key.get_secret_value(),
            settings.s3_region,
        )

    async def _call(
        self,
        operation: str,
        method: str,
        bucket: str,
        key: str = "",
        *,
        query: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        body: Body | None = None,
    ) -> tuple[Mapping[str, str], bytes]:
        path = "/" + _uri(bucket) + ("/" + _uri(key, safe="/~") if key else "")
        query = dict(query or {})
        streamed = body if isinstance(body, StreamedBody) else None
        pauses: tuple[float, ...] = _RETRY_PAUSES
        with self._view(None if streamed else body) as view:
            if streamed:
                payload_sha256, length, pauses = _UNSIGNED_PAYLOAD, streamed.length, ()
            else:
                payload_sha256 = hashlib.sha256(view).hexdigest() if view else _EMPTY_SHA256
                length = len(view)
            for pause in (*pauses, None):
                sent = dict(headers or {})
                _sign(method, self._host, path, query, sent, payload_sha256, self._credentials)
                if length:
                    sent["Content-Length"] = str(length)
                try:
                    async with self._session.request(
                        method,
                        # Sent exactly as signed: no second round of percent-encoding.
                        URL(f"{self._endpoint}{path}?{_query_string(query)}", encoded=True),
                        headers=sent,
                        data=streamed.pieces if streamed else _pieces(view) if view else None,
                    ) as response:
                        content = await response.read()
                        if response.status < 300:
                            return response.headers, content
                        error = _client_error(operation, response.status, content)
                except (aiohttp.ClientConnectionError, TimeoutError):
                    if pause is None:
                        raise
                else:
                    code = error.response["Error"]["Code"]
                    if pause is None or not (response.status >= 500 or code in _RETRY_CODES):
                        raise error
                await asyncio.sleep(pause)
        raise AssertionError("unreachable")

    @staticmethod
    def _view(body: bytes | io.BytesIO | None) -> Any:
        if isinstance(body, io.BytesIO):
            # The unread rest of the buffer, without copying it.
            return _Window(body)
        return memoryview(body or b"")

    # --- buckets --------------------------------------------------------------------------

    async def head_bucket(self, *, Bucket: str) -> dict[str, Any]:
        await self._call("HeadBucket", "HEAD", Bucket)
        return {}

    async def create_bucket(self, *, Bucket: str) -> dict[str, Any]:
        await self._call("CreateBucket", "PUT", Bucket)
        return {}

    async def ensure_bucket(self, bucket: str) -> None:
        """Create ``bucket`` unless it exists (``mediaflow_libs.s3.ensure_bucket``'s twin)."""
        try:
            await self.head_bucket(Bucket=bucket)
        except ClientError:
            try:
                await self.create_bucket(Bucket=bucket)
            except ClientError as exc:
                # Another replica starting at the same moment created it first.
                if exc.response["Error"]["Code"] not in _BUCKET_EXISTS_CODES:
                    raise

    # --- objects --------------------------------------------------------------------------

    async def head_object(self, *, Bucket: str, Key: str) -> dict[str, Any]:
        headers, _ = await self._call("HeadObject", "HEAD", Bucket, Key)
        return {
            "ContentLength": int(headers.get("Content-Length", 0)),
            "ContentType": headers.get("Content-Type", "binary/octet-stream"),
            "ETag": headers.get("ETag"),
            "Metadata": {
                name[len(_META_PREFIX) :].lower(): value
                for name, value in headers.items()
                if name.lower().startswith(_META_PREFIX)
            },
        }

    async def delete_object(self, *, Bucket: str, Key: str) -> dict[str, Any]:
        await self._call("DeleteObject", "DELETE", Bucket, Key)
        return {}

    async def copy_object(
        self,
        *,
        Bucket: str,
        Key: str,
        CopySource: Mapping[str, str],
        MetadataDirective: str | None = None,
        ContentType: str | None = None,
        Metadata: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        headers = {"x-amz-copy-source": _copy_source(CopySource)}
        if MetadataDirective:
            headers["x-amz-metadata-directive"] = MetadataDirective
        headers |= _object_headers(ContentType, Metadata)
        await self._call("CopyObject", "PUT", Bucket, Key, headers=headers)
        return {}

    # --- multipart uploads ----------------------------------------------------------------

    async def create_multipart_upload(
        self,
        *,
        Bucket: str,
        Key: str,
        ContentType: str | None = None,
        Metadata: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        headers = _object_headers(ContentType, Metadata)
        _, content = await self._call(
            "CreateMultipartUpload", "POST", Bucket, Key, query={"uploads": ""}, headers=headers
        )
        return {"UploadId": _text(_parse(content), "UploadId")}

    async def upload_part(
        self, *, Bucket: str, Key: str, UploadId: str, PartNumber: int, Body: Body
    ) -> dict[str, Any]:
        query = {"partNumber": str(PartNumber), "uploadId": UploadId}
        headers, _ = await self._call("UploadPart", "PUT", Bucket, Key, query=query, body=Body)
        return {"ETag": headers["ETag"]}

    async def upload_part_copy(
        self,
        *,
        Bucket: str,
        Key: str,
        UploadId: str,
        PartNumber: int,
        CopySource: Mapping[str, str],
        CopySourceRange: str,
    ) -> dict[str, Any]:
        query = {"partNumber": str(PartNumber), "uploadId": UploadId}
        headers = {
            "x-amz-copy-source": _copy_source(CopySource),
            "x-amz-copy-source-range": CopySourceRange,
        }
        _, content = await self._call(
            "UploadPartCopy", "PUT", Bucket, Key, query=query, headers=headers
        )
        return {"CopyPartResult": {"ETag": _text(_parse(content), "ETag")}}

    async def complete_multipart_upload(
        self, *, Bucket: str, Key: str, UploadId: str, MultipartUpload: Mapping[str, Any]
    ) -> dict[str, Any]:
        parts = "".join(
            f"<Part><PartNumber>{p['PartNumber']}</PartNumber><ETag>{_xml(p['ETag'])}</ETag></Part>"
            for p in MultipartUpload["Parts"]
        )
        body = f"<CompleteMultipartUpload>{parts}</CompleteMultipartUpload>".encode()
        _, content = await self._call(
            "CompleteMultipartUpload", "POST", Bucket, Key, query={"uploadId": UploadId}, body=body
        )
        # S3 may answer 200 and still report a failure in the body.
        root = _parse(content)
        if root.tag.rsplit("}", 1)[-1] == "Error":
            raise _client_error("CompleteMultipartUpload", 500, content)
        return {}

    async def abort_multipart_upload(
        self, *, Bucket: str, Key: str, UploadId: str
    ) -> dict[str, Any]:
        await self._call(
            "AbortMultipartUpload", "DELETE", Bucket, Key, query={"uploadId": UploadId}
        )
        return {}

    # --- listings (the first page: the worker lists one task's few keys) --------------------

    async def list_multipart_uploads(self, *, Bucket: str, Prefix: str) -> dict[str, Any]:
        _, content = await self._call(
            "ListMultipartUploads", "GET", Bucket, query={"uploads": "", "prefix": Prefix}
        )
        uploads = _children(_parse(content), "Upload")
        return {
            "Uploads": [{"Key": _text(u, "Key"), "UploadId": _text(u, "UploadId")} for u in uploads]
        }

    async def list_objects_v2(self, *, Bucket: str, Prefix: str) -> dict[str, Any]:
        _, content = await self._call(
            "ListObjectsV2", "GET", Bucket, query={"list-type": "2", "prefix": Prefix}
        )
        items = _children(_parse(content), "Contents")
        return {
            "Contents": [
                {"Key": _text(c, "Key"), "Size": int(_text(c, "Size") or 0)} for c in items
            ]
        }


class _Window:
    """The unread rest of a BytesIO as a memoryview (a context manager, so the buffer is
    released, and the BytesIO usable again, once the request is done)."""

    def __init__(self, buffer: io.BytesIO) -> None:
        self._buffer = buffer

    def __enter__(self) -> memoryview:
        self._view = self._buffer.getbuffer()
        return self._view[self._buffer.tell() :]

    def __exit__(self, *_: object) -> None:
        self._view.release()


def _copy_source(source: Mapping[str, str]) -> str:
    return _uri(f"{source['Bucket']}/{source['Key']}", safe="/~")


def _object_headers(content_type: str | None, metadata: Mapping[str, str] | None) -> dict[str, str]:
    headers = {f"{_META_PREFIX}{name}": value for name, value in (metadata or {}).items()}
    if content_type:
        headers["Content-Type"] = content_type
    return headers


def _xml(text: str) -> str:
    return (
        text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")
    )


def _client_error(operation: str, status: int, content: bytes) -> ClientError:
    code, message = str(status), ""
    if content:
        try:
            root = _parse(content)
        except ElementTree.ParseError:
            pass
        else:
            code = _text(root, "Code") or code
            message = _text(root, "Message")
    return ClientError(
        {
            "Error": {"Code": code, "Message": message},
            "ResponseMetadata": {"HTTPStatusCode": status},
        },
        operation,
    )


@asynccontextmanager
async def open_object_store(settings: S3Settings) -> AsyncIterator[ObjectStore]:
    """The worker's S3 client, with an HTTP connection pool of its own (the sources' pool
    refuses private addresses, and the store usually has one)."""
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=5, sock_read=60)
    connector = aiohttp.TCPConnector(limit=20)
    async with aiohttp.ClientSession(
        connector=connector, timeout=timeout, auto_decompress=False
    ) as session:
        yield ObjectStore(session, settings)
