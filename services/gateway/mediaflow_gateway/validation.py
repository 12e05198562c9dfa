"""What a task submission must be before anything is charged: its source URL, its options,
its Idempotency-Key (API.md, "Tasks")."""

from __future__ import annotations

import re
from typing import Annotated, Literal
from urllib.parse import urlsplit, urlunsplit

import msgspec
from msgspec import Meta

from mediaflow_libs import egress, tasks
from mediaflow_libs.egress import EgressPolicy
from mediaflow_libs.problems import ProblemError
from mediaflow_libs.request_bodies import Refusal, storable_text

MAX_URL_LENGTH = 2048
IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")
# Exactly the characters for which str.isspace() holds, and the C0 controls.
SPACE_OR_CONTROL = re.compile(r"[\s\x00-\x1f]")


def _one_of(option: str) -> Refusal:
    # A height is a JSON number (true is not 1); "720" is not a height.
    shown = ", ".join(f'"{v}"' if not v.isdigit() else v for v in tasks.OPTION_VALUES[option])
    return Refusal(422, "invalid_options", f"`{option}` must be one of {shown}.")


class SubmitTask(msgspec.Struct):
    """A media link to fetch, and what to keep of it."""

    # The URL's own rules are validated_source_url's: they depend on the deployment's
    # egress rule.
    url: Annotated[
        str,
        Meta(extra_json_schema={"format": "uri", "maxLength": MAX_URL_LENGTH}),
        Refusal(422, "invalid_url", "`url` must be a non-empty string of characters."),
    ]
    quality: Annotated[
        Literal["best", 2160, 1440, 1080, 720, 480, 360, 240, 144], _one_of("quality")
    ] = "best"
    mode: Annotated[Literal["auto", "audio", "mute"], _one_of("mode")] = "auto"
    audio_format: Annotated[Literal["original", "mp3", "opus"], _one_of("audio_format")] = (
        "original"
    )


def validated_source_url(value: object, policy: EgressPolicy = egress.PUBLIC_ONLY) -> str:
    """The URL with its host IDNA-normalised, or a 422 naming what is wrong with it. A literal
    address the egress rule refuses (on its port) is 422 ``blocked_destination``; names are
    left to the worker, which resolves them (no DNS here)."""
    text = storable_text(value)
    if text is None or not text.strip():
        raise ProblemError(422, "invalid_url", "`url` must be a non-empty string of characters.")
    url = text.strip()
    if len(url) > MAX_URL_LENGTH:
        raise ProblemError(
            422, "invalid_url", f"`url` may have at most {MAX_URL_LENGTH} characters."
        )
    try:
        parts = urlsplit(url)
        hostname = parts.hostname
        port = parts.port
    except ValueError as exc:
        raise ProblemError(422, "invalid_url", f"`url` cannot be parsed: {exc}.") from exc
    if parts.scheme.lower() not in ("http", "https"):
        raise ProblemError(422, "invalid_url", "Only http and https URLs can be fetched.")
    if not hostname:
        raise ProblemError(422, "invalid_url", "`url` must name a host.")
    if parts.username is not None or parts.password is not None:
        raise ProblemError(422, "invalid_url", "`url` must not carry a user name or password.")
    if SPACE_OR_CONTROL.search(url):
        raise ProblemError(
            422, "invalid_url", "`url` must not contain spaces or control characters."
        )
    address = egress.literal_address(hostname)
    if address is not None:
        # The same words whatever the reason: the answer tells nothing about what is there.
        effective_port = egress.DEFAULT_PORTS[parts.scheme.lower()] if port is None else port
        if not policy.allows(address, effective_port):
            raise ProblemError(
                422, "blocked_destination", f"{hostname} is not reachable from here."
            )
        host = f"[{address}]" if address.version == 6 else str(address)
    else:
        try:
            host = egress.host_name(hostname)
        except ValueError as exc:
            raise ProblemError(
                422, "invalid_url", "`url` has a host name that is not valid."
            ) from exc
        if not egress.is_well_formed_host_name(host):
            raise ProblemError(422, "invalid_url", "`url` has a host name that is not valid.")
    if port == 0:
        raise ProblemError(422, "invalid_url", "`url` has port 0, which nothing listens on.")
    netloc = host if port is None else f"{host}:{port}"
    return urlunsplit((parts.scheme.lower(), netloc, parts.path or "/", parts.query, ""))


def validated_options(body: SubmitTask) -> dict[str, str]:
    """API.md's options as the task stores them, or 422 ``invalid_options`` for a choice
    that needs another."""
    options = {"quality": str(body.quality), "mode": body.mode, "audio_format": body.audio_format}
    if options["audio_format"] != "original" and options["mode"] != "audio":
        raise ProblemError(
            422, "invalid_options", '`audio_format` other than "original" needs `mode: "audio"`.'
        )
    return options


def idempotency_key(keys: list[str]) -> str | None:
    """The submission's ``Idempotency-Key`` (its header's values), or 422."""
    if not keys:
        return None
    # Two keys would leave it to chance which one counts.
    if len(keys) > 1 or not IDEMPOTENCY_KEY.match(keys[0]):
        raise ProblemError(
            422,
            "invalid_idempotency_key",
            "Send one Idempotency-Key of 1 to 255 visible ASCII characters.",
        )
    return keys[0]
