"""Memory of the worker's whole process tree (worker, ffmpeg, any helper) while it muxes a
1-minute and a 20-minute HLS source with separate video and audio, in the same run.

    uv run python bench/media_rss.py [--minutes 1 20] [--spread-mib 8]

Each source is a master playlist with one video-only variant and an audio group, so the
worker fetches two segment streams and ffmpeg muxes them. The video (320x180, CBR) has the
least bitrate at which one minute outgrows what the upload buffers (the muxed file's length is
unknown, so parts are filled before they are sent: ``UPLOAD_PART_BYTES`` x
``UPLOAD_PARTS_IN_FLIGHT``), about 20 MiB a minute by default: a smaller 1-minute file would
have a lower peak only because it never fills those buffers. For each duration a fresh
``mediaflow-worker`` runs one task while the RSS of its process and every descendant is summed
every 20 ms; the tree's idle RSS before the task is the baseline. Passes when every stored
object is what the worker reported (its SHA-256 and size read back from S3) and what the
source is (ffprobe: one video and one audio stream, the source's duration within a second),
and the longest source's peak over idle is within ``--spread-mib`` of the shortest's.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from results import Result, write_json
from support import (
    Outcome,
    RssSampler,
    bench_world,
    check_stored,
    idle_rss,
    mib,
    origin_process,
    print_table,
    read_stored,
    submit_and_wait,
    worker_process,
)

from mediaflow_libs.settings import MIB
from mediaflow_worker.settings import WorkerSettings

UNIT_SECONDS = 60  # encoded once, looped (stream copy) to every duration
MASTER = (
    "#EXTM3U\n#EXT-X-VERSION:3\n"
    '#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="aud",NAME="English",DEFAULT=YES,AUTOSELECT=YES,'
    'URI="audio/index.m3u8"\n'
    '#EXT-X-STREAM-INF:BANDWIDTH=250000,RESOLUTION=320x180,CODECS="avc1.64000d,mp4a.40.2",'
    'AUDIO="aud"\nvideo/index.m3u8\n'
)


def ffmpeg(*args: str, cwd: Path) -> None:
    command = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", *args]
    subprocess.run(command, cwd=cwd, check=True)


def filling_kbit(part: int, in_flight: int) -> int:
    """A video bitrate at which one minute is 1.25 x what the upload holds at once (the
    muxed file's length is unknown, so it is buffered a part at a time): below that, a
    short source's peak is lower only because its file is smaller than the buffers."""
    return -(-part * in_flight * 5 // 4 * 8 // UNIT_SECONDS // 1000)


def make_sources(directory: Path, minutes: list[int], video_kbit: int) -> None:
    """``m{N}/master.m3u8`` for each duration: video and audio HLS renditions apart."""
    directory.mkdir(parents=True, exist_ok=True)
    rate = f"{video_kbit}k"
    ffmpeg(
        "-f", "lavfi", "-i", f"testsrc=size=320x180:rate=25:duration={UNIT_SECONDS}",
        "-f", "lavfi", "-i", f"sine=frequency=440:duration={UNIT_SECONDS}",
        "-c:v", "libx264", "-preset", "ultrafast", "-g", "50", "-pix_fmt", "yuv420p",
        "-b:v", rate, "-minrate", rate, "-maxrate", rate, "-bufsize", rate,
        "-x264-params", "nal-hrd=cbr:filler=1",
        "-c:a", "aac", "-b:a", "48k", "-shortest", "unit.mp4",
        cwd=directory,
    )  # fmt: skip
    for n in minutes:
        root = directory / f"m{n}"
        for name, stream in (("video", "0:v"), ("audio", "0:a")):
            (root / name).mkdir(parents=True)
            ffmpeg(
                "-stream_loop", str(n - 1), "-i", "../../unit.mp4", "-map", stream,
                "-c", "copy", "-t", str(n * UNIT_SECONDS), "-f", "hls", "-hls_time", "4",
                "-hls_playlist_type", "vod", "index.m3u8",
                cwd=root / name,
            )  # fmt: skip
        (root / "master.m3u8").write_text(MASTER)
    (directory / "unit.mp4").unlink()


def source_mib(directory: Path) -> float:
    return sum(p.stat().st_size for p in directory.rglob("*") if p.is_file()) / MIB


@dataclass(frozen=True)
class Run:
    minutes: int
    size_mib: float
    idle: int
    peak: int
    outcome: Outcome
    problem: str | None  # what is wrong with the stored object, None when it is right
    peaks: dict[str, int]  # by process name, each process's own peak

    def peak_of(self, name: str) -> str:
        return mib(self.peaks[name]) if name in self.peaks else "-"

    @property
    def over_idle(self) -> int:
        return self.peak - self.idle


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=int, nargs="+", default=[1, 20])
    parser.add_argument("--spread-mib", type=float, default=8)
    parser.add_argument(
        "--video-kbit", type=int, help="the sources' video bitrate (default: filling_kbit)"
    )
    parser.add_argument("--json", help="also write the results here (for bench/all.py)")
    args = parser.parse_args()
    minutes = sorted(set(args.minutes))
    defaults = WorkerSettings.model_fields
    part = int(os.environ.get("UPLOAD_PART_BYTES", defaults["upload_part_bytes"].default))
    in_flight = int(
        os.environ.get("UPLOAD_PARTS_IN_FLIGHT", defaults["upload_parts_in_flight"].default)
    )
    video_kbit = args.video_kbit or filling_kbit(part, in_flight)
    runs: list[Run] = []
    with bench_world("media-rss") as world:
        make_sources(world.origin_dir, minutes, video_kbit)
        env = {"CACHE_ENABLED": "false"}
        with origin_process(world.origin_dir) as origin:
            for n in minutes:
                with worker_process(world, env) as pid:
                    idle = idle_rss(pid, tree=True)
                    with RssSampler(pid, tree=True) as sampler:
                        outcome = asyncio.run(
                            submit_and_wait(world, f"{origin}/m{n}/master.m3u8", within=900)
                        )
                problem = outcome.error or (None if outcome.status == "succeeded" else "failed")
                if problem is None and outcome.object_key is not None:
                    stored = asyncio.run(
                        read_stored(world, outcome.object_key, world.config.run_dir)
                    )
                    problem = check_stored(outcome, stored, n * UNIT_SECONDS, {"video", "audio"})
                runs.append(
                    Run(
                        n,
                        source_mib(world.origin_dir / f"m{n}"),
                        idle,
                        max(sampler.peak, idle),
                        outcome,
                        problem,
                        sampler.peaks,
                    )
                )

    shortest, longest = runs[0], runs[-1]
    growth = longest.over_idle - shortest.over_idle
    flat = growth <= args.spread_mib * MIB
    all_right = all(run.problem is None for run in runs)
    print_table(
        f"Worker process tree RSS while muxing HLS video ({video_kbit} kbit/s) + audio, a fresh "
        f"worker per source, parts of {part / MIB:.0f} MiB x {in_flight}",
        (
            "source",
            "size",
            "stored",
            "idle tree RSS",
            "peak tree RSS",
            "peak - idle",
            "worker peak",
            "ffmpeg peak",
            "time",
        ),
        [
            (
                f"{run.minutes} min",
                f"{run.size_mib:.1f} MiB",
                run.problem or "ok (sha256, size, streams, duration)",
                mib(run.idle),
                mib(run.peak),
                mib(run.over_idle),
                run.peak_of("worker"),
                run.peak_of("ffmpeg"),
                f"{run.outcome.seconds:.1f} s",
            )
            for run in runs
        ],
    )
    passed = flat and all_right
    print_table(
        "Checks",
        ("check", "measured", "result"),
        [
            (
                f"peak - idle grows <= {args.spread_mib:.0f} MiB from {shortest.minutes} min "
                f"to {longest.minutes} min",
                mib(growth),
                "PASS" if flat else "FAIL",
            ),
            ("every stored object right", str(all_right), "PASS" if all_right else "FAIL"),
        ],
    )
    write_json(
        args.json,
        "media_rss",
        [
            Result(
                f"worker tree peak - idle RSS, HLS video + audio muxed, {longest.minutes} min "
                f"vs {shortest.minutes} min",
                f"{mib(longest.over_idle)} (+{mib(growth)})",
                f"{mib(shortest.over_idle)} at {shortest.minutes} min",
                f"{longest.over_idle / max(shortest.over_idle, 1):.2f}",
                f"<= +{args.spread_mib:.0f} MiB, every object verified",
                passed,
            )
        ],
    )
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
