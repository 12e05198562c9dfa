"""A private PostgreSQL cluster and a private RabbitMQ node for the chaos tests, and a
rate-limited origin that honours ranges and counts what it serves.

The chaos tests restart their database server and broker; the machine's own are shared
with everyone else's tests, so these run their own: data, sockets, logs, Erlang cookie and
port mapper all in a temporary directory, on free ports, stopped and removed at the end.
"""

from __future__ import annotations

import contextlib
import glob
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from devstack import stack


def _postgres_bin(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not candidates:
        raise RuntimeError(f"{name} not found (is PostgreSQL installed?)")
    return candidates[-1]


def _rabbitmq_bin(name: str) -> str:
    # As root, /usr/sbin/rabbitmq-server switches to the rabbitmq user and the system's
    # configuration; the scripts behind it run as whoever calls them.
    direct = Path("/usr/lib/rabbitmq/bin") / name
    return str(direct) if direct.exists() else (shutil.which(name) or name)


class PrivatePostgres:
    """``initdb`` into a temporary directory; ``pg_ctl`` on a free port, trust auth, its
    unix socket in the same directory. Runs as the ``postgres`` user when we are root
    (PostgreSQL refuses to run as root)."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="mfchaos-pg-"))
        self.data = self.dir / "data"
        self.log = self.dir / "postgres.log"
        self.port = stack.free_port()
        self._as_postgres = os.geteuid() == 0
        if self._as_postgres:
            shutil.chown(self.dir, "postgres", "postgres")

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}"

    def _run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[bytes]:
        command = list(argv)
        if self._as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        return subprocess.run(command, check=check, capture_output=True, timeout=120)

    def init(self) -> None:
        self._run(
            _postgres_bin("initdb"),
            "-D",
            str(self.data),
            "-A",
            "trust",
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--no-sync",
        )

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c max_connections=200"
            " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        self._run(
            _postgres_bin("pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.log),
            "-w",
            "-t",
            "60",
            "-o",
            options,
            "start",
        )

    def stop(self, mode: str = "fast") -> None:
        self._run(
            _postgres_bin("pg_ctl"), "-D", str(self.data), "-w", "-t", "60", "-m", mode, "stop"
        )

    def restart(self) -> None:
        """Stop (fast: every connection is cut) and start again."""
        self.stop()
        self.start()

    def destroy(self) -> None:
        """Stop whatever still runs and remove the directory; never raises."""
        if (self.data / "postmaster.pid").exists():
            result = self._run(
                _postgres_bin("pg_ctl"),
                "-D",
                str(self.data),
                "-w",
                "-t",
                "30",
                "-m",
                "immediate",
                "stop",
                check=False,
            )
            if result.returncode != 0:
                with contextlib.suppress(Exception):
                    pid = int((self.data / "postmaster.pid").read_text().split()[0])
                    os.kill(pid, signal.SIGKILL)
        shutil.rmtree(self.dir, ignore_errors=True)


class PrivateRabbitMQ:
    """A RabbitMQ node of its own (a real one: quorum queues need it): its own node name,
    ports, Mnesia, logs, config, Erlang cookie (``HOME``) and port mapper (``epmd``)."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="mfchaos-rmq-"))
        self.node = f"mfchaos-{secrets.token_hex(4)}@localhost"
        self.port = stack.free_port()
        self.dist_port = stack.free_port()
        self.epmd_port = stack.free_port()
        self.pid_file = self.dir / "rabbitmq.pid"
        (self.dir / "rabbitmq.conf").write_text(
            f"listeners.tcp.local = 127.0.0.1:{self.port}\nloopback_users = none\n"
        )
        (self.dir / "rabbitmq-env.conf").write_text("")
        (self.dir / "enabled_plugins").write_text("[].\n")
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    @property
    def env(self) -> dict[str, str]:
        base = self.dir
        return os.environ | {
            "HOME": str(base),
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(base / "log"),
            "RABBITMQ_PID_FILE": str(self.pid_file),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(base / "enabled_plugins"),
            "RABBITMQ_CONFIG_FILE": str(base / "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(base / "advanced.config"),
            "RABBITMQ_CONF_ENV_FILE": str(base / "rabbitmq-env.conf"),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "ERL_EPMD_PORT": str(self.epmd_port),
        }

    def _ctl(self, *args: str, timeout: float = 120) -> None:
        subprocess.run(
            [_rabbitmq_bin("rabbitmqctl"), "-n", self.node, *args],
            env=self.env,
            check=True,
            capture_output=True,
            timeout=timeout,
        )

    def start(self) -> None:
        with (self.dir / "rabbitmq-server.out").open("ab") as out:
            self._process = subprocess.Popen(
                [_rabbitmq_bin("rabbitmq-server")],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd=self.dir,
            )
        try:
            self._ctl("wait", str(self.pid_file), "--timeout", "120", timeout=150)
        except subprocess.CalledProcessError as exc:
            tail = (self.dir / "rabbitmq-server.out").read_text(errors="replace")[-3000:]
            raise RuntimeError(f"RabbitMQ node {self.node} did not start:\n{tail}") from exc
        stack.wait_until(lambda: stack.port_open(self.port), f"RabbitMQ on {self.port}")

    def stop(self) -> None:
        """Stop the node (its VM too: connections drop, the port closes)."""
        self._ctl("stop", str(self.pid_file))
        if self._process is not None:
            self._process.wait(timeout=60)
            self._process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def destroy(self) -> None:
        """Stop the node and its port mapper, remove the directory; never raises."""
        if self._process is not None and self._process.poll() is None:
            try:
                self.stop()
            except Exception:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self._process.pid, signal.SIGKILL)
                with contextlib.suppress(Exception):
                    self._process.wait(timeout=10)
        with contextlib.suppress(Exception):
            pid = int(self.pid_file.read_text().strip())
            if self.node.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                os.kill(pid, signal.SIGKILL)
        # The port mapper the node started (a daemon of its own) is private to us too.
        epmd = shutil.which("epmd") or "epmd"
        with contextlib.suppress(Exception):
            subprocess.run(
                [epmd, "-port", str(self.epmd_port), "-kill"], capture_output=True, timeout=10
            )
        time.sleep(0.2)
        shutil.rmtree(self.dir, ignore_errors=True)


class _RangeHandler(BaseHTTPRequestHandler):
    """Serves the origin's files with ``ETag``, ``Accept-Ranges`` and ``Range``/``If-Range``
    (``bytes=N-``), each answer paced, every byte written counted."""

    protocol_version = "HTTP/1.1"
    origin: RangeOrigin

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        path = self.origin.directory / self.path.split("?", 1)[0].lstrip("/")
        if not path.is_file():
            self.send_error(404)
            return
        stat = path.stat()
        size = stat.st_size
        etag = f'"{stat.st_mtime_ns:x}-{size:x}"'
        wanted = self.headers.get("Range", "")
        start = 0
        if self.headers.get("If-Range", etag) == etag and wanted.startswith("bytes="):
            first = wanted[6:].split("-", 1)[0]
            start = int(first) if first.isdigit() else 0
        if start >= size > 0:
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{size}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(206 if start else 200)
        self.send_header("Content-Type", "video/mp4")
        self.send_header("Content-Length", str(size - start))
        self.send_header("ETag", etag)
        self.send_header("Accept-Ranges", "bytes")
        if start:
            self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
        self.end_headers()
        rate = self.origin.bytes_per_second
        began = time.monotonic()
        sent = 0
        with path.open("rb") as source:
            source.seek(start)
            while block := source.read(256 * 1024):
                try:
                    self.wfile.write(block)
                except OSError:
                    return  # the worker hung up (or died)
                finally:
                    self.origin.count(len(block))
                sent += len(block)
                ahead = sent / rate - (time.monotonic() - began)
                if ahead > 0:
                    time.sleep(ahead)


class RangeOrigin:
    """Files on 127.0.0.1, each connection served at ``bytes_per_second``, honouring ranges;
    ``served`` is every byte handed to a socket (what a CDN would bill)."""

    def __init__(self, directory: Path, bytes_per_second: int) -> None:
        self.directory = directory
        self.bytes_per_second = bytes_per_second
        self.served = 0
        self._lock = threading.Lock()
        handler = type("Ranged", (_RangeHandler,), {"origin": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), partial(handler))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def count(self, n: int) -> None:
        with self._lock:
            self.served += n

    def url(self, name: str) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/{name}"

    def __enter__(self) -> RangeOrigin:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        shutil.rmtree(self.directory, ignore_errors=True)
