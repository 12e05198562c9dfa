"""The one S3 client of every service: aiobotocore, configured from :class:`S3Settings`.

What it adds to a plain aiobotocore client, for every caller alike:

- credentials: the static keys when set, else botocore's own chain (environment keys with
  a session token, a web identity token file with a role ARN through STS, EKS Pod Identity
  and container credentials, instance metadata), refreshed by botocore as they expire;
- addressing (path or virtual-hosted) and the region from the settings; ``localhost`` and
  its subdomains resolve to the loopback address (RFC 6761), so virtual-hosted addressing
  works against a store on this machine too;
- every write (CreateMultipartUpload, PutObject, CopyObject) asks for the configured
  server-side encryption, and every uploaded part and object carries the configured
  checksum, which the store verifies before it keeps the bytes;
- a :class:`StreamedBody` (a part passed through from its source as it arrives) is sent
  ``aws-chunked`` with its checksum in a trailer, computed as the bytes pass: the one way
  to have a checksum on a body whose bytes are not all there when the request starts. It
  goes as one aws-chunk under a ``Content-Length``, its pieces written as they come:
  botocore would frame each read as a chunk of its own and send the whole with
  ``Transfer-Encoding: chunked``, copying every byte twice more on its way out.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

import structlog
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver
from botocore.exceptions import ClientError
from botocore.httpchecksum import (
    HAS_CRT,
    BaseChecksum,
    Crc32Checksum,
    CrtCrc32cChecksum,
    CrtCrc32Checksum,
    Sha1Checksum,
    Sha256Checksum,
)

from mediaflow_libs.settings import S3Settings

log = structlog.get_logger(__name__)

_BUCKET_EXISTS_CODES = frozenset({"BucketAlreadyOwnedByYou", "BucketAlreadyExists"})
# Operations that write an object: each asks for the configured server-side encryption.
_ENCRYPTED_WRITES = ("CreateMultipartUpload", "PutObject", "CopyObject")
# Operations whose bytes carry the configured checksum (a multipart upload declares it when
# created, and S3 then wants it on every part and in the completion).
_CHECKSUMMED = ("CreateMultipartUpload", "UploadPart", "PutObject")
# S3 copies at most this much in one CopyObject or UploadPartCopy.
MAX_COPY_BYTES = 5 * 1024**3


class StreamedBody:
    """A body of known ``length`` whose bytes come from ``pieces`` while it is sent.

    Not seekable: a failed send cannot be repeated, so botocore's retry of it ends in
    ``UnseekableStreamError`` (the caller starts over)."""

    def __init__(self, pieces: AsyncIterator[bytes | memoryview], length: int) -> None:
        self._pieces = pieces
        self._rest: memoryview = memoryview(b"")
        self.length = length

    async def read(self, size: int = -1) -> bytes | memoryview:
        """The next piece, or its first ``size`` bytes; ``b""`` at the end. Never joins
        pieces: a copy of every byte for nothing."""
        if not self._rest:
            try:
                self._rest = memoryview(await anext(self._pieces))
            except StopAsyncIteration:
                return b""
        room = len(self._rest) if size < 0 else size
        piece, self._rest = self._rest[:room], self._rest[room:]
        return piece


# The checksums an upload can trail, by the name of their trailer (what botocore would use).
_TRAILED_CHECKSUMS: dict[str, type[BaseChecksum]] = {
    "x-amz-checksum-crc32": CrtCrc32Checksum if HAS_CRT else Crc32Checksum,
    "x-amz-checksum-crc32c": CrtCrc32cChecksum,
    "x-amz-checksum-sha1": Sha1Checksum,
    "x-amz-checksum-sha256": Sha256Checksum,
}
_DIGEST_BYTES = {
    "x-amz-checksum-crc32": 4,
    "x-amz-checksum-crc32c": 4,
    "x-amz-checksum-sha1": 20,
    "x-amz-checksum-sha256": 32,
}
_STREAMED = "mediaflow.streamed_body"  # where the request's context keeps its StreamedBody


class OneAwsChunk:
    """``body`` framed as ``aws-chunked``: one chunk holding all its bytes, written piece by
    piece as they come, then the trailer with their checksum; ``length`` is the whole
    frame's, known before the first byte."""

    def __init__(self, body: StreamedBody, trailer: str) -> None:
        self._body = body
        self._trailer = trailer
        self._checksum = _TRAILED_CHECKSUMS[trailer]()
        self._head = f"{body.length:x}\r\n".encode() if body.length else b""
        digest = 4 * -(-_DIGEST_BYTES[trailer] // 3)  # its base64 length
        data = len(self._head) + body.length + (2 if body.length else 0)
        self.length = data + len(f"0\r\n{trailer}:\r\n\r\n") + digest

    async def __aiter__(self) -> AsyncIterator[bytes | memoryview]:
        if self._head:
            yield self._head
        while piece := await self._body.read():
            self._checksum.update(piece)  # type: ignore[arg-type]  # any buffer does
            yield piece
        end = b"\r\n" if self._head else b""
        digest = self._checksum.b64digest()
        yield end + f"0\r\n{self._trailer}:{digest}\r\n\r\n".encode()


class LoopbackNamesResolver(AbstractResolver):
    """The default resolver, except that ``localhost`` and ``*.localhost`` are the loopback
    address (RFC 6761 §6.3), which the system's resolver does not always know."""

    def __init__(self) -> None:
        self._default: AbstractResolver | None = None

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        name = host.rstrip(".").lower()
        if name == "localhost" or name.endswith(".localhost"):
            inet = socket.AF_INET6 if family == socket.AF_INET6 else socket.AF_INET
            address = "::1" if inet == socket.AF_INET6 else "127.0.0.1"
            loopback = ResolveResult(
                hostname=host, host=address, port=port, family=inet, proto=0, flags=0
            )
            return [loopback]
        if self._default is None:
            self._default = DefaultResolver()
        return await self._default.resolve(host, port, family)

    async def close(self) -> None:
        if self._default is not None:
            await self._default.close()


def _config(settings: S3Settings) -> AioConfig:
    return AioConfig(
        signature_version="s3v4",
        region_name=settings.s3_region,
        s3={"addressing_style": settings.s3_addressing_style},
        retries={"max_attempts": 3, "mode": "standard"},
        connect_timeout=5,
        read_timeout=60,
        # Checksums only where the caller (or this module) names an algorithm: the uploads
        # name the configured one; nothing else is sent with a checksum botocore picks.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        max_pool_connections=20,
        connector_args={"resolver": LoopbackNamesResolver()},
    )


def _write_defaults(settings: S3Settings) -> Callable[..., None]:
    encryption: dict[str, str] = {}
    if settings.s3_sse:
        encryption["ServerSideEncryption"] = settings.s3_sse
    if settings.s3_sse_kms_key_id:
        encryption["SSEKMSKeyId"] = settings.s3_sse_kms_key_id

    def add(params: dict[str, Any], model: Any, **_: Any) -> None:
        if model.name in _ENCRYPTED_WRITES:
            for name, value in encryption.items():
                params.setdefault(name, value)
        if model.name in _CHECKSUMMED:
            params.setdefault("ChecksumAlgorithm", settings.s3_checksum_algorithm)

    return add


def _trail_streamed_checksum(params: dict[str, Any], **_: Any) -> None:
    """A :class:`StreamedBody` gets its checksum in a trailer, over http too: botocore puts
    it in a header there, which needs every byte before the request starts."""
    body = params.get("body")
    if isinstance(body, StreamedBody):
        algorithm = params["context"].get("checksum", {}).get("request_algorithm")
        if isinstance(algorithm, dict):
            algorithm["in"] = "trailer"
            params["context"][_STREAMED] = body


def _send_streamed_as_one_chunk(request: Any, **_: Any) -> None:
    """Before signing: the trailed :class:`StreamedBody` goes as :class:`OneAwsChunk` with
    its length instead of botocore's framing of it (the headers botocore set for the
    trailer, the decoded length among them, stay)."""
    body = request.context.get(_STREAMED)
    trailer = request.headers.get("X-Amz-Trailer")
    if body is None or trailer not in _TRAILED_CHECKSUMS:
        return
    framed = OneAwsChunk(body, trailer)
    del request.headers["Transfer-Encoding"]
    request.headers["Content-Length"] = str(framed.length)
    request.data = framed


@asynccontextmanager
async def open_s3(settings: S3Settings, *, public: bool = False) -> AsyncIterator[Any]:
    """An S3 client; ``public=True`` signs URLs for ``S3_PUBLIC_ENDPOINT_URL``."""
    endpoint = settings.s3_endpoint_url or None
    if public and settings.s3_public_endpoint_url:
        endpoint = settings.s3_public_endpoint_url
    # Empty keys leave the choice to botocore's credential chain.
    key_id = settings.s3_access_key_id.get_secret_value() or None
    secret = settings.s3_secret_access_key.get_secret_value() or None
    session = get_session()
    async with session.create_client(
        "s3",
        endpoint_url=endpoint,
        region_name=settings.s3_region,
        aws_access_key_id=key_id,
        aws_secret_access_key=secret,
        config=_config(settings),
    ) as client:
        events = client.meta.events
        events.register("provide-client-params.s3", _write_defaults(settings))
        events.register("before-call.s3.UploadPart", _trail_streamed_checksum)
        events.register("before-call.s3.PutObject", _trail_streamed_checksum)
        events.register("before-sign.s3.UploadPart", _send_streamed_as_one_chunk)
        events.register("before-sign.s3.PutObject", _send_streamed_as_one_chunk)
        yield client


async def ensure_bucket(client: Any, bucket: str) -> None:
    """Create ``bucket`` unless it exists (every service that stores may start first)."""
    try:
        await client.head_bucket(Bucket=bucket)
    except ClientError:
        try:
            await client.create_bucket(Bucket=bucket)
        except ClientError as exc:
            # Another process starting at the same moment created it first.
            if exc.response["Error"]["Code"] not in _BUCKET_EXISTS_CODES:
                raise
            return
        log.info("s3.bucket_created", bucket=bucket)


def completed_part(number: int, uploaded: Mapping[str, Any]) -> dict[str, Any]:
    """The entry of CompleteMultipartUpload's part list for an ``upload_part`` (or an
    ``upload_part_copy``'s ``CopyPartResult``) answer: ETag and the part's checksum, which
    S3 wants back when the upload declared an algorithm."""
    part = {"PartNumber": number, "ETag": uploaded["ETag"]}
    part |= {name: value for name, value in uploaded.items() if name.startswith("Checksum")}
    part.pop("ChecksumType", None)
    return part


async def copy_object(
    *,
    client: Any,
    bucket: str,
    source: str,
    target: str,
    size: int,
    threshold: int,
    part_bytes: int,
    content_type: str | None = None,
    metadata: Mapping[str, str] | None = None,
) -> None:
    """Copy object ``source`` (of ``size`` bytes) to ``target`` inside the store (``source``
    may be ``target``: a self-copy is how S3 sets metadata afterwards). Up to ``threshold``
    one CopyObject, beyond a multipart upload of UploadPartCopy parts of ``part_bytes``
    (S3 copies at most 5 GiB per request). With ``metadata`` (and ``content_type``) the
    copy gets those, else the source's. A failed multipart copy is aborted."""
    copy_source = {"Bucket": bucket, "Key": source}
    if size <= threshold:
        extra: dict[str, Any] = {}
        if metadata is not None:
            extra = {"MetadataDirective": "REPLACE", "Metadata": dict(metadata)}
            if content_type:
                extra["ContentType"] = content_type
        await client.copy_object(Bucket=bucket, Key=target, CopySource=copy_source, **extra)
        return
    if metadata is None:
        head = await client.head_object(Bucket=bucket, Key=source)
        metadata, content_type = head.get("Metadata", {}), head.get("ContentType")
    upload = await client.create_multipart_upload(
        Bucket=bucket,
        Key=target,
        ContentType=content_type or "application/octet-stream",
        Metadata=dict(metadata),
    )
    upload_id = upload["UploadId"]
    try:
        parts = []
        for number, start in enumerate(range(0, size, part_bytes), start=1):
            end = min(start + part_bytes, size) - 1
            copied = await client.upload_part_copy(
                Bucket=bucket,
                Key=target,
                UploadId=upload_id,
                PartNumber=number,
                CopySource=copy_source,
                CopySourceRange=f"bytes={start}-{end}",
            )
            parts.append(completed_part(number, copied["CopyPartResult"]))
        await client.complete_multipart_upload(
            Bucket=bucket, Key=target, UploadId=upload_id, MultipartUpload={"Parts": parts}
        )
    except BaseException:
        await asyncio.shield(_abort_quietly(client, bucket, target, upload_id))
        raise


async def _abort_quietly(client: Any, bucket: str, key: str, upload_id: str) -> None:
    try:
        await client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
    except Exception as exc:
        log.warning("s3.abort_failed", key=key, error=repr(exc))


async def delete_prefix(
    client: Any,
    bucket: str,
    prefix: str,
    *,
    keep: str | None = None,
    keep_upload: str | None = None,
) -> int:
    """Abort every multipart upload under ``prefix`` (but the upload id ``keep_upload``) and
    delete its objects (all but the object ``keep``); returns how many objects it deleted.
    Raises what the store answers, so a caller can try again later."""
    uploads = await client.list_multipart_uploads(Bucket=bucket, Prefix=prefix)
    for upload in uploads.get("Uploads", []):
        if upload["UploadId"] == keep_upload:
            continue
        await client.abort_multipart_upload(
            Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"]
        )
    deleted = 0
    paginator = client.get_paginator("list_objects_v2")
    async for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            if item["Key"] != keep:
                await client.delete_object(Bucket=bucket, Key=item["Key"])
                deleted += 1
    return deleted
