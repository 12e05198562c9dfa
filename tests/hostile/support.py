"""What the hostile-input tests share: users, the problem+json check, a snapshot of everything a
user owns (to prove a refused request changed nothing) and waiting for a task to end."""

from __future__ import annotations

import asyncio
import base64
import http.cookiejar
import json
import secrets
import ssl
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx

from devstack import stack
from mediaflow_libs import s3
from mediaflow_libs.problems import valid_request_id
from mediaflow_libs.settings import S3Settings

PASSWORD = "a long passphrase"
# One TLS context for every client: building one per client costs ~20 ms (the CA bundle).
_TLS = ssl.create_default_context()


class _NoCookies(http.cookiejar.DefaultCookiePolicy):
    """Clients here never keep cookies: every request carries exactly the credential the test
    gives it, so no session travels from one request (or user) to the next by accident."""

    def set_ok(self, cookie: http.cookiejar.Cookie, request: urllib.request.Request) -> bool:
        return False


def new_client(base_url: str, timeout: float = 15) -> httpx.AsyncClient:
    jar = http.cookiejar.CookieJar(policy=_NoCookies())
    return httpx.AsyncClient(
        base_url=base_url, timeout=timeout, verify=_TLS, cookies=httpx.Cookies(jar)
    )


PROBLEM_FIELDS = {"type", "title", "status", "detail", "code", "request_id"}
TERMINAL = ("succeeded", "failed", "canceled")
# Text that must never reach a client: stack traces, framework or server internals.
LEAKS = (
    "traceback",
    "<html",
    "<!doctype",
    'file "/',
    "asyncpg",
    "litestar",
    "nginx/",
    "site-packages",
)


def assert_problem(response: httpx.Response, status: int, code: str | set[str]) -> dict[str, Any]:
    """The response is an RFC 9457 problem with this status and code, and leaks nothing."""
    request = response.request
    where = f"{request.method} {request.url.path}"
    content_type = response.headers.get("content-type", "")
    text = response.text
    assert content_type.startswith("application/problem+json"), (
        f"{where}: {response.status_code} with Content-Type {content_type!r}, "
        f"not problem+json: {text[:300]!r}"
    )
    lowered = text.lower()
    assert not any(leak in lowered for leak in LEAKS), f"{where}: the body leaks: {text[:500]!r}"
    body = response.json()
    assert isinstance(body, dict), f"{where}: {body}"
    assert set(body) >= PROBLEM_FIELDS, f"{where}: {body}"
    codes = {code} if isinstance(code, str) else code
    assert (response.status_code, body["code"]) in {(status, c) for c in codes}, (
        f"{where}: expected {status} {sorted(codes)}, got {response.status_code} {body}"
    )
    assert body["status"] == status, body
    assert body["request_id"], body
    return body


@dataclass(frozen=True)
class User:
    id: str
    email: str
    token: str  # the session cookie's value
    api_key: str  # a bearer key made at sign-up, to look at the account whatever the tests do

    @property
    def cookie(self) -> dict[str, str]:
        return {"Cookie": f"mf_session={self.token}"}

    @property
    def bearer(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}


async def sign_up(base_url: str, prefix: str = "hostile") -> User:
    async with new_client(base_url) as client:
        email = f"{prefix}-{secrets.token_hex(6)}@example.com"
        response = await client.post(
            "/v1/auth/sign-up", json={"email": email, "password": PASSWORD}
        )
        assert response.status_code == 201, response.text
        token = response.cookies["mf_session"]
        cookie = {"Cookie": f"mf_session={token}"}
        key = await client.post("/v1/auth/api-keys", json={"name": "observer"}, headers=cookie)
        assert key.status_code == 201, key.text
        me = await client.get("/v1/me", headers=cookie)
        assert me.status_code == 200, me.text
        return User(
            id=response.json()["user"]["id"], email=email, token=token, api_key=key.json()["key"]
        )


async def sign_in(base_url: str, user: User) -> str:
    """A new session token for ``user``."""
    async with new_client(base_url) as client:
        response = await client.post(
            "/v1/auth/sign-in", json={"email": user.email, "password": PASSWORD}
        )
        assert response.status_code == 200, response.text
        return response.cookies["mf_session"]


@dataclass(frozen=True)
class Snapshot:
    """Everything of one user's that a request could change."""

    balance: int  # as GET /v1/me says
    api_tasks: tuple[tuple[str, str], ...]  # (id, status) as GET /v1/tasks lists them
    tasks: tuple[tuple[Any, ...], ...]  # media.tasks rows
    ledger: tuple[tuple[Any, ...], ...]
    sessions: tuple[tuple[Any, ...], ...]
    api_keys: tuple[tuple[Any, ...], ...]
    objects: tuple[str, ...]  # stored object keys under tasks/{user_id}/
    uploads: tuple[str, ...]  # unfinished multipart uploads under it


@asynccontextmanager
async def open_storage(secrets_: dict[str, str]) -> AsyncIterator[Any]:
    """An S3 client on the local SeaweedFS, as the services use it."""
    settings = S3Settings(
        s3_endpoint_url=f"http://127.0.0.1:{stack.S3_PORT}",
        s3_access_key_id=secrets_["S3_ACCESS_KEY_ID"],
        s3_secret_access_key=secrets_["S3_SECRET_ACCESS_KEY"],
    )
    async with s3.open_s3(settings) as client:
        yield client


class World:
    """One stack as a test sees it: its ingress, the database and the bucket."""

    def __init__(self, config: stack.StackConfig, pool: asyncpg.Pool, s3_client: Any) -> None:
        self.config = config
        self.url = config.public_url
        self.pool = pool
        self._s3 = s3_client

    @property
    def s3(self) -> Any:
        return self._s3

    def client(self, timeout: float = 15) -> httpx.AsyncClient:
        return new_client(self.url, timeout)

    async def storage(self, user_id: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
        prefix = f"tasks/{user_id}/"
        bucket = self.config.bucket
        try:
            listed = await self._s3.list_objects_v2(Bucket=bucket, Prefix=prefix)
            uploads = await self._s3.list_multipart_uploads(Bucket=bucket, Prefix=prefix)
        except self._s3.exceptions.NoSuchBucket:
            return (), ()
        objects = tuple(sorted(item["Key"] for item in listed.get("Contents", [])))
        # SeaweedFS goes on listing a completed upload now and then, after the object is
        # there (seen twice in make test, the task long succeeded): an upload whose object
        # exists is that leftover, not something a request started.
        open_uploads = {item["Key"] for item in uploads.get("Uploads", [])} - set(objects)
        return objects, tuple(sorted(open_uploads))

    async def snapshot(self, user: User) -> Snapshot:
        (me, listed), rows, (objects, uploads) = await asyncio.gather(
            self._api_view(user), self._rows(user.id), self.storage(user.id)
        )
        tasks, ledger, sessions, keys = rows
        return Snapshot(
            balance=me.json()["credits"]["balance"],
            api_tasks=tuple((t["id"], t["status"]) for t in listed.json()["items"]),
            tasks=tuple(tuple(row) for row in tasks),
            ledger=tuple(tuple(row) for row in ledger),
            sessions=tuple(tuple(row) for row in sessions),
            api_keys=tuple(tuple(row) for row in keys),
            objects=objects,
            uploads=uploads,
        )

    async def _api_view(self, user: User) -> tuple[httpx.Response, httpx.Response]:
        async with self.client() as client:
            me = await client.get("/v1/me", headers=user.bearer)
            assert me.status_code == 200, me.text
            listed = await client.get("/v1/tasks", params={"limit": 100}, headers=user.bearer)
            assert listed.status_code == 200, listed.text
        return me, listed

    async def _rows(self, user_id: str) -> list[list[asyncpg.Record]]:
        queries = [
            # Not progress: a task that runs during the test moves on by itself.
            """SELECT id, status, attempt, error_code, object_key
               FROM media.tasks WHERE user_id = $1 ORDER BY id""",
            """SELECT id, task_id, delta, reason FROM media.credit_ledger
               WHERE user_id = $1 ORDER BY id""",
            """SELECT id, revoked_at, absolute_expires_at FROM auth.sessions
               WHERE user_id = $1 ORDER BY id""",
            "SELECT id, name, key_hash FROM auth.api_keys WHERE user_id = $1 ORDER BY id",
        ]
        async with self.pool.acquire() as con:
            return [await con.fetch(query, user_id) for query in queries]

    async def wait_terminal(self, user: User, task_id: str, within: float = 15) -> dict[str, Any]:
        """The task once it has ended; fails the test when it has not ``within`` seconds."""
        deadline = asyncio.get_running_loop().time() + within
        async with self.client() as client:
            while True:
                response = await client.get(f"/v1/tasks/{task_id}", headers=user.bearer)
                assert response.status_code == 200, response.text
                task: dict[str, Any] = response.json()["task"]
                if task["status"] in TERMINAL:
                    await self._wait_no_upload(user, task_id)
                    return task
                if asyncio.get_running_loop().time() > deadline:
                    raise AssertionError(f"task {task_id} did not end within {within}s: {task}")
                await asyncio.sleep(0.1)

    async def _wait_no_upload(self, user: User, task_id: str, within: float = 15) -> None:
        """An ended task's multipart upload may still be listed for a moment (the worker
        aborts a failed one after recording the failure; the store tidies a completed one
        after completing it): snapshots compare a settled store, one that has listed no
        upload of the task for a whole second."""
        prefix = f"tasks/{user.id}/{task_id}/"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        quiet_since = loop.time()
        while loop.time() - quiet_since < 1.0:
            if any(key.startswith(prefix) for key in (await self.storage(user.id))[1]):
                quiet_since = loop.time()
            if loop.time() > deadline:
                raise AssertionError(f"task {task_id} ended but its upload is still open")
            await asyncio.sleep(0.1)

    async def assert_refunded_once(self, user: User, task_id: str) -> None:
        rows = await self.pool.fetch(
            "SELECT reason, delta FROM media.credit_ledger WHERE task_id = $1 ORDER BY id", task_id
        )
        reasons = sorted((row["reason"], row["delta"]) for row in rows)
        cost = -next((delta for reason, delta in reasons if reason == "charge"), 0)
        assert cost > 0, f"task {task_id}: ledger {reasons}, no charge"
        assert reasons == sorted([("charge", -cost), ("refund", cost)]), (
            f"task {task_id}: ledger {reasons}, expected one charge and one refund"
        )

    async def submit_and_fail(
        self,
        user: User,
        url: str,
        code: str,
        within: float = 15,
        refusable: frozenset[str] = frozenset(),
    ) -> dict[str, Any] | None:
        """Submit ``url``; the task must end ``failed`` with ``code``, refunded exactly once,
        with nothing stored and everything else as it was; or, when ``refusable`` names codes,
        a 422 with one of them at submit."""
        before = await self.snapshot(user)
        async with self.client() as client:
            response = await client.post("/v1/tasks", json={"url": url}, headers=user.bearer)
        if refusable and response.status_code == 422:
            # Refusing at submit (one of ``refusable``) is as good, when it changes nothing.
            assert_problem(response, 422, set(refusable))
            assert await self.snapshot(user) == before
            return None
        assert response.status_code == 202, f"{url}: {response.status_code} {response.text}"
        task_id = response.json()["task"]["id"]
        task = await self.wait_terminal(user, task_id, within)
        assert (task["status"], (task["error"] or {}).get("code")) == ("failed", code), (
            f"{url}: expected failed/{code}, got {json.dumps(task)}"
        )
        assert task["result"] is None, task
        await self.assert_refunded_once(user, task_id)
        after = await self.snapshot(user)
        assert after.balance == before.balance, (before.balance, after.balance)
        assert after.objects == before.objects, f"{url}: objects stored: {after.objects}"
        assert after.uploads == before.uploads, f"{url}: uploads left: {after.uploads}"
        assert tuple(t for t in after.api_tasks if t[0] != task_id) == before.api_tasks
        return task


def forged_cursor(created_at: str, task_id: str) -> str:
    """A list cursor as the gateway encodes them, with whatever it should hold."""
    raw = json.dumps([created_at, task_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


async def send_raw(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send bytes as they are to a local port; the status, headers and body it answers."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(1 << 20), 10)
        while not raw.count(b"\r\n\r\n"):
            more = await asyncio.wait_for(reader.read(1 << 20), 10)
            if not more:
                break
            raw += more
        head, _, body = raw.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if "content-length" in headers:
            length = int(headers["content-length"])
            while len(body) < length:
                more = await asyncio.wait_for(reader.read(1 << 20), 10)
                if not more:
                    break
                body += more
    finally:
        writer.close()
    return status, headers, body


def assert_raw_problem(
    status: int,
    headers: dict[str, str],
    body: bytes,
    statuses: set[int],
    code: str | None = None,
) -> dict[str, Any]:
    """A raw answer is an RFC 9457 problem with one of ``statuses`` (and ``code``)."""
    text = body.decode("utf-8", "replace")
    assert status in statuses, f"status {status}: {text[:300]!r}"
    content_type = headers.get("content-type", "")
    assert content_type.startswith("application/problem+json"), (
        f"answered {status} with {content_type!r}: {text[:300]!r}"
    )
    assert not any(leak in text.lower() for leak in LEAKS), text
    problem: dict[str, Any] = json.loads(text)
    assert set(problem) >= PROBLEM_FIELDS, problem
    assert problem["status"] == status, problem
    assert valid_request_id(str(problem["request_id"])), problem
    if code is not None:
        assert problem["code"] == code, problem
    return problem
