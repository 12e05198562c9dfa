from __future__ import annotations

from typing import Self

from pydantic import Field, model_validator

from mediaflow_libs.settings import ServiceSettings


class AuthSettings(ServiceSettings):
    port: int = Field(8101, description="auth's HTTP port")
    internal_port: int = Field(
        8111,
        description=(
            "auth's internal port: the session check gateway and notifier call "
            "(/internal/…) answers here only, and nothing else does"
        ),
    )
    session_idle_ttl_seconds: int = Field(
        7 * 24 * 3600, ge=60, description="A session unused this long expires (sliding)"
    )
    session_absolute_ttl_seconds: int = Field(
        30 * 24 * 3600, ge=60, description="A session expires this long after sign-in, used or not"
    )
    sign_in_window_seconds: int = Field(
        900, ge=1, description="Length of the window in which failed sign-ins are counted"
    )
    sign_in_max_failures_per_account: int = Field(
        10, ge=1, description="Failed sign-ins per account per window before 429"
    )
    sign_in_max_failures_per_ip: int = Field(
        100, ge=1, description="Failed sign-ins per client address per window before 429"
    )

    @model_validator(mode="after")
    def _check_ports(self) -> Self:
        if self.internal_port == self.port:
            raise ValueError(f"INTERNAL_PORT must differ from PORT ({self.port})")
        return self
