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
    sign_in_max_failures_per_account_and_ip: int = Field(
        10,
        ge=1,
        description=(
            "Failed sign-ins per account from one client address per window before that "
            "address gets 429 for that account (others still sign in)"
        ),
    )
    sign_in_max_failures_per_account: int = Field(
        50,
        ge=1,
        description=(
            "Failed sign-ins per account per window, from all addresses together, before 429: "
            "stops a guesser spread over many addresses; must exceed "
            "SIGN_IN_MAX_FAILURES_PER_ACCOUNT_AND_IP, so that no single address can reach it"
        ),
    )
    sign_in_max_failures_per_ip: int = Field(
        100, ge=1, description="Failed sign-ins per client address per window before 429"
    )

    @model_validator(mode="after")
    def _check_ports(self) -> Self:
        if self.internal_port == self.port:
            raise ValueError(f"INTERNAL_PORT must differ from PORT ({self.port})")
        return self

    @model_validator(mode="after")
    def _check_sign_in_limits(self) -> Self:
        # A throttled address's attempts are not counted, so one address adds at most the
        # per-address limit to the account's count: below the account limit it can never
        # lock the owner out.
        if self.sign_in_max_failures_per_account <= self.sign_in_max_failures_per_account_and_ip:
            raise ValueError(
                "SIGN_IN_MAX_FAILURES_PER_ACCOUNT must exceed "
                "SIGN_IN_MAX_FAILURES_PER_ACCOUNT_AND_IP "
                f"({self.sign_in_max_failures_per_account_and_ip}), or one client address "
                "could lock an account's owner out"
            )
        return self
