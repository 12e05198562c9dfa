"""mediaflow against yt-dlp itself on the same local HLS and DASH sources, in the same run.

    uv run python bench/media_vs_ytdlp.py [--size-mib 200] [--parallelism 4] [--ratio 0.8]
        [--rounds 3]

The peer is what a user would do without mediaflow: yt-dlp's CLI (its native HLS/DASH
downloader with the same segment parallelism, ``-N``; its own ffmpeg merge for DASH's
separate video and audio) to local disk, then a multipart upload of that file to the same S3
(the worker's part size and parts in flight). mediaflow's time is from submitting the task
to its stored object. Each source runs ``--rounds`` rounds of both, alternating which goes
first; passes when the median of the rounds' ratios is at most ``--ratio`` for both sources
and each stored object, read back from S3, is what the worker reported (SHA-256 and size)
and what the source is (ffprobe: a video and an audio stream, the source's duration within
a second); the ratio to yt-dlp's download alone is reported too.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import statistics
import subprocess
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

from results import Result, write_json
from support import (
    bench_world,
    check_stored,
    origin_process,
    print_table,
    read_stored,
    submit_and_wait,
    worker_process,
)

from mediaflow_libs.s3 import completed_part, ensure_bucket, open_s3
from mediaflow_libs.settings import MIB, S3Settings
from mediaflow_worker.settings import WorkerSettings

VENV_BIN = Path(sys.executable).parent
BITRATE_MBIT = 40  # CBR (x264 filler), so the size follows the duration


def ffmpeg(*args: str, cwd: Path) -> None:
    command = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", *args]
    subprocess.run(command, cwd=cwd, check=True)


def source_seconds(size_mib: int) -> int:
    return round(size_mib * 8 * 1.05 / BITRATE_MBIT)


def make_sources(directory: Path, size_mib: int) -> None:
    """A CBR source of about ``size_mib``, cut into HLS (MPEG-TS) and DASH (fMP4, video
    and audio apart)."""
    directory.mkdir(parents=True, exist_ok=True)
    seconds = source_seconds(size_mib)
    rate = f"{BITRATE_MBIT}M"
    ffmpeg(
        "-f", "lavfi", "-i", f"testsrc=size=1280x720:rate=25:duration={seconds:.0f}",
        "-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds:.0f}",
        "-c:v", "libx264", "-preset", "ultrafast", "-g", "50", "-pix_fmt", "yuv420p",
        "-b:v", rate, "-minrate", rate, "-maxrate", rate, "-bufsize", rate,
        "-x264-params", "nal-hrd=cbr:filler=1", "-c:a", "aac", "-shortest", "src.mp4",
        cwd=directory,
    )  # fmt: skip
    (directory / "hls").mkdir(exist_ok=True)
    ffmpeg("-i", "../src.mp4", "-c", "copy", "-f", "hls", "-hls_time", "4",
           "-hls_playlist_type", "vod", "index.m3u8", cwd=directory / "hls")  # fmt: skip
    (directory / "dash").mkdir(exist_ok=True)
    ffmpeg("-i", "../src.mp4", "-map", "0:v", "-map", "0:a", "-c", "copy", "-f", "dash",
           "-seg_duration", "4", "manifest.mpd", cwd=directory / "dash")  # fmt: skip
    (directory / "src.mp4").unlink()


def read_part(path: Path, offset: int, size: int) -> bytes:
    with path.open("rb") as body:
        body.seek(offset)
        return body.read(size)


async def upload_file(
    settings: S3Settings, path: Path, size: int, part: int, in_flight: int
) -> None:
    bucket, key = settings.s3_bucket, f"bench/peer/{path.name}"
    async with open_s3(settings) as s3:
        await ensure_bucket(s3, bucket)
        upload = await s3.create_multipart_upload(Bucket=bucket, Key=key)
        slots = asyncio.Semaphore(in_flight)
        done: dict[int, dict[str, Any]] = {}

        async def send(number: int) -> None:
            async with slots:
                data = await asyncio.to_thread(read_part, path, (number - 1) * part, part)
                sent = await s3.upload_part(
                    Bucket=bucket, Key=key, UploadId=upload["UploadId"], PartNumber=number,
                    Body=io.BytesIO(data),
                )  # fmt: skip
                done[number] = completed_part(number, sent)

        await asyncio.gather(*(send(n) for n in range(1, -(-size // part) + 1)))
        await s3.complete_multipart_upload(
            Bucket=bucket,
            Key=key,
            UploadId=upload["UploadId"],
            # With the parts' checksums, which S3 wants back as the client declared them.
            MultipartUpload={"Parts": [done[n] for n in sorted(done)]},
        )
        await s3.delete_object(Bucket=bucket, Key=key)


def peer(
    url: str, out: Path, parallelism: int, merge: bool, settings: S3Settings, part: int, n: int
) -> tuple[float, float]:
    """yt-dlp to disk, then the upload: (download seconds, total seconds)."""
    out.unlink(missing_ok=True)
    started = time.perf_counter()
    formats = ["-f", "bv+ba"] if merge else []
    subprocess.run(
        [str(VENV_BIN / "yt-dlp"), "--no-config", "--quiet", "--no-progress", "-N",
         str(parallelism), *formats, "-o", str(out), url],
        check=True,
    )  # fmt: skip
    downloaded = time.perf_counter() - started
    asyncio.run(upload_file(settings, out, out.stat().st_size, part, n))
    total = time.perf_counter() - started
    out.unlink()
    return downloaded, total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=200)
    parser.add_argument("--parallelism", type=int, default=4)
    parser.add_argument("--ratio", type=float, default=0.8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", help="also write the results here (for bench/all.py)")
    args = parser.parse_args()
    defaults = WorkerSettings.model_fields
    part = int(os.environ.get("UPLOAD_PART_BYTES", defaults["upload_part_bytes"].default))
    in_flight = int(
        os.environ.get("UPLOAD_PARTS_IN_FLIGHT", defaults["upload_parts_in_flight"].default)
    )
    rows = []
    results = []
    with bench_world("media") as world:
        make_sources(world.origin_dir, args.size_mib)
        env = {"SEGMENT_PARALLELISM": str(args.parallelism), "CACHE_ENABLED": "false"}
        with origin_process(world.origin_dir) as origin, worker_process(world, env):
            for kind, path, merge in (
                ("HLS", "hls/index.m3u8", False),
                ("DASH", "dash/manifest.mpd", True),
            ):
                url = f"{origin}/{path}"
                rounds: list[tuple[float, float, float]] = []  # ours, download, total
                problem: str | None = None
                theirs = partial(
                    peer, url, world.origin_dir / "peer.mp4", args.parallelism, merge,
                    world.s3_settings, part, in_flight,
                )  # fmt: skip
                for number in range(args.rounds):
                    # Who goes first alternates, so that a load rising or falling through
                    # a round favours neither.
                    if number % 2 == 1:
                        download, total = theirs()
                    ours = asyncio.run(submit_and_wait(world, url, within=900))
                    if number % 2 == 0:
                        download, total = theirs()
                    found = ours.error or (None if ours.status == "succeeded" else ours.status)
                    if found is None and ours.object_key is not None:
                        # The stored object, read back: the bytes the worker reported, and the
                        # source's streams and duration.
                        stored = asyncio.run(
                            read_stored(world, ours.object_key, world.config.run_dir)
                        )
                        expected = source_seconds(args.size_mib)
                        found = check_stored(ours, stored, expected, {"video", "audio"})
                    problem = problem or found
                    rounds.append((ours.seconds, download, total))
                ok = problem is None
                ratios = [o / t for o, _, t in rounds]
                ratio = statistics.median(ratios)
                spread = f"{min(ratios):.2f}-{max(ratios):.2f}"
                seconds = statistics.median(o for o, _, _ in rounds)
                download = statistics.median(d for _, d, _ in rounds)
                total = statistics.median(t for _, _, t in rounds)
                alone = statistics.median(o / d for o, d, _ in rounds)
                passed = ok and ratio <= args.ratio
                rows.append(
                    (
                        f"{kind} {args.size_mib} MiB",
                        f"{seconds:.1f} s" if ok else f"failed: {problem}",
                        f"{download:.1f} s",
                        f"{total:.1f} s",
                        f"{ratio:.2f} ({spread})",
                        f"{alone:.2f}",
                        "PASS" if passed else "FAIL",
                    )
                )
                results.append(
                    Result(
                        f"{kind} {args.size_mib} MiB to S3, mediaflow vs yt-dlp + upload "
                        f"(median of {args.rounds})",
                        f"{seconds:.1f} s",
                        f"{total:.1f} s (yt-dlp download alone {download:.1f} s)",
                        f"{ratio:.2f}",
                        f"<= {args.ratio:.2f} x peer, stored object verified",
                        passed,
                    )
                )
    print_table(
        f"mediaflow against yt-dlp, {args.parallelism} segments at a time, parts of "
        f"{part / MIB:.0f} MiB x {in_flight}; medians of {args.rounds} rounds, mediaflow "
        "first in odd rounds, the peer first in even ones",
        ("source", "mediaflow", "yt-dlp download", "yt-dlp + upload", "ratio (rounds)",
         "vs download",
         "result"),
        rows,
    )  # fmt: skip
    write_json(args.json, "media_vs_ytdlp", results)
    return 0 if all(r.passed for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
