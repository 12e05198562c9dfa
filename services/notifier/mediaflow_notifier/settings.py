from __future__ import annotations

from pydantic import Field

from mediaflow_libs.settings import ServiceSettings, SessionCheckSettings


class NotifierSettings(ServiceSettings, SessionCheckSettings):
    port: int = Field(8103, description="notifier's HTTP port")
    sse_heartbeat_seconds: float = Field(
        10.0,  # a margin below API.md's 15: a ping may leave late on a busy event loop
        gt=0,
        le=15,
        description="Seconds between `: ping` comments on every stream (API.md: at most 15)",
    )
    sse_retry_ms: int = Field(
        3000, ge=0, description="Reconnect delay sent to clients in the stream's `retry:` line"
    )
    sse_client_buffer: int = Field(
        256,
        ge=1,
        description="Events queued per stream before a client too slow to read them is dropped",
    )
    sse_max_streams_per_user: int = Field(
        100,
        ge=1,
        description="Event streams one user may hold open on one notifier process at once; "
        "past it a new one is 429 too_many_streams (each costs memory and a binding)",
    )
