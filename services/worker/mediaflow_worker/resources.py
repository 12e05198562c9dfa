"""What every part of a job's life shares: the process's resources, and the delivery."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import asyncpg
from aio_pika.abc import AbstractChannel, AbstractRobustConnection, FieldValue

from mediaflow_libs.amqp import Topology
from mediaflow_libs.contracts import Job
from mediaflow_worker.fetch import FetchLimits
from mediaflow_worker.media.opening import MediaConfig
from mediaflow_worker.media.plan import Options
from mediaflow_worker.resolve import Resolvers
from mediaflow_worker.settings import WorkerSettings

JOB_MESSAGE_TYPE = "mediaflow.v1.Job"
# Database trouble a job waits out (or postpones itself over) rather than failing the task.
DB_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError)


@dataclass(frozen=True)
class Resources:
    """Everything a job needs, opened once per process by ``main``."""

    settings: WorkerSettings
    topology: Topology
    pool: asyncpg.Pool
    amqp: AbstractRobustConnection
    s3: Any  # the aiobotocore S3 client of mediaflow_libs.s3
    http: aiohttp.ClientSession
    publisher: AbstractChannel  # with publisher confirms: postponed jobs must not be lost
    resolvers: Resolvers = field(default_factory=Resolvers)
    rng: random.Random = field(default_factory=random.Random)

    @property
    def fetch_limits(self) -> FetchLimits:
        s = self.settings
        return FetchLimits(
            egress=s.egress,
            max_bytes=s.max_media_bytes,
            max_redirects=s.fetch_max_redirects,
            connect_timeout=s.fetch_connect_timeout_seconds,
            read_timeout=s.fetch_read_timeout_seconds,
            total_timeout=s.fetch_total_timeout_seconds,
            min_rate=s.fetch_min_rate_bytes_per_second,
            min_rate_window=s.fetch_min_rate_window_seconds,
        )

    @property
    def media_config(self) -> MediaConfig:
        s = self.settings
        return MediaConfig(
            max_pages=s.resolve_max_pages,
            max_page_bytes=s.resolve_max_page_bytes,
            manifest_max_bytes=s.manifest_max_bytes,
            segment_parallelism=s.segment_parallelism,
            segment_retries=s.segment_retries,
            segment_max_bytes=s.segment_max_bytes,
            extractors=s.extractors_enabled,
            extractor_max_bytes=s.extractor_max_response_bytes,
            extractor_timeout=s.fetch_total_timeout_seconds,
            max_resumes=s.fetch_max_resumes,
        )


@dataclass(frozen=True)
class Delivery:
    """What a job keeps of its message: the job, and the headers it carries on to a retry."""

    job: Job
    body: bytes
    headers: dict[str, str]  # the trace context

    def message_headers(self, **extra: str | int) -> dict[str, FieldValue]:
        return {"message_type": JOB_MESSAGE_TYPE, **self.headers, **extra}

    @property
    def options(self) -> Options:
        return Options.from_job(self.job.quality, self.job.mode, self.job.audio_format)
