"""The mediaflow command run as a user runs it, against the shared stack: a process per call,
its own config file per user, no terminal unless a test opens one."""

from __future__ import annotations

import contextlib
import os
import pty
import secrets
import select
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from devstack import stack
from tests.hostile.sources import sample_mp4

MEDIAFLOW = str(Path(sys.executable).parent / "mediaflow")  # the workspace's console script
PASSWORD = "a long passphrase"


@dataclass
class Cli:
    """One user's command line: a config file of its own and a working directory."""

    public_url: str
    home: Path
    email: str = ""
    env: dict[str, str] = field(default_factory=dict)

    def environment(self, **extra: str) -> dict[str, str]:
        base = {k: v for k, v in os.environ.items() if not k.startswith("MEDIAFLOW_")}
        return (
            base
            | {
                "MEDIAFLOW_CONFIG": str(self.home / "session.json"),
                "MEDIAFLOW_URL": self.public_url,
            }
            | self.env
            | extra
        )

    def run(
        self, *argv: str, input: str | None = None, **env: str
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [MEDIAFLOW, *argv],
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
            capture_output=True,
            text=True,
            cwd=self.home,
            env=self.environment(**env),
            timeout=90,
            check=False,
        )
        # Whatever went wrong, a user never sees a traceback.
        assert "Traceback" not in done.stderr, done.stderr
        return done

    def ok(
        self, *argv: str, input: str | None = None, **env: str
    ) -> subprocess.CompletedProcess[str]:
        done = self.run(*argv, input=input, **env)
        assert done.returncode == 0, (argv, done.stdout, done.stderr)
        return done

    def in_terminal(self, *argv: str, answers: dict[bytes, bytes] | None = None) -> tuple[int, str]:
        """Runs the command on a pseudo-terminal of 100 columns (its controlling terminal, as
        in a shell), typing each answer when its prompt shows; returns the exit code and all
        that the terminal received."""
        pending = dict(answers or {})
        pid, master = pty.fork()
        if pid == 0:  # the child: a session of its own with the pty as its terminal
            os.chdir(self.home)
            # Our own console script with arguments built here: no shell wanted.
            os.execve(  # noqa: S606
                MEDIAFLOW,
                [MEDIAFLOW, *argv],
                self.environment(TERM="xterm-256color", COLUMNS="100"),
            )
        received = b""
        deadline = time.monotonic() + 90
        try:
            while time.monotonic() < deadline:
                ready, _, _ = select.select([master], [], [], 1)
                if not ready:
                    continue
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not chunk:
                    break
                received += chunk
                for prompt in list(pending):
                    if received.endswith(prompt):
                        os.write(master, pending.pop(prompt))
        finally:
            os.close(master)
        _, status = os.waitpid(pid, 0)
        text = received.decode(errors="replace")
        assert "Traceback" not in text, text
        return os.waitstatus_to_exitcode(status), text


class PacedOrigin:
    """Media on 127.0.0.1 served at a set pace: ``/paced/SIZE/SECONDS/NAME`` sends an MP4 of
    SIZE bytes in 20 even parts over SECONDS (so a task stays running that long)."""

    def __init__(self) -> None:
        stop = self._stop = threading.Event()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_: object) -> None:
                pass

            def do_GET(self) -> None:
                parts = self.path.split("/")
                if len(parts) != 5 or parts[1] != "paced":
                    self.send_error(404)
                    return
                size, seconds = int(parts[2]), float(parts[3])
                body = sample_mp4(size)
                self.send_response(200)
                self.send_header("Content-Type", "video/mp4")
                self.send_header("Content-Length", str(size))
                self.end_headers()
                step = -(-size // 20)
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    for start in range(0, size, step):
                        self.wfile.write(body[start : start + step])
                        self.wfile.flush()
                        if stop.wait(seconds / 20):
                            return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def paced(self, name: str, size: int, seconds: float) -> str:
        return f"{self.url}/paced/{size}/{seconds}/{name}"

    def close(self) -> None:
        self._stop.set()
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture(scope="session")
def paced_origin() -> Iterator[PacedOrigin]:
    origin = PacedOrigin()
    try:
        yield origin
    finally:
        origin.close()


@pytest.fixture
def cli(running_stack: stack.StackConfig, tmp_path: Path) -> Cli:
    """A user signed up through the command, its session saved in its own config file."""
    runner = Cli(running_stack.public_url, tmp_path, f"cli-{secrets.token_hex(4)}@example.com")
    runner.ok("sign-up", runner.email, MEDIAFLOW_PASSWORD=PASSWORD)
    return runner


class EventsRefusingProxy:
    """A reverse proxy in front of the stack that refuses ``/v1/events`` (503), as some
    corporate proxies do with streams; everything else passes through unchanged."""

    def __init__(self, upstream: str) -> None:
        client = httpx.Client(base_url=upstream, timeout=30)
        self._client = client

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_: object) -> None:
                pass

            def _forward(self) -> None:
                if self.path.startswith("/v1/events"):
                    self.send_response(503)
                    self.send_header("Content-Type", "text/html")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                length = int(self.headers.get("content-length") or 0)
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                answer = client.request(
                    self.command, self.path, headers=headers, content=self.rfile.read(length)
                )
                self.send_response(answer.status_code)
                for name, value in answer.headers.multi_items():
                    if name.lower() not in ("content-length", "transfer-encoding", "connection"):
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(answer.content)))
                self.end_headers()
                self.wfile.write(answer.content)

            do_GET = do_POST = do_DELETE = _forward

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._client.close()


@pytest.fixture
def events_refused(running_stack: stack.StackConfig) -> Iterator[EventsRefusingProxy]:
    proxy = EventsRefusingProxy(running_stack.public_url)
    try:
        yield proxy
    finally:
        proxy.close()
