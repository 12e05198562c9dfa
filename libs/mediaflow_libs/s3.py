"""The aiobotocore S3 client lifespan."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import structlog
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import ClientError

from mediaflow_libs.settings import S3Settings

log = structlog.get_logger(__name__)

_BUCKET_EXISTS_CODES = frozenset({"BucketAlreadyOwnedByYou", "BucketAlreadyExists"})


def _config() -> AioConfig:
    return AioConfig(
        signature_version="s3v4",
        s3={"addressing_style": "path"},
        retries={"max_attempts": 3, "mode": "standard"},
        connect_timeout=5,
        read_timeout=60,
        # Many S3-compatible servers reject the newer default CRC trailers.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        max_pool_connections=20,
    )


@asynccontextmanager
async def open_s3(settings: S3Settings, *, public: bool = False) -> AsyncIterator[Any]:
    """An S3 client; ``public=True`` signs URLs for ``S3_PUBLIC_ENDPOINT_URL``."""
    endpoint = settings.s3_endpoint_url
    if public and settings.s3_public_endpoint_url:
        endpoint = settings.s3_public_endpoint_url
    session = get_session()
    async with session.create_client(
        "s3",
        endpoint_url=endpoint,
        region_name=settings.s3_region,
        aws_access_key_id=settings.s3_access_key_id.get_secret_value(),
        aws_secret_access_key=settings.s3_secret_access_key.get_secret_value(),
        config=_config(),
    ) as client:
        yield client


async def ensure_bucket(client: Any, bucket: str) -> None:
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
