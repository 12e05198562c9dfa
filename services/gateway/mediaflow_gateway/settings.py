from __future__ import annotations

from functools import cached_property

from pydantic import Field

from mediaflow_libs.egress import EgressPolicy
from mediaflow_libs.settings import (
    CreditSettings,
    EgressSettings,
    S3Settings,
    ServiceSettings,
    SessionCheckSettings,
)


class GatewaySettings(
    ServiceSettings, CreditSettings, SessionCheckSettings, S3Settings, EgressSettings
):
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

    @cached_property
    def egress(self) -> EgressPolicy:
        """What the gateway can tell without DNS: literal addresses of the system's servers."""
        return self.egress_policy(resolve=False)
