from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import asyncpg
from aio_pika.abc import AbstractRobustConnection

from mediaflow_gateway.settings import GatewaySettings
from mediaflow_gateway.submissions import Submitter
from mediaflow_libs.amqp import Topology
from mediaflow_libs.session_client import SessionClient


@dataclass
class Resources:
    settings: GatewaySettings
    topology: Topology
    pool: asyncpg.Pool
    amqp: AbstractRobustConnection
    sessions: SessionClient
    submitter: Submitter
    s3: Any  # aiobotocore S3 client for S3_ENDPOINT_URL
    s3_public: Any  # aiobotocore S3 client signing for S3_PUBLIC_ENDPOINT_URL
