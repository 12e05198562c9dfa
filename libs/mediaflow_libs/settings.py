"""Settings shared by every service, read once from the environment.

Each service subclasses :class:`ServiceSettings` and adds its own groups. Real
environment variables win over a ``.env`` file; a bad value stops the process
at start-up with a message naming the variable.
"""

from __future__ import annotations

import importlib.util
from typing import Literal, Self
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from mediaflow_libs.egress import EgressPolicy, parse_entries, system_entries

MIB = 1024 * 1024


class SettingsGroup(BaseSettings):
    """Base of every settings group, so that groups combine into one service's settings."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", frozen=True)


class ServiceSettings(SettingsGroup):
    host: str = Field("127.0.0.1", description="Address the service's HTTP port binds to")
    port: int = Field(
        8000, description="The service's own HTTP port (API, /healthz, /readyz, /metrics)"
    )
    trusted_proxies: str = Field(
        "127.0.0.1",
        description=(
            "Peers whose X-Forwarded-For names the client: the ingress (comma-separated "
            "addresses or CIDRs, * for any peer). Per-address sign-in limits depend on it"
        ),
    )
    log_level: str = Field("info", description="debug, info, warning or error")
    log_format: str = Field("auto", description="json, console, or auto (console on a terminal)")

    public_url: str = Field(
        "http://127.0.0.1:8080",
        description="The one URL users reach; cookie attributes and trusted origin derive from it",
    )
    database_url: str = Field(
        "postgresql://postgres@127.0.0.1:5432/mediaflow", description="PostgreSQL DSN"
    )
    database_pool_size: int = Field(10, ge=1, description="Connections per service process")
    amqp_url: str = Field("amqp://guest:guest@127.0.0.1:5672/", description="RabbitMQ URL")
    amqp_namespace: str = Field(
        "media", description="Prefix of exchange and queue names (`media.jobs`, `media.events`)"
    )
    service_secret: SecretStr = Field(
        ..., min_length=32, description="Shared key that signs internal service tokens (required)"
    )

    @model_validator(mode="after")
    def _check_public_url(self) -> Self:
        parts = urlsplit(self.public_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"PUBLIC_URL must be an absolute http(s) URL, got {self.public_url!r}")
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise ValueError(
                "PUBLIC_URL must be an origin without a path, e.g. https://media.example"
            )
        return self

    @property
    def public_origin(self) -> str:
        parts = urlsplit(self.public_url)
        return f"{parts.scheme}://{parts.netloc}"


class CreditSettings(SettingsGroup):
    signup_credits: int = Field(10, ge=0, description="Credits granted on sign-up")
    task_cost_credits: int = Field(1, ge=0, description="Credits charged per task")


class S3Settings(SettingsGroup):
    s3_endpoint_url: str = Field(
        "http://127.0.0.1:8333",
        description="S3 API the services use (empty: AWS's own endpoint for S3_REGION)",
    )
    s3_public_endpoint_url: str | None = Field(
        None, description="S3 endpoint put in download links (default: S3_ENDPOINT_URL)"
    )
    s3_region: str = Field("us-east-1", description="S3 region name (signs every request)")
    s3_bucket: str = Field("media", description="Bucket that holds stored media")
    s3_access_key_id: SecretStr = Field(
        SecretStr(""),
        description=(
            "Static S3 access key; empty: the AWS credential chain finds credentials "
            "(AWS_* environment keys with a session token, a web identity token file with "
            "AWS_ROLE_ARN, EKS Pod Identity or container credentials, instance metadata)"
        ),
    )
    s3_secret_access_key: SecretStr = Field(
        SecretStr(""), description="Static S3 secret key, set together with S3_ACCESS_KEY_ID"
    )
    s3_addressing_style: Literal["path", "virtual"] = Field(
        "path",
        description=(
            "path (https://host/bucket/key, what S3-compatible stores expect) or virtual "
            "(https://bucket.host/key)"
        ),
    )
    s3_checksum_algorithm: Literal["CRC32", "CRC32C", "SHA1", "SHA256"] = Field(
        "CRC32",
        description=(
            "Checksum sent with every uploaded part and verified by the store (a streamed "
            "part carries it in a trailer); CRC32C needs botocore[crt]"
        ),
    )
    s3_sse: Literal["", "AES256", "aws:kms"] = Field(
        "",
        description=(
            "Server-side encryption asked for on every write: empty (the bucket's default), "
            "AES256 (SSE-S3) or aws:kms (SSE-KMS)"
        ),
    )
    s3_sse_kms_key_id: str = Field(
        "", description="KMS key id or ARN for S3_SSE=aws:kms (empty: the account's S3 key)"
    )

    @model_validator(mode="after")
    def _check_s3(self) -> Self:
        keys = (
            self.s3_access_key_id.get_secret_value(),
            self.s3_secret_access_key.get_secret_value(),
        )
        if any(keys) and not all(keys):
            raise ValueError(
                "S3_ACCESS_KEY_ID and S3_SECRET_ACCESS_KEY are set together, or both left "
                "empty for the AWS credential chain"
            )
        if self.s3_sse_kms_key_id and self.s3_sse != "aws:kms":
            raise ValueError("S3_SSE_KMS_KEY_ID needs S3_SSE=aws:kms")
        if self.s3_checksum_algorithm == "CRC32C" and importlib.util.find_spec("awscrt") is None:
            raise ValueError("S3_CHECKSUM_ALGORITHM=CRC32C needs botocore[crt] (awscrt)")
        return self


class SessionCheckSettings(SettingsGroup):
    auth_internal_url: str = Field(
        "http://127.0.0.1:8111",
        description="auth's internal base URL: its INTERNAL_PORT (never the ingress)",
    )
    auth_timeout_seconds: float = Field(1.0, gt=0, description="Timeout of one session check")
    auth_breaker_failures: int = Field(
        5,
        ge=1,
        description="Consecutive faults of auth itself (no connection, timeout, 5xx) that open "
        "the circuit breaker; an answer about a token never counts",
    )
    auth_breaker_reset_seconds: float = Field(
        2.0, gt=0, description="How long the breaker stays open before one trial call"
    )
    auth_cache_seconds: float = Field(
        5.0,
        ge=0,
        description="How long a valid session check is reused; revocations evict at once (0: off)",
    )


# Settings naming the system's own servers: the worker never fetches from them, whatever
# EGRESS_ALLOW_CIDRS says. A service checks those it has.
SYSTEM_SERVER_SETTINGS = (
    "s3_endpoint_url",
    "s3_public_endpoint_url",
    "database_url",
    "amqp_url",
    "auth_url",
    "auth_internal_url",
    "gateway_url",
    "notifier_url",
    "worker_url",
)


class EgressSettings(SettingsGroup):
    """Where user URLs may lead (the gateway checks what it can tell at submit, the worker
    every connection), and the system's servers they never may."""

    egress_allow_cidrs: str = Field(
        "",
        description=(
            "Comma-separated CIDRs the worker may fetch from although they are private, "
            "loopback or otherwise refused; an entry may carry a port (127.0.0.1/32:9000, "
            "[::1]/128:9000)"
        ),
    )
    egress_deny: str = Field(
        "",
        description=(
            "Comma-separated CIDRs, each optionally with a port, never fetched whatever "
            "EGRESS_ALLOW_CIDRS says; the system's own servers (S3, database, broker, auth, "
            "every service port) are denied without being listed"
        ),
    )
    auth_url: str = Field(
        "http://127.0.0.1:8101", description="auth's public port, as the ingress reaches it"
    )
    gateway_url: str = Field(
        "http://127.0.0.1:8102", description="gateway's port, as the ingress reaches it"
    )
    notifier_url: str = Field(
        "http://127.0.0.1:8103", description="notifier's port, as the ingress reaches it"
    )
    worker_url: str = Field(
        "http://127.0.0.1:8104", description="worker's probe and metrics port, as scrapers reach it"
    )

    @field_validator("egress_allow_cidrs", "egress_deny")
    @classmethod
    def _check_entries(cls, value: str, info: ValidationInfo) -> str:
        parse_entries(value, (info.field_name or "").upper())  # raises naming the bad entry
        return value

    def system_urls(self) -> list[str]:
        """The URLs of the system's servers this service's settings name, itself included."""
        urls = [getattr(self, name, None) for name in SYSTEM_SERVER_SETTINGS]
        host, port = getattr(self, "host", None), getattr(self, "port", None)
        if isinstance(host, str) and isinstance(port, int):
            urls.append(f"http://{f'[{host}]' if ':' in host else host}:{port}")
        internal = getattr(self, "internal_port", None)
        if isinstance(host, str) and isinstance(internal, int):
            urls.append(f"http://{f'[{host}]' if ':' in host else host}:{internal}")
        return [url for url in urls if isinstance(url, str) and url]

    def egress_policy(self, *, resolve: bool) -> EgressPolicy:
        """EGRESS_ALLOW_CIDRS and EGRESS_DENY, with the system's servers denied: their names
        resolved when ``resolve`` (the worker, at start), literal addresses only otherwise."""
        policy = EgressPolicy.parse(self.egress_allow_cidrs, self.egress_deny)
        return policy.with_deny(system_entries(self.system_urls(), resolve=resolve))
