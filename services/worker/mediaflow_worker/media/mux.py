"""ffmpeg, which never touches the network: the worker feeds it every input through pipes
(``pipe:N``, inherited descriptors, never files or FIFOs; ``-protocol_whitelist pipe``)
and reads its output from stdout, streamed on into the upload.

Streams are copied; audio is re-encoded only when asked for (mp3, opus). Video goes out as
fragmented MP4 (``frag_keyframe+empty_moov+default_base_moof``, no seeking back), or as
WebM where the codecs need it. On failure or cancel ffmpeg is killed and reaped.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import shutil
import subprocess
import time
from collections import deque
from collections.abc import AsyncIterator
from contextlib import suppress
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import structlog

from mediaflow_worker.errors import TaskFailure
from mediaflow_worker.media.metrics import MUX_SECONDS
from mediaflow_worker.media.plan import Info, Options

log = structlog.get_logger(__name__)

READ_BYTES = 256 * 1024
# Pipes to and from ffmpeg: Linux's default of 64 KiB makes ffmpeg and the worker take
# turns every few writes; 1 MiB (the default most an unprivileged process may ask for)
# lets each run ahead of the other.
PIPE_BYTES = 1024 * 1024
_QUEUED_READS = 4  # of ffmpeg's output (each at most 256 KiB, asyncio's read size)
_FRAGMENTED = "frag_keyframe+empty_moov+default_base_moof"
_WEBM_CODECS = ("vp8", "vorbis")
_STDERR_KEEP = 4096
_UNREADABLE = "Invalid data found when processing input"


@dataclass(frozen=True)
class Output:
    """What ffmpeg is asked to make: its maps, codecs and container."""

    maps: list[str]
    codec_args: list[str]
    format_args: list[str]


def output_for(
    options: Options,
    *,
    video_input: int | None,
    audio_input: int | None,
    codecs: tuple[str | None, ...],
) -> Output:
    """``video_input``/``audio_input``: which input the stream is taken from (None: none)."""
    maps = []
    if video_input is not None:
        maps += ["-map", f"{video_input}:v:0"]
    if audio_input is not None:
        # An unknown combined format may be silent: its audio is optional, unless asked for.
        optional = "?" if options.mode == "auto" and audio_input == video_input else ""
        maps += ["-map", f"{audio_input}:a:0{optional}"]
    known = [c.lower() for c in codecs if c and c != "none"]
    if options.mode == "audio":
        if options.audio_format == "mp3":
            return Output(maps, ["-c:a", "libmp3lame", "-q:a", "2"], ["-f", "mp3"])
        if options.audio_format == "opus":
            return Output(maps, ["-c:a", "libopus", "-b:a", "128k"], ["-f", "ogg"])
        if any(c.startswith(("opus", "vorbis")) for c in known):
            return Output(maps, ["-c", "copy"], ["-f", "ogg"])
        if any(c.startswith("mp3") for c in known):
            return Output(maps, ["-c", "copy"], ["-f", "mp3"])
        # The M4A brand makes the file audio/mp4, not video/mp4.
        return Output(
            maps, _copy_into_mp4(known), ["-f", "mp4", "-brand", "M4A ", "-movflags", _FRAGMENTED]
        )
    if any(c.startswith(_WEBM_CODECS) for c in known):
        return Output(maps, ["-c", "copy"], ["-f", "webm"])
    return Output(maps, _copy_into_mp4(known), ["-f", "mp4", "-movflags", _FRAGMENTED])


def _copy_into_mp4(known: list[str]) -> list[str]:
    """Stream copy; AAC from MPEG-TS (ADTS) needs its headers turned into MP4's form, a
    no-op for AAC that has them already, an error for other codecs."""
    audio = [c for c in known if not c.startswith(("avc", "hvc", "hev", "vp", "av01", "h26"))]
    if not audio or any(c.startswith(("mp4a", "aac")) for c in audio):
        return ["-c", "copy", "-bsf:a", "aac_adtstoasc"]
    return ["-c", "copy"]


@dataclass
class MuxReport:
    """Filled in as ffmpeg runs: the output's duration (from ``-progress``)."""

    duration: float | None = None
    errors: list[str] = field(default_factory=list)


def media_tools() -> dict[str, str | None]:
    """The versions of ffmpeg, ffprobe and yt-dlp this worker runs (None: not installed);
    yt-dlp's from its metadata, so that it is not loaded before a task needs it."""

    def version(path: str) -> str | None:
        try:
            out = subprocess.run(
                [path, "-version"], capture_output=True, text=True, timeout=10, check=False
            ).stdout
        except OSError:
            return None
        words = out.split()
        return words[2] if len(words) > 2 and words[1] == "version" else None

    return {
        "ffmpeg": version(ffmpeg_path()),
        "ffprobe": version(ffprobe_path()),
        "yt_dlp": _package_version("yt-dlp"),
    }


def _package_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def ffmpeg_path() -> str:
    return shutil.which("ffmpeg") or "/usr/bin/ffmpeg"


def ffprobe_path() -> str:
    return shutil.which("ffprobe") or "/usr/bin/ffprobe"


async def _feed(fd: int, chunks: AsyncIterator[bytes]) -> None:
    """Write ``chunks`` into the pipe ``fd`` (its write end), waiting as ffmpeg reads."""
    loop = asyncio.get_running_loop()
    pipe = os.fdopen(fd, "wb", buffering=0)
    transport, protocol = await loop.connect_write_pipe(asyncio.streams.FlowControlMixin, pipe)
    writer = asyncio.StreamWriter(transport, protocol, None, loop)
    try:
        async for chunk in chunks:
            # A segment is many MiB: written a pipeful at a time, the transport never
            # copies more than one pipeful of it into its own buffer.
            view = memoryview(chunk)
            for start in range(0, len(view), PIPE_BYTES):
                writer.write(view[start : start + PIPE_BYTES])
                await writer.drain()
    except (BrokenPipeError, ConnectionResetError):
        pass  # ffmpeg stopped reading: its exit status says why
    finally:
        transport.close()
        aclose = getattr(chunks, "aclose", None)
        if aclose is not None:
            await aclose()


async def _read_stderr(stream: asyncio.StreamReader, report: MuxReport) -> None:
    kept = 0
    async for raw in stream:
        line = raw.decode("utf-8", "replace").strip()
        key, _, value = line.partition("=")
        if key == "out_time_us" and value.strip().lstrip("-").isdigit():
            report.duration = max(int(value) / 1_000_000, 0.0)
        elif line and "=" not in line and kept < _STDERR_KEEP:
            report.errors.append(line)
            kept += len(line)


async def mux(
    inputs: list[AsyncIterator[bytes]],
    output: Output,
    report: MuxReport,
    *,
    kind: str,
) -> AsyncIterator[bytes]:
    """ffmpeg's output as it comes, each of ``inputs`` fed to it through a pipe."""
    started = time.perf_counter()
    pipes = [os.pipe() for _ in inputs]
    for _, write in pipes:
        _widen(write)
    # The child inherits the read ends under the same numbers; ``pipe:N`` reads fd N.
    child_fds = [read for read, _ in pipes]
    args = [ffmpeg_path(), "-hide_banner", "-nostdin", "-loglevel", "error", "-nostats"]
    args += ["-progress", "pipe:2"]
    for read in child_fds:
        args += ["-protocol_whitelist", "pipe", "-i", f"pipe:{read}"]
    args += output.maps + output.codec_args + output.format_args
    args += ["-protocol_whitelist", "pipe", "pipe:1"]
    # ffmpeg's output pipe is made here, not by asyncio, so that it can be widened.
    out_read, out_write = os.pipe()
    _widen(out_write)
    try:
        proc = await asyncio.create_subprocess_exec(
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=out_write,
            stderr=asyncio.subprocess.PIPE,
            pass_fds=child_fds,
            limit=READ_BYTES,
        )
    except BaseException:
        for fd in (out_read, *(fd for pipe in pipes for fd in pipe)):
            os.close(fd)
        raise
    finally:
        os.close(out_write)
    for read, _ in pipes:
        os.close(read)
    stdout, out_transport = await _reader(out_read)
    feeders = [
        asyncio.create_task(_feed(write, chunks), name=f"ffmpeg input {n}")
        for n, ((_, write), chunks) in enumerate(zip(pipes, inputs, strict=True))
    ]
    assert proc.stderr is not None
    errors = asyncio.create_task(_read_stderr(proc.stderr, report))
    try:
        while True:
            chunk = await stdout.read()
            if not chunk:
                break
            yield chunk
            for feeder in feeders:
                if feeder.done() and feeder.exception() is not None:
                    raise feeder.exception()  # type: ignore[misc]
        await proc.wait()
        await errors
        for feeder in feeders:
            await feeder  # an input's own failure (a segment, say) comes first
        # ffmpeg may exit 0 having read nothing it could use.
        if proc.returncode != 0 or any(_UNREADABLE in line for line in report.errors):
            raise _failure(report)
    finally:
        if proc.returncode is None:
            with suppress(ProcessLookupError):
                proc.kill()
        await asyncio.shield(_reap(proc, feeders, errors))
        out_transport.close()
        MUX_SECONDS.labels(kind).observe(time.perf_counter() - started)


def _widen(fd: int) -> None:
    with suppress(OSError):  # a smaller limit set by the system: the default size then
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_BYTES)


class _PipeChunks(asyncio.Protocol):
    """The chunks read from a pipe, handed on as they were read: a StreamReader would copy
    each into its buffer and out again. Reading pauses while a few are waiting."""

    def __init__(self) -> None:
        self._chunks: deque[bytes] = deque()
        self._eof = False
        self._waiter: asyncio.Future[None] | None = None
        self._transport: asyncio.ReadTransport | None = None
        self._paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.ReadTransport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        self._chunks.append(data)
        if len(self._chunks) >= _QUEUED_READS and self._transport is not None:
            self._transport.pause_reading()
            self._paused = True
        self._wake()

    def eof_received(self) -> bool | None:
        self._eof = True
        self._wake()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._eof = True
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def read(self) -> bytes:
        """The next chunk, ``b""`` at the end."""
        while not self._chunks and not self._eof:
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter
        if not self._chunks:
            return b""
        if self._paused and self._transport is not None:
            self._paused = False
            self._transport.resume_reading()
        return self._chunks.popleft()


async def _reader(fd: int) -> tuple[_PipeChunks, asyncio.BaseTransport]:
    """The chunks of the pipe ``fd`` (its read end), which it owns from now on."""
    loop = asyncio.get_running_loop()
    transport, chunks = await loop.connect_read_pipe(_PipeChunks, os.fdopen(fd, "rb", buffering=0))
    return chunks, transport


async def _reap(
    proc: asyncio.subprocess.Process,
    feeders: list[asyncio.Task[None]],
    errors: asyncio.Task[None],
) -> None:
    for task in (*feeders, errors):
        if not task.done():
            task.cancel()
    await asyncio.gather(*feeders, errors, return_exceptions=True)
    await proc.wait()


def _failure(report: MuxReport) -> TaskFailure:
    text = " ".join(report.errors)
    if "matches no streams" in text:
        return TaskFailure("format_unavailable", "The media has no stream the options ask for.")
    detail = report.errors[-1][:200] if report.errors else "no detail"
    log.warning("mux.failed", errors=report.errors[-8:])
    return TaskFailure("not_media", f"The streams could not be combined ({detail}).")


async def probe(head: bytes) -> Info:
    """Streams of the media that starts with ``head`` (ffprobe, from a pipe)."""
    proc = await asyncio.create_subprocess_exec(
        ffprobe_path(),
        "-v",
        "error",
        "-protocol_whitelist",
        "pipe",
        "-show_streams",
        "-show_format",
        "-of",
        "json",
        "-i",
        "pipe:0",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(head), 10)
    except BaseException as exc:
        with suppress(ProcessLookupError):
            proc.kill()
        await asyncio.shield(proc.wait())
        if not isinstance(exc, Exception):
            raise  # cancelled: the caller no longer wants it
        return Info()
    try:
        found = json.loads(out or b"{}")
    except ValueError:
        return Info()
    video: dict[str, Any] = next(
        (s for s in found.get("streams", []) if s.get("codec_type") == "video"), {}
    )
    audio: dict[str, Any] = next(
        (s for s in found.get("streams", []) if s.get("codec_type") == "audio"), {}
    )
    duration = found.get("format", {}).get("duration")
    return Info(
        duration=float(duration) if duration not in (None, "N/A") else None,
        width=video.get("width"),
        height=video.get("height"),
        video_codec=video.get("codec_name"),
        audio_codec=audio.get("codec_name"),
    )
