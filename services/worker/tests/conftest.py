"""Fixtures of the worker's tests: generated media, an in-memory S3 for the pipeline's
unit tests, and a local HTTP origin that serves sources on 127.0.0.1."""

from __future__ import annotations

import asyncio
import io
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from botocore.exceptions import ClientError

from devstack import media, stack
from mediaflow_libs.s3 import StreamedBody

# The in-process worker of the integration tests, shared by their modules.
from services.worker.tests.support import channel, s3, submit, worker

__all__ = ["channel", "s3", "submit", "worker"]


@pytest.fixture(scope="session")
def make_mp4(tmp_path_factory: pytest.TempPathFactory) -> Callable[[int], bytes]:
    """``make_mp4(size)``: the bytes of a file that starts like a real MP4 (``ftyp`` box,
    then ``mdat``) with random payload, as the devstack's sample origin makes them."""
    directory = tmp_path_factory.mktemp("media")

    def make(size: int) -> bytes:
        path = directory / f"{secrets.token_hex(4)}.mp4"
        media.write_sample_mp4(path, size)
        try:
            return path.read_bytes()
        finally:
            path.unlink()

    return make


# --- an in-memory S3 --------------------------------------------------------------------


def _client_error(code: str, operation: str, status: int = 500) -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": code}, "ResponseMetadata": {"HTTPStatusCode": status}},
        operation,
    )


@dataclass
class FakeS3:
    """Just enough of aiobotocore's S3 client for the pipeline, and a record of its use."""

    fail_part: int | None = None
    fail_part_with: tuple[str, int] = ("InternalError", 500)  # error code, HTTP status
    fail_copy: bool = False
    part_gate: asyncio.Event | None = None  # while unset, part uploads wait
    uploads: dict[str, dict[str, Any]] = field(default_factory=dict)
    objects: dict[str, dict[str, Any]] = field(default_factory=dict)
    aborted: list[str] = field(default_factory=list)
    created: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    part_sizes: list[int] = field(default_factory=list)
    parts_started: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def create_multipart_upload(self, *, Bucket: str, Key: str, ContentType: str) -> Any:
        self.created += 1
        upload_id = secrets.token_hex(8)
        self.uploads[upload_id] = {"key": Key, "content_type": ContentType, "parts": {}}
        return {"UploadId": upload_id}

    async def upload_part(
        self,
        *,
        Bucket: str,
        Key: str,
        UploadId: str,
        PartNumber: int,
        Body: io.BytesIO | StreamedBody,
        ContentLength: int | None = None,
    ) -> Any:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        async with self.parts_started:
            self.parts_started.notify_all()
        try:
            if self.part_gate is not None:
                await self.part_gate.wait()
            await asyncio.sleep(0.001)
            if PartNumber == self.fail_part:
                code, status = self.fail_part_with
                raise _client_error(code, "UploadPart", status)
            if isinstance(Body, StreamedBody):
                pieces = []
                while piece := await Body.read(1024 * 1024):
                    pieces.append(bytes(piece))
                data = b"".join(pieces)
                assert len(data) == ContentLength == Body.length, "as long as announced"
            else:
                data = Body.read()
            self.uploads[UploadId]["parts"][PartNumber] = data
            self.part_sizes.append(len(data))
            return {"ETag": f'"{PartNumber}"'}
        finally:
            self.in_flight -= 1

    async def complete_multipart_upload(
        self, *, Bucket: str, Key: str, UploadId: str, MultipartUpload: dict[str, Any]
    ) -> Any:
        upload = self.uploads.pop(UploadId)
        numbers = [p["PartNumber"] for p in MultipartUpload["Parts"]]
        assert numbers == sorted(upload["parts"]), "every part, in order"
        body = b"".join(upload["parts"][n] for n in numbers)
        self.objects[Key] = {"body": body, "content_type": upload["content_type"], "metadata": {}}
        return {}

    async def copy_object(
        self,
        *,
        Bucket: str,
        Key: str,
        CopySource: dict[str, str],
        MetadataDirective: str,
        ContentType: str,
        Metadata: dict[str, str],
    ) -> Any:
        assert CopySource == {"Bucket": Bucket, "Key": Key}
        assert MetadataDirective == "REPLACE"
        if self.fail_copy:
            raise _client_error("InternalError", "CopyObject")
        self.objects[Key] |= {"content_type": ContentType, "metadata": Metadata}
        return {}

    async def abort_multipart_upload(self, *, Bucket: str, Key: str, UploadId: str) -> Any:
        self.uploads.pop(UploadId)
        self.aborted.append(UploadId)
        return {}

    async def delete_object(self, *, Bucket: str, Key: str) -> Any:
        self.objects.pop(Key, None)
        return {}


@pytest.fixture
def fake_s3() -> FakeS3:
    return FakeS3()


# --- a local origin for media sources ---------------------------------------------------

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Origin:
    """An HTTP server on 127.0.0.1; each test registers the sources it needs."""

    base_url: str
    handlers: dict[str, Handler] = field(default_factory=dict)

    def add(self, handler: Handler) -> str:
        path = f"/{secrets.token_hex(6)}"
        self.handlers[path] = handler
        return self.base_url + path

    def file(self, body: bytes, content_type: str = "application/octet-stream") -> str:
        async def handler(_: web.Request) -> web.StreamResponse:
            return web.Response(body=body, content_type=content_type)

        return self.add(handler)

    def status(self, status: int) -> str:
        async def handler(_: web.Request) -> web.StreamResponse:
            return web.Response(status=status, text="nope")

        return self.add(handler)

    def redirect(self, location: str) -> str:
        async def handler(_: web.Request) -> web.StreamResponse:
            raise web.HTTPFound(location)

        return self.add(handler)


@pytest.fixture(scope="session")
async def origin() -> AsyncIterator[Origin]:
    port = stack.free_port()
    served = Origin(base_url=f"http://127.0.0.1:{port}")

    async def dispatch(request: web.Request) -> web.StreamResponse:
        handler = served.handlers.get(request.path)
        if handler is None:
            raise web.HTTPNotFound
        return await handler(request)

    app = web.Application()
    app.router.add_route("GET", "/{tail:.*}", dispatch)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield served
    finally:
        await runner.cleanup()
