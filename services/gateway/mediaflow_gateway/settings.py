from __future__ import annotations

from functools import cached_property

from pydantic import Field, field_validator

from mediaflow_libs.egress import Network, parse_cidrs
from mediaflow_libs.settings import (
    CreditSettings,
    S3Settings,
    ServiceSettings,
    SessionCheckSettings,
)


class GatewaySettings(ServiceSettings, CreditSettings, SessionCheckSettings, S3Settings):
    port: int = Field(8102, description="gateway's HTTP port")
    download_url_ttl_seconds: int = Field(
        900, ge=1, le=900, description="Lifetime of presigned download links (at most 15 min)"
    )
    outbox_poll_interval_seconds: float = Field(
        1.0, gt=0, description="Relay's polling fallback when no NOTIFY arrives"
    )
    task_submits_per_minute: int = Field(
        60, ge=1, description="Task submissions per user per minute, across all replicas"
    )
    egress_allow_cidrs: str = Field(
        "", description="Private ranges the worker may fetch from anyway (comma-separated CIDRs)"
    )

    @field_validator("egress_allow_cidrs")
    @classmethod
    def _valid_cidrs(cls, value: str) -> str:
        parse_cidrs(value)
        return value

    @cached_property
    def egress_allow_networks(self) -> tuple[Network, ...]:
        return parse_cidrs(self.egress_allow_cidrs)
