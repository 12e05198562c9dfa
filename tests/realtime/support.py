"""Helpers of the realtime and browser tests: a media origin that serves slowly enough for
a job to last a few seconds (time to disconnect, kill a replica or watch a bar move), and
signing up through the ingress."""

from __future__ import annotations

import secrets
import shutil
import threading
import time
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import BinaryIO

import httpx

from devstack import media

CHUNK_BYTES = 64 * 1024


class _PacedHandler(SimpleHTTPRequestHandler):
    bytes_per_second = 1024 * 1024

    def copyfile(self, source: BinaryIO, outputfile: BinaryIO) -> None:  # type: ignore[override]
        started = time.monotonic()
        sent = 0
        while block := source.read(CHUNK_BYTES):
            outputfile.write(block)
            sent += len(block)
            ahead = sent / self.bytes_per_second - (time.monotonic() - started)
            if ahead > 0:
                time.sleep(ahead)

    def log_message(self, format: str, *args: object) -> None:
        pass


class SlowOrigin:
    """Serves sample MP4 files from ``directory`` on 127.0.0.1 at ``bytes_per_second``."""

    def __init__(self, directory: Path, bytes_per_second: int) -> None:
        self.directory = directory
        handler = type("Paced", (_PacedHandler,), {"bytes_per_second": bytes_per_second})
        serve = partial(handler, directory=str(directory))
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), serve)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def sample(self, size: int) -> tuple[str, str]:
        """A new sample file (a new URL each time: the worker reuses results by source URL);
        returns its URL and SHA-256."""
        name = f"clip-{secrets.token_hex(6)}.mp4"
        digest = media.write_sample_mp4(self.directory / name, size)
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/{name}", digest

    def __enter__(self) -> SlowOrigin:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        shutil.rmtree(self.directory, ignore_errors=True)


async def sign_up(client: httpx.AsyncClient) -> str:
    """Sign up a new user through ``client`` (which keeps the session cookie); returns the
    user's id."""
    response = await client.post(
        "/v1/auth/sign-up",
        json={"email": f"rt-{secrets.token_hex(6)}@example.com", "password": "a long passphrase"},
    )
    assert response.status_code == 201, response.text
    user_id: str = response.json()["user"]["id"]
    return user_id
