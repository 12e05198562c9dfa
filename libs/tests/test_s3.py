"""The one S3 client (``mediaflow_libs.s3``) against two independent S3 servers: the shared
SeaweedFS, and moto's server mode (S3, STS and KMS emulated over real HTTP), started here on
a free loopback port.

What users rely on: credentials from the AWS chain (a web identity token through STS, keys
with a session token) when no static keys are set; virtual-hosted addressing; SSE-KMS on
every write; a checksum on every part (the one SeaweedFS verifies: a part corrupted in
transit is refused; moto computes its own and keeps the part); and large copies as
UploadPartCopy parts once an object passes the copy threshold."""

from __future__ import annotations

import base64
import hashlib
import io
import os
import secrets
import subprocess
import sys
import time
import zlib
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiobotocore.session import get_session
from botocore.exceptions import ClientError

from devstack import stack
from mediaflow_libs.s3 import (
    OneAwsChunk,
    StreamedBody,
    completed_part,
    copy_object,
    ensure_bucket,
    open_s3,
)
from mediaflow_libs.settings import S3Settings

MIB = 1024 * 1024
PIECE = 256 * 1024
# Any key works with moto unless it is told to check them.
MOTO_KEYS = {"s3_access_key_id": "AKIAMOTOEXAMPLE", "s3_secret_access_key": "moto-secret"}
ROLE_ARN = "arn:aws:iam::123456789012:role/mediaflow-worker"


@pytest.fixture(scope="session")
def moto_url() -> Iterator[str]:
    """``moto_server`` on a free loopback port, for this test session."""
    port = stack.free_port()
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            if server.poll() is not None:
                raise RuntimeError(f"moto_server exited with {server.returncode}")
            try:
                if httpx.get(f"{url}/moto-api/", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.05)  # moto needs a few seconds to start; nothing is asserted meanwhile
        else:
            raise RuntimeError("moto_server did not answer within 30 s")
        yield url
    finally:
        server.terminate()
        server.wait(timeout=10)


@pytest.fixture
def aws_chain_only(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """An environment where botocore's credential chain finds nothing unless a test puts it
    there: no keys, no profile files, no instance metadata (no network off this machine)."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    return monkeypatch


def seaweedfs_settings(infra: Any, **overrides: Any) -> S3Settings:
    kwargs = {k: v for k, v in infra.settings_kwargs().items() if k.startswith("s3_")}
    return S3Settings(**(kwargs | overrides))


def moto_settings(moto_url: str, **overrides: Any) -> S3Settings:
    return S3Settings(
        **({"s3_endpoint_url": moto_url, "s3_bucket": f"test-{secrets.token_hex(4)}"} | overrides)
    )


class Sent:
    """The requests a client sends, as botocore hands them to the network."""

    def __init__(self, client: Any) -> None:
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        client.meta.events.register("before-send.s3", self._record)

    def _record(self, request: Any, event_name: str, **_: Any) -> None:
        headers = {k.lower(): _text(v) for k, v in request.headers.items()}
        self.requests.append((event_name.rsplit(".", 1)[-1], request.url, headers))

    def of(self, operation: str) -> list[dict[str, str]]:
        return [headers for name, _, headers in self.requests if name == operation]

    def operations(self) -> list[str]:
        return [name for name, _, _ in self.requests]


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


async def pieces(data: bytes) -> AsyncIterator[memoryview]:
    view = memoryview(data)
    for start in range(0, len(data), PIECE):
        yield view[start : start + PIECE]


def crc32(data: bytes) -> str:
    return base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()


async def upload_in_parts(s3: Any, bucket: str, key: str, parts: list[bytes]) -> None:
    """A multipart upload as the worker makes it: parts streamed, the last from memory."""
    upload = await s3.create_multipart_upload(Bucket=bucket, Key=key, ContentType="video/mp4")
    done = []
    for number, data in enumerate(parts, start=1):
        body: Any = io.BytesIO(data)
        extra = {}
        if number < len(parts):
            body, extra = StreamedBody(pieces(data), len(data)), {"ContentLength": len(data)}
        answer = await s3.upload_part(
            Bucket=bucket,
            Key=key,
            UploadId=upload["UploadId"],
            PartNumber=number,
            Body=body,
            **extra,
        )
        # The store's checksum of what it received is the one computed as the bytes left.
        assert answer["ChecksumCRC32"] == crc32(data)
        done.append(completed_part(number, answer))
    await s3.complete_multipart_upload(
        Bucket=bucket, Key=key, UploadId=upload["UploadId"], MultipartUpload={"Parts": done}
    )


async def read(s3: Any, bucket: str, key: str) -> bytes:
    got = await s3.get_object(Bucket=bucket, Key=key)
    async with got["Body"] as body:
        data: bytes = await body.read()
    return data


@pytest.fixture(params=["seaweedfs", "moto"])
def any_store(request: pytest.FixtureRequest) -> S3Settings:
    if request.param == "seaweedfs":
        return seaweedfs_settings(request.getfixturevalue("infra"))
    return moto_settings(request.getfixturevalue("moto_url"), **MOTO_KEYS)


async def test_streamed_parts_carry_checksums_and_large_copies_go_in_parts(
    any_store: S3Settings,
) -> None:
    bucket, key = any_store.s3_bucket, f"s3-test/{secrets.token_hex(4)}"
    parts = [os.urandom(5 * MIB), os.urandom(5 * MIB), os.urandom(2 * MIB + 17)]
    data = b"".join(parts)
    sha256 = hashlib.sha256(data).hexdigest()
    async with open_s3(any_store) as s3:
        await ensure_bucket(s3, bucket)
        sent = Sent(s3)
        await upload_in_parts(s3, bucket, key, parts)
        streamed, in_memory = sent.of("UploadPart")[0], sent.of("UploadPart")[-1]
        # A streamed part: aws-chunked, its checksum in the trailer, its length announced.
        assert streamed["x-amz-trailer"] == "x-amz-checksum-crc32"
        assert streamed["x-amz-content-sha256"] == "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
        assert streamed["x-amz-decoded-content-length"] == str(5 * MIB)
        # One aws-chunk under a Content-Length, not HTTP chunks: its pieces go out uncopied.
        assert "transfer-encoding" not in streamed
        assert int(streamed["content-length"]) > 5 * MIB
        # A part held in memory: the checksum in a header.
        assert in_memory["x-amz-checksum-crc32"] == crc32(parts[-1])

        # The self-copy that sets the SHA-256, above the (lowered) threshold: UploadPartCopy.
        before = len(sent.requests)
        await copy_object(
            client=s3,
            bucket=bucket,
            source=key,
            target=key,
            size=len(data),
            threshold=5 * MIB,
            part_bytes=5 * MIB,
            content_type="video/mp4",
            metadata={"sha256": sha256},
        )
        copied = sent.operations()[before:]
        assert copied.count("UploadPartCopy") == 3
        assert "CopyObject" not in copied
        head = await s3.head_object(Bucket=bucket, Key=key)
        assert (head["ContentLength"], head["Metadata"]) == (len(data), {"sha256": sha256})
        assert head["ContentType"] == "video/mp4"
        assert await read(s3, bucket, key) == data

        # Up to the threshold, one CopyObject that keeps the metadata (a cached result's copy).
        before = len(sent.requests)
        await copy_object(
            client=s3,
            bucket=bucket,
            source=key,
            target=f"{key}-copy",
            size=len(data),
            threshold=len(data),
            part_bytes=5 * MIB,
        )
        assert sent.operations()[before:] == ["CopyObject"]
        copy = await s3.head_object(Bucket=bucket, Key=f"{key}-copy")
        assert copy["Metadata"] == {"sha256": sha256}
        for name in (key, f"{key}-copy"):
            await s3.delete_object(Bucket=bucket, Key=name)


class _CorruptFirstChunk:
    """An aws-chunked body with one bit of its data flipped on the way out (in the first
    piece written that holds data, not only framing), after the checksum in its trailer was
    computed from the bytes as they were."""

    def __init__(self, inner: Any) -> None:
        self._inner = aiter(inner)
        self._done = False

    def __aiter__(self) -> _CorruptFirstChunk:
        return self

    async def __anext__(self) -> bytes:
        chunk = bytes(await anext(self._inner))
        if not self._done and len(chunk) > 4096:
            self._done = True
            flipped = bytearray(chunk)
            flipped[len(chunk) // 2] ^= 1
            return bytes(flipped)
        return chunk


@pytest.mark.parametrize(
    ("trailer", "digest"),
    [
        ("x-amz-checksum-crc32", lambda data: zlib.crc32(data).to_bytes(4, "big")),
        ("x-amz-checksum-sha1", lambda data: hashlib.sha1(data).digest()),
        ("x-amz-checksum-sha256", lambda data: hashlib.sha256(data).digest()),
    ],
)
@pytest.mark.parametrize("size", [0, 1, PIECE, 3 * PIECE + 5])
async def test_a_streamed_body_is_one_aws_chunk_as_long_as_announced(
    trailer: str, digest: Callable[[bytes], bytes], size: int
) -> None:
    data = os.urandom(size)
    framed = OneAwsChunk(StreamedBody(pieces(data), size), trailer)
    sent = b"".join([bytes(piece) async for piece in framed])
    checksum = base64.b64encode(digest(data)).decode()
    trail = f"0\r\n{trailer}:{checksum}\r\n\r\n".encode()
    expected = (f"{size:x}\r\n".encode() + data + b"\r\n" if size else b"") + trail
    assert sent == expected
    assert framed.length == len(sent)


async def test_seaweedfs_refuses_a_part_corrupted_in_transit(infra: Any) -> None:
    settings = seaweedfs_settings(infra)
    bucket, key = settings.s3_bucket, f"s3-test/{secrets.token_hex(4)}"
    data = os.urandom(5 * MIB)

    def corrupt(request: Any, **_: Any) -> None:
        request.body = _CorruptFirstChunk(request.body)

    async with open_s3(settings) as s3:
        await ensure_bucket(s3, bucket)
        upload = await s3.create_multipart_upload(Bucket=bucket, Key=key)
        s3.meta.events.register("before-send.s3.UploadPart", corrupt)
        try:
            with pytest.raises(ClientError) as refused:
                await s3.upload_part(
                    Bucket=bucket,
                    Key=key,
                    UploadId=upload["UploadId"],
                    PartNumber=1,
                    Body=StreamedBody(pieces(data), len(data)),
                    ContentLength=len(data),
                )
            assert refused.value.response["Error"]["Code"] in {"InvalidDigest", "BadDigest"}
            listed = await s3.list_parts(Bucket=bucket, Key=key, UploadId=upload["UploadId"])
            assert listed.get("Parts", []) == []
        finally:
            await s3.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload["UploadId"])


async def _web_identity_credentials(moto_url: str) -> Any:
    async with get_session().create_client(
        "sts",
        endpoint_url=moto_url,
        region_name="us-east-1",
        aws_access_key_id="AKIAMOTOEXAMPLE",
        aws_secret_access_key="moto-secret",
    ) as sts:
        return (await sts.get_session_token())["Credentials"]


async def test_credentials_come_from_a_web_identity_token_through_sts(
    moto_url: str, aws_chain_only: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    token = tmp_path / "token"
    token.write_text("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQifQ.c2ln")
    aws_chain_only.setenv("AWS_WEB_IDENTITY_TOKEN_FILE", str(token))
    aws_chain_only.setenv("AWS_ROLE_ARN", ROLE_ARN)
    aws_chain_only.setenv("AWS_ROLE_SESSION_NAME", "mediaflow-test")
    # The STS that botocore's web identity provider asks: moto's, not AWS's.
    aws_chain_only.setenv("AWS_ENDPOINT_URL_STS", moto_url)
    settings = moto_settings(moto_url)  # no static keys
    async with open_s3(settings) as s3:
        sent = Sent(s3)
        await ensure_bucket(s3, settings.s3_bucket)
        await s3.put_object(Bucket=settings.s3_bucket, Key="k", Body=b"hello")
        assert await read(s3, settings.s3_bucket, "k") == b"hello"
        credentials = s3._get_credentials()
        frozen = await credentials.get_frozen_credentials()
    assert credentials.method == "assume-role-with-web-identity"
    assert frozen.token
    for _, _, headers in sent.requests:
        assert headers["x-amz-security-token"] == frozen.token
        assert f"Credential={frozen.access_key}/" in headers["authorization"]


async def test_environment_keys_with_a_session_token(
    moto_url: str, aws_chain_only: pytest.MonkeyPatch
) -> None:
    issued = await _web_identity_credentials(moto_url)
    aws_chain_only.setenv("AWS_ACCESS_KEY_ID", issued["AccessKeyId"])
    aws_chain_only.setenv("AWS_SECRET_ACCESS_KEY", issued["SecretAccessKey"])
    aws_chain_only.setenv("AWS_SESSION_TOKEN", issued["SessionToken"])
    settings = moto_settings(moto_url)
    async with open_s3(settings) as s3:
        sent = Sent(s3)
        await ensure_bucket(s3, settings.s3_bucket)
        await s3.put_object(Bucket=settings.s3_bucket, Key="k", Body=b"hello")
    assert sent.requests
    for _, _, headers in sent.requests:
        assert headers["x-amz-security-token"] == issued["SessionToken"]
        assert f"Credential={issued['AccessKeyId']}/" in headers["authorization"]


async def test_virtual_hosted_addressing_names_the_bucket_in_the_host(moto_url: str) -> None:
    port = moto_url.rsplit(":", 1)[1]
    # localhost's subdomains are the loopback address (RFC 6761), whatever /etc/hosts says.
    settings = moto_settings(f"http://localhost:{port}", s3_addressing_style="virtual", **MOTO_KEYS)
    bucket = settings.s3_bucket
    async with open_s3(settings) as s3:
        sent = Sent(s3)
        await ensure_bucket(s3, bucket)
        await upload_in_parts(s3, bucket, "a/b.mp4", [os.urandom(5 * MIB), b"tail"])
        assert await read(s3, bucket, "a/b.mp4") != b""
        url = await s3.generate_presigned_url(
            "get_object", Params={"Bucket": bucket, "Key": "a/b.mp4"}, ExpiresIn=60
        )
    assert url.startswith(f"http://{bucket}.localhost:{port}/a/b.mp4?")
    for _, request_url, _ in sent.requests:
        assert request_url.startswith(f"http://{bucket}.localhost:{port}/")
    async with httpx.AsyncClient() as http:
        presigned = await http.get(
            url.replace(f"{bucket}.localhost", "127.0.0.1"),
            headers={"Host": f"{bucket}.localhost:{port}"},
        )
    assert presigned.status_code == 200
    assert presigned.content.endswith(b"tail")


async def test_every_write_asks_for_sse_kms(moto_url: str) -> None:
    async with get_session().create_client(
        "kms",
        endpoint_url=moto_url,
        region_name="us-east-1",
        aws_access_key_id="AKIAMOTOEXAMPLE",
        aws_secret_access_key="moto-secret",
    ) as kms:
        key_id = (await kms.create_key())["KeyMetadata"]["Arn"]
    settings = moto_settings(moto_url, s3_sse="aws:kms", s3_sse_kms_key_id=key_id, **MOTO_KEYS)
    bucket = settings.s3_bucket
    async with open_s3(settings) as s3:
        await ensure_bucket(s3, bucket)
        sent = Sent(s3)
        await upload_in_parts(s3, bucket, "multipart", [os.urandom(5 * MIB), b"tail"])
        await s3.put_object(Bucket=bucket, Key="put", Body=b"hello")
        await copy_object(
            client=s3,
            bucket=bucket,
            source="put",
            target="put",
            size=5,
            threshold=5 * MIB,
            part_bytes=5 * MIB,
            metadata={"sha256": "x"},
        )
        heads = [await s3.head_object(Bucket=bucket, Key=k) for k in ("multipart", "put")]
    writes = ("CreateMultipartUpload", "PutObject", "CopyObject")
    for operation in writes:
        (headers,) = sent.of(operation)
        assert headers["x-amz-server-side-encryption"] == "aws:kms"
        assert headers["x-amz-server-side-encryption-aws-kms-key-id"] == key_id
    for head in heads:
        assert (head["ServerSideEncryption"], head["SSEKMSKeyId"]) == ("aws:kms", key_id)


async def test_sse_s3_and_no_encryption_header_when_unset(infra: Any) -> None:
    for sse, expected in (("AES256", "AES256"), ("", None)):
        settings = seaweedfs_settings(infra, s3_sse=sse)
        async with open_s3(settings) as s3:
            await ensure_bucket(s3, settings.s3_bucket)
            sent = Sent(s3)
            key = f"s3-test/{secrets.token_hex(4)}"
            await s3.put_object(Bucket=settings.s3_bucket, Key=key, Body=b"hello")
            await s3.delete_object(Bucket=settings.s3_bucket, Key=key)
        (headers,) = sent.of("PutObject")
        assert headers.get("x-amz-server-side-encryption") == expected


def test_static_keys_come_in_pairs_and_kms_keys_with_kms() -> None:
    with pytest.raises(ValueError, match="set together"):
        S3Settings(s3_access_key_id="only-the-id")
    with pytest.raises(ValueError, match="S3_SSE=aws:kms"):
        S3Settings(s3_sse="AES256", s3_sse_kms_key_id="key")
    assert S3Settings().s3_access_key_id.get_secret_value() == ""


async def test_a_failed_multipart_copy_leaves_no_upload(any_store: S3Settings) -> None:
    bucket = any_store.s3_bucket
    async with open_s3(any_store) as s3:
        await ensure_bucket(s3, bucket)
        key = f"s3-test/{secrets.token_hex(4)}"
        await s3.put_object(Bucket=bucket, Key=key, Body=os.urandom(6 * MIB))
        with pytest.raises(ClientError):
            # Claims more bytes than the source has: the last part's range is refused.
            await copy_object(
                client=s3,
                bucket=bucket,
                source=key,
                target=f"{key}-copy",
                size=12 * MIB,
                threshold=5 * MIB,
                part_bytes=5 * MIB,
                metadata={},
            )
        uploads = await s3.list_multipart_uploads(Bucket=bucket, Prefix=f"{key}-copy")
        assert uploads.get("Uploads", []) == []
        await s3.delete_object(Bucket=bucket, Key=key)
