from __future__ import annotations

import asyncpg
import httpx
import pytest

from mediaflow_libs.contracts import Job

# The task object of API.md, field for field.
TASK_FIELDS = {
    "id",
    "status",
    "progress",
    "bytes_done",
    "bytes_total",
    "source_url",
    "attempt",
    "options",
    "error",
    "result",
    "created_at",
    "updated_at",
}


def problem_code(response) -> str:  # type: ignore[no-untyped-def]
    assert response.headers["content-type"].startswith("application/problem+json"), response.text
    return str(response.json()["code"])


async def test_me_grants_signup_credits_once(gateway: httpx.AsyncClient, sign_up) -> None:  # type: ignore[no-untyped-def]
    user = await sign_up()
    first = await gateway.get("/v1/me", headers=user.cookie)
    second = await gateway.get("/v1/me", headers=user.cookie)
    assert first.status_code == 200
    assert first.json()["user"]["id"] == user.id
    assert first.json()["credits"] == second.json()["credits"] == {"balance": 10, "task_cost": 1}


async def test_protected_routes_answer_401_with_the_reason(gateway: httpx.AsyncClient) -> None:
    missing = await gateway.get("/v1/me")
    assert missing.status_code == 401
    assert problem_code(missing) == "session_missing"
    forged = await gateway.get("/v1/tasks", headers={"cookie": "mf_session=" + "A" * 43})
    assert forged.status_code == 401
    assert problem_code(forged) == "session_invalid"


async def test_auth_down_is_503_never_401(infra, sign_up) -> None:  # type: ignore[no-untyped-def]
    from conftest import serving, stack
    from mediaflow_gateway.app import create_app
    from mediaflow_gateway.settings import GatewaySettings

    user = await sign_up()
    dead_auth = f"http://127.0.0.1:{stack.free_port()}"
    settings = GatewaySettings(**infra.settings_kwargs(auth_internal_url=dead_auth))
    async with serving(create_app(settings)) as url, httpx.AsyncClient(base_url=url) as client:
        response = await client.get("/v1/me", headers=user.cookie)
    assert response.status_code == 503
    assert problem_code(response) == "auth_unavailable"
    assert int(response.headers["retry-after"]) > 0


async def test_submit_charges_and_writes_task_event_and_job_in_one_go(
    gateway: httpx.AsyncClient,
    sign_up,
    db_pool: asyncpg.Pool,  # type: ignore[no-untyped-def]
) -> None:
    user = await sign_up()
    response = await gateway.post(
        "/v1/tasks", json={"url": "https://media.example/video.mp4"}, headers=user.cookie
    )
    assert response.status_code == 202, response.text
    task = response.json()["task"]
    assert response.headers["location"] == f"/v1/tasks/{task['id']}"
    assert task["status"] == "queued"
    assert task["source_url"] == "https://media.example/video.mp4"
    assert set(task) == TASK_FIELDS
    me = await gateway.get("/v1/me", headers=user.cookie)
    assert me.json()["credits"]["balance"] == 9
    async with db_pool.acquire() as con:
        events = await con.fetch(
            "SELECT status FROM media.task_events WHERE task_id = $1", task["id"]
        )
        ledger = await con.fetch(
            "SELECT delta, reason FROM media.credit_ledger WHERE task_id = $1", task["id"]
        )
    assert [e["status"] for e in events] == ["queued"]
    assert [(row["delta"], row["reason"]) for row in ledger] == [(-1, "charge")]


async def test_submitted_job_reaches_the_jobs_queue(
    gateway: httpx.AsyncClient, sign_up, infra
) -> None:  # type: ignore[no-untyped-def]
    import asyncio

    import aio_pika

    from mediaflow_libs.amqp import Topology

    user = await sign_up()
    # A caller's W3C trace context: the job continues that trace, for the worker to pick up.
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    response = await gateway.post(
        "/v1/tasks",
        json={"url": "https://media.example/a.webm"},
        headers={**user.cookie, "traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"},
    )
    task_id = response.json()["task"]["id"]
    connection = await aio_pika.connect_robust(infra.amqp_url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.get_queue(Topology(infra.amqp_namespace).jobs_queue)
        found = None
        for _ in range(100):
            message = await queue.get(fail=False)
            if message is not None:
                await message.ack()
                job = Job.FromString(message.body)
                if job.task_id == task_id:
                    found = job
                    headers = message.headers
                    break
            else:
                await asyncio.sleep(0.05)
    assert found is not None, "the outbox relay never published the job"
    assert found.user_id == user.id
    assert found.source_url == "https://media.example/a.webm"
    traceparent = headers["traceparent"]
    assert isinstance(traceparent, str)
    assert traceparent.split("-")[1] == trace_id, traceparent


async def test_submit_refuses_bad_input_and_changes_nothing(
    gateway: httpx.AsyncClient, sign_up
) -> None:  # type: ignore[no-untyped-def]
    user = await sign_up()
    cases = [
        ({"url": "ftp://media.example/x"}, 422, "invalid_url"),
        ({"url": "https://user:pw@media.example/x"}, 422, "invalid_url"),
        ({"url": "https:///nohost"}, 422, "invalid_url"),
        ({"url": "https://media.example/" + "a" * 2048}, 422, "invalid_url"),
        ({"url": 7}, 422, "invalid_url"),
        ({}, 422, "invalid_url"),
    ]
    for body, status, code in cases:
        response = await gateway.post("/v1/tasks", json=body, headers=user.cookie)
        assert (response.status_code, problem_code(response)) == (status, code), body
    bad_json = await gateway.post(
        "/v1/tasks", content=b"[1,", headers={**user.cookie, "content-type": "application/json"}
    )
    assert bad_json.status_code == 400
    assert problem_code(bad_json) == "invalid_json"
    huge = await gateway.post(
        "/v1/tasks",
        content=b'{"url": "' + b"a" * 70000 + b'"}',
        headers={**user.cookie, "content-type": "application/json"},
    )
    assert huge.status_code == 413
    assert problem_code(huge) == "payload_too_large"
    listing = await gateway.get("/v1/tasks", headers=user.cookie)
    assert listing.json()["items"] == []
    me = await gateway.get("/v1/me", headers=user.cookie)
    assert me.json()["credits"]["balance"] == 10


async def test_insufficient_credits_is_402_and_balance_never_negative(
    gateway: httpx.AsyncClient,
    sign_up,  # type: ignore[no-untyped-def]
) -> None:
    user = await sign_up()
    statuses = []
    for i in range(12):
        response = await gateway.post(
            "/v1/tasks", json={"url": f"https://media.example/{i}.mp4"}, headers=user.cookie
        )
        statuses.append(response.status_code)
    assert statuses.count(202) == 10
    assert statuses[10:] == [402, 402]
    me = await gateway.get("/v1/me", headers=user.cookie)
    assert me.json()["credits"]["balance"] == 0


async def test_task_reads_are_owner_only_with_etag(gateway: httpx.AsyncClient, sign_up) -> None:  # type: ignore[no-untyped-def]
    owner, other = await sign_up(), await sign_up()
    created = await gateway.post(
        "/v1/tasks", json={"url": "https://media.example/v.mp4"}, headers=owner.cookie
    )
    task_id = created.json()["task"]["id"]
    mine = await gateway.get(f"/v1/tasks/{task_id}", headers=owner.cookie)
    assert mine.status_code == 200
    assert mine.json()["task"]["id"] == task_id
    etag = mine.headers["etag"]
    again = await gateway.get(
        f"/v1/tasks/{task_id}", headers={**owner.cookie, "if-none-match": etag}
    )
    assert again.status_code == 304
    assert again.headers["etag"] == etag
    # RFC 9110: weak comparison, lists, and `*` for "any current copy".
    for held in (f"W/{etag}", f'"stale", {etag}', "*"):
        conditional = await gateway.get(
            f"/v1/tasks/{task_id}", headers={**owner.cookie, "if-none-match": held}
        )
        assert conditional.status_code == 304, held
    stale = await gateway.get(
        f"/v1/tasks/{task_id}", headers={**owner.cookie, "if-none-match": 'W/"stale"'}
    )
    assert stale.status_code == 200
    for path in (f"/v1/tasks/{task_id}", f"/v1/tasks/{task_id}/download"):
        theirs = await gateway.get(path, headers=other.cookie)
        assert theirs.status_code == 404
        assert problem_code(theirs) == "task_not_found"
    cancel = await gateway.post(f"/v1/tasks/{task_id}/cancel", headers=other.cookie)
    assert cancel.status_code == 404
    garbage = await gateway.get("/v1/tasks/not-a-uuid", headers=owner.cookie)
    assert garbage.status_code == 404
    assert problem_code(garbage) == "task_not_found"
    not_ready = await gateway.get(f"/v1/tasks/{task_id}/download", headers=owner.cookie)
    assert not_ready.status_code == 409
    assert problem_code(not_ready) == "task_not_ready"


async def test_head_answers_like_get_without_a_body(gateway: httpx.AsyncClient, sign_up) -> None:  # type: ignore[no-untyped-def]
    user = await sign_up()
    created = await gateway.post(
        "/v1/tasks", json={"url": "https://media.example/v.mp4"}, headers=user.cookie
    )
    task_id = created.json()["task"]["id"]
    for path in (f"/v1/tasks/{task_id}", "/v1/me", "/v1/tasks", "/v1/openapi.json"):
        got = await gateway.get(path, headers=user.cookie)
        head = await gateway.head(path, headers=user.cookie)
        assert (head.status_code, head.content) == (200, b""), path
        assert head.headers.get("etag") == got.headers.get("etag"), path
        assert head.headers["content-type"] == got.headers["content-type"], path
    assert (await gateway.head(f"/v1/tasks/{task_id}")).status_code == 401
    assert (
        await gateway.head(f"/v1/tasks/{task_id}/cancel", headers=user.cookie)
    ).status_code == 405


async def test_list_pages_newest_first_with_opaque_cursors(
    gateway: httpx.AsyncClient, sign_up
) -> None:  # type: ignore[no-untyped-def]
    user = await sign_up()
    created = []
    for i in range(5):
        response = await gateway.post(
            "/v1/tasks", json={"url": f"https://media.example/{i}.mp4"}, headers=user.cookie
        )
        created.append(response.json()["task"]["id"])
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": "2"} | ({"cursor": cursor} if cursor else {})
        page = await gateway.get("/v1/tasks", params=params, headers=user.cookie)
        assert page.status_code == 200
        seen += [item["id"] for item in page.json()["items"]]
        cursor = page.json()["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(created))
    bad = await gateway.get("/v1/tasks", params={"cursor": "!!!"}, headers=user.cookie)
    assert bad.status_code == 422
    assert problem_code(bad) == "invalid_cursor"


async def test_cancel_queued_task_refunds_once(
    gateway: httpx.AsyncClient, sign_up, db_pool
) -> None:  # type: ignore[no-untyped-def]
    user = await sign_up()
    created = await gateway.post(
        "/v1/tasks", json={"url": "https://media.example/c.mp4"}, headers=user.cookie
    )
    task_id = created.json()["task"]["id"]
    canceled = await gateway.post(f"/v1/tasks/{task_id}/cancel", headers=user.cookie)
    assert canceled.status_code == 202
    assert canceled.json()["task"]["status"] == "canceled"
    again = await gateway.post(f"/v1/tasks/{task_id}/cancel", headers=user.cookie)
    assert again.status_code == 409
    assert problem_code(again) == "task_finished"
    me = await gateway.get("/v1/me", headers=user.cookie)
    assert me.json()["credits"]["balance"] == 10
    async with db_pool.acquire() as con:
        refunds = await con.fetchval(
            "SELECT count(*) FROM media.credit_ledger WHERE task_id = $1 AND reason = 'refund'",
            task_id,
        )
    assert refunds == 1


async def test_idempotency_key_returns_the_same_task_and_charges_once(
    gateway: httpx.AsyncClient, sign_up
) -> None:  # type: ignore[no-untyped-def]
    import asyncio

    user = await sign_up()
    headers = {**user.cookie, "idempotency-key": "order-42"}
    body = {"url": "https://media.example/once.mp4"}
    responses = await asyncio.gather(
        *(gateway.post("/v1/tasks", json=body, headers=headers) for _ in range(5))
    )
    assert {r.status_code for r in responses} == {202}
    assert len({r.json()["task"]["id"] for r in responses}) == 1
    conflict = await gateway.post(
        "/v1/tasks", json={"url": "https://media.example/other.mp4"}, headers=headers
    )
    assert conflict.status_code == 409
    assert problem_code(conflict) == "idempotency_conflict"
    bad_key = await gateway.post(
        "/v1/tasks", json=body, headers={**user.cookie, "idempotency-key": "a b"}
    )
    assert bad_key.status_code == 422
    assert problem_code(bad_key) == "invalid_idempotency_key"
    # Two keys: which one would count is left to chance, so neither does.
    two_keys = await gateway.post(
        "/v1/tasks",
        json=body,
        headers=[
            ("cookie", user.cookie["cookie"]),
            ("idempotency-key", "order-42"),
            ("idempotency-key", "order-43"),
        ],
    )
    assert two_keys.status_code == 422
    assert problem_code(two_keys) == "invalid_idempotency_key"
    me = await gateway.get("/v1/me", headers=user.cookie)
    assert me.json()["credits"]["balance"] == 9


async def test_fifty_parallel_submits_with_ten_credits(
    gateway: httpx.AsyncClient, sign_up, db_pool
) -> None:  # type: ignore[no-untyped-def]
    import asyncio

    user = await sign_up()
    responses = await asyncio.gather(
        *(
            gateway.post(
                "/v1/tasks", json={"url": f"https://media.example/p{i}.mp4"}, headers=user.cookie
            )
            for i in range(50)
        )
    )
    statuses = [r.status_code for r in responses]
    assert statuses.count(202) == 10 and statuses.count(402) == 40, statuses
    assert all(problem_code(r) == "insufficient_credits" for r in responses if r.status_code == 402)
    me = await gateway.get("/v1/me", headers=user.cookie)
    assert me.json()["credits"]["balance"] == 0
    async with db_pool.acquire() as con:
        charges = await con.fetchval(
            "SELECT count(*) FROM media.credit_ledger WHERE user_id = $1 AND reason = 'charge'",
            user.id,
        )
        tasks = await con.fetchval("SELECT count(*) FROM media.tasks WHERE user_id = $1", user.id)
    assert charges == tasks == 10


async def test_submits_are_rate_limited_per_user(infra, auth_url: str, sign_up) -> None:  # type: ignore[no-untyped-def]
    from conftest import serving
    from mediaflow_gateway.app import create_app
    from mediaflow_gateway.settings import GatewaySettings

    user, other = await sign_up(), await sign_up()
    settings = GatewaySettings(
        **infra.settings_kwargs(
            auth_internal_url=auth_url, task_submits_per_minute=3, signup_credits=100
        )
    )
    async with serving(create_app(settings)) as url, httpx.AsyncClient(base_url=url) as client:
        statuses = [
            (
                await client.post(
                    "/v1/tasks", json={"url": f"https://m.example/{i}"}, headers=user.cookie
                )
            ).status_code
            for i in range(4)
        ]
        limited = await client.post(
            "/v1/tasks", json={"url": "https://m.example/x"}, headers=user.cookie
        )
        others = await client.post(
            "/v1/tasks", json={"url": "https://m.example/y"}, headers=other.cookie
        )
    assert statuses == [202, 202, 202, 429]
    assert problem_code(limited) == "rate_limited"
    assert 0 < int(limited.headers["retry-after"]) <= 60
    assert others.status_code == 202


async def test_openapi_schema_describes_the_public_routes(gateway: httpx.AsyncClient) -> None:
    response = await gateway.get("/v1/openapi.json")
    assert response.status_code == 200
    schema = response.json()
    assert set(schema["paths"]) >= {
        "/v1/me",
        "/v1/tasks",
        "/v1/tasks/{task_id}",
        "/v1/tasks/{task_id}/cancel",
        "/v1/tasks/{task_id}/download",
    }
    submit = schema["paths"]["/v1/tasks"]["post"]
    body = submit["requestBody"]["content"]["application/json"]["schema"]
    assert body["required"] == ["url"]
    # Generated from the body's type: every field it reads, each option with its choices.
    assert set(body["properties"]) == {"url", "quality", "mode", "audio_format"}
    assert "best" in body["properties"]["quality"]["enum"]
    assert "Idempotency-Key" in {parameter["name"] for parameter in submit["parameters"]}
    assert {"202", "400", "401", "402", "409", "413", "422", "429", "503"} <= set(
        submit["responses"]
    )
    problem = submit["responses"]["402"]["content"]["application/problem+json"]["schema"]
    assert problem == {"$ref": "#/components/schemas/Problem"}
    task = schema["components"]["schemas"]["Task"]
    assert set(task["required"]) == TASK_FIELDS


async def test_openapi_schema_is_valid_and_documents_headers_and_credentials(
    gateway: httpx.AsyncClient,
) -> None:
    from jsonschema import Draft202012Validator
    from schemathesis.specs.openapi.definitions import OPENAPI_31

    schema = (await gateway.get("/v1/openapi.json")).json()
    errors = [error.message for error in Draft202012Validator(OPENAPI_31).iter_errors(schema)]
    assert errors == []
    paths = schema["paths"]
    submit = paths["/v1/tasks"]["post"]
    assert submit["responses"]["202"]["headers"]["Location"]["schema"]["type"] == "string"
    assert "Retry-After" in submit["responses"]["429"]["headers"]
    assert all(
        "Retry-After" in operation["responses"]["503"]["headers"]
        for item in paths.values()
        for operation in item.values()
        if "503" in operation.get("responses", {})
    )
    get_task = paths["/v1/tasks/{task_id}"]["get"]
    assert "304" in get_task["responses"]
    assert "If-None-Match" in {parameter["name"] for parameter in get_task["parameters"]}
    (limit,) = [p for p in paths["/v1/tasks"]["get"]["parameters"] if p["name"] == "limit"]
    assert (limit["schema"]["minimum"], limit["schema"]["maximum"]) == (1, 100)
    assert set(schema["components"]["securitySchemes"]) == {"session", "apiKey"}
    assert submit["security"] == [{"session": []}, {"apiKey": []}]


async def test_openapi_schema_describes_every_public_route_with_the_contracts_answers(
    gateway: httpx.AsyncClient,
) -> None:
    # auth's and the notifier's routes too, as the one origin serves them (API.md).
    schema = (await gateway.get("/v1/openapi.json")).json()
    paths = schema["paths"]
    operations = {
        f"{method.upper()} {path}": operation
        for path, item in paths.items()
        for method, operation in item.items()
    }
    assert set(operations) >= {
        "POST /v1/auth/sign-up",
        "POST /v1/auth/sign-in",
        "POST /v1/auth/sign-out",
        "GET /v1/auth/session",
        "DELETE /v1/auth/sessions",
        "POST /v1/auth/api-keys",
        "GET /v1/auth/api-keys",
        "DELETE /v1/auth/api-keys/{key_id}",
        "GET /v1/events",
    }

    def problem_codes(operation: str) -> set[str]:
        responses = operations[operation]["responses"]
        assert all(
            set(responses[status]["content"]) == {"application/problem+json"}
            for status in responses
            if int(status) >= 400
        ), operation
        return {status for status in responses if int(status) >= 400}

    assert {"409", "415", "422", "403"} <= problem_codes("POST /v1/auth/sign-up")
    assert {"401", "415", "429", "403"} <= problem_codes("POST /v1/auth/sign-in")
    sign_in = operations["POST /v1/auth/sign-in"]
    assert "Retry-After" in sign_in["responses"]["429"]["headers"]
    assert "Set-Cookie" in sign_in["responses"]["200"]["headers"]
    assert sign_in["security"] == []
    assert "404" in problem_codes("DELETE /v1/auth/api-keys/{key_id}")
    for name, operation in operations.items():
        method = name.split()[0]
        if method != "GET":
            assert "403" in operation["responses"], f"{name}: csrf_rejected"
        if "application/json" in operation.get("requestBody", {}).get("content", {}):
            assert "415" in operation["responses"], f"{name}: unsupported_media_type"
        if operation.get("security"):
            assert "401" in operation["responses"], name
            assert operation["security"] == [{"session": []}, {"apiKey": []}], name
    events = operations["GET /v1/events"]
    assert {"401", "422", "429", "503"} <= problem_codes("GET /v1/events")
    assert set(events["responses"]["200"]["content"]) == {"text/event-stream"}
    assert events["security"] == [{"session": []}, {"apiKey": []}]
    assert {"task", "last_event_id", "Last-Event-ID"} == {p["name"] for p in events["parameters"]}
    session = schema["components"]["securitySchemes"]["session"]
    assert (session["in"], session["name"]) == ("cookie", "mf_session")


async def test_unknown_routes_and_methods_are_problems_with_a_request_id(
    gateway: httpx.AsyncClient,
) -> None:
    # No route matches: the problem still carries the request's id (the ingress's when
    # valid), is never Litestar's HTML page, and is counted like any other request.
    from prometheus_client import REGISTRY

    def unmatched(method: str, status: int) -> float:
        labels = {"route": "unmatched", "method": method, "status": str(status)}
        return REGISTRY.get_sample_value("http_requests_total", labels) or 0.0

    counted_before = unmatched("GET", 404), unmatched("PUT", 405)
    for method, path in [
        ("GET", "/v1/nonsense"),
        ("GET", "/v1/openapi"),
        ("GET", "/v1/openapi/openapi.json"),
        ("GET", "/v1/openapi/swagger"),
        ("GET", "/v1/tasks/a/b/c"),
        ("PUT", "/v1/tasks"),
    ]:
        response = await gateway.request(method, path, headers={"X-Request-ID": "ingress-1"})
        assert response.status_code in (404, 405), f"{method} {path}: {response.text}"
        code = problem_code(response)
        assert code == {404: "not_found", 405: "method_not_allowed"}[response.status_code]
        assert response.json()["request_id"] == "ingress-1", f"{method} {path}"
        assert response.headers["x-request-id"] == "ingress-1", f"{method} {path}"
    # (The /v1/openapi/… paths match Litestar's schema router, which refuses them.)
    assert (unmatched("GET", 404), unmatched("PUT", 405)) == (
        counted_before[0] + 2,
        counted_before[1] + 1,
    )
    anonymous = await gateway.get("/v1/nonsense", headers={"X-Request-ID": "<script>"})
    assert problem_code(anonymous) == "not_found"
    assert anonymous.json()["request_id"] not in ("", None, "<script>")


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=XyZ",
        "application/json; charset=latin-1",
        None,
    ],
)
async def test_submit_refuses_a_body_that_is_not_json_and_changes_nothing(
    gateway: httpx.AsyncClient, sign_up, content_type: str | None
) -> None:  # type: ignore[no-untyped-def]
    user = await sign_up()
    balance = (await gateway.get("/v1/me", headers=user.cookie)).json()["credits"]["balance"]
    headers = user.cookie | ({"content-type": content_type} if content_type else {})
    response = await gateway.post(
        "/v1/tasks", content=b'{"url": "https://media.example/v.mp4"}', headers=headers
    )
    assert response.status_code == 415
    assert problem_code(response) == "unsupported_media_type"
    assert response.headers["accept"] == "application/json"
    assert (await gateway.get("/v1/tasks", headers=user.cookie)).json()["items"] == []
    me = await gateway.get("/v1/me", headers=user.cookie)
    assert me.json()["credits"]["balance"] == balance
    # With JSON (a charset of utf-8 is fine) the same body is a task.
    typed = await gateway.post(
        "/v1/tasks",
        content=b'{"url": "https://media.example/v.mp4"}',
        headers=user.cookie | {"content-type": "application/json; charset=utf-8"},
    )
    assert typed.status_code == 202, typed.text
    # Cancel has no body and asks for no Content-Type.
    canceled = await gateway.post(
        f"/v1/tasks/{typed.json()['task']['id']}/cancel", headers=user.cookie
    )
    assert canceled.status_code == 202, canceled.text


async def test_refused_submits_are_counted_by_reason(gateway: httpx.AsyncClient, sign_up) -> None:  # type: ignore[no-untyped-def]
    from prometheus_client import REGISTRY

    def count(outcome: str) -> float:
        value = REGISTRY.get_sample_value("gateway_tasks_submitted_total", {"outcome": outcome})
        return value or 0.0

    def cross_site_refused() -> float:
        return REGISTRY.get_sample_value("http_cross_site_refused_total") or 0.0

    user = await sign_up()
    body = {"url": "https://media.example/v.mp4"}
    before = {code: count(code) for code in ("session_missing", "accepted")}
    refused_before = cross_site_refused()
    assert (await gateway.post("/v1/tasks", json=body)).status_code == 401
    # Refused before the route runs (as on every route), so counted apart.
    cross_site = {**user.cookie, "origin": "https://elsewhere.example"}
    assert (await gateway.post("/v1/tasks", json=body, headers=cross_site)).status_code == 403
    assert (await gateway.post("/v1/tasks", json=body, headers=user.cookie)).status_code == 202
    after = {code: count(code) for code in before}
    assert {code: after[code] - before[code] for code in before} == {
        "session_missing": 1,
        "accepted": 1,
    }
    assert cross_site_refused() - refused_before == 1


@pytest.mark.parametrize("path", ["/metrics/", "/healthz/", "/readyz//", "/diagnostics/"])
async def test_operator_endpoints_answer_on_their_exact_paths_only(
    gateway: httpx.AsyncClient, path: str
) -> None:
    # The ingress keeps /metrics, /healthz, /readyz and /diagnostics out by exact path.
    assert (await gateway.get("/metrics")).status_code == 200
    other_spelling = await gateway.get(path)
    assert other_spelling.status_code == 404, path
    assert problem_code(other_spelling) == "not_found"
