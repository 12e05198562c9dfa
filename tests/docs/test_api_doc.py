"""docs/api.md, the public contract, stays in step with what the code publishes and answers:
the routes of /v1/openapi.json, and the error codes the services, the ingress and the worker
can give."""

from __future__ import annotations

import re
from pathlib import Path

from devstack import stack
from mediaflow_gateway import openapi
from mediaflow_gateway.app import create_app
from mediaflow_gateway.settings import GatewaySettings
from mediaflow_libs import problems
from mediaflow_libs.credentials import cookie_name

DOC = stack.REPO_ROOT / "docs" / "api.md"
ROUTE = re.compile(r"`(GET|POST|PUT|PATCH|DELETE) (/[^`\s?]*)")
# A status followed by a code, as the tables write them: 404 `task_not_found`.
STATUS_CODE = re.compile(r"\b([1-5]\d\d) `([a-z][a-z0-9_]+)`")
# The places a problem's code is written in the code: the exception the services raise, a
# body field's refusal, the bodies built by hand, and nginx's own answers.
RAISED = re.compile(r"(?:ProblemError|Refusal)\(\s*(\d{3}),\s*\"([a-z_]+)\"")
BUILT = re.compile(r"problem_(?:body|response)\(\s*(?:(\d{3})|[A-Z0-9_]+),\s*\"([a-z_]+)\"")
NGINX = re.compile(r"return (\d{3}) '\{[^']*\"code\":\"([a-z_]+)\"")
FAILED = re.compile(r"\b(?:TaskFailure|Retry)\(\s*\"([a-z_]+)\"")


def _published_routes() -> set[str]:
    settings = GatewaySettings(
        service_secret="x" * 32, s3_access_key_id="k", s3_secret_access_key="s"
    )
    document = openapi.published(create_app(settings), cookie_name(settings.public_url))
    return {
        f"{method.upper()} {_shape(path)}"
        for path, item in document["paths"].items()
        for method in item
    }


def _shape(path: str) -> str:
    return re.sub(r"\{[^}]*\}", "{}", path)


def _sources(*roots: str) -> str:
    return "\n".join(
        path.read_text()
        for root in roots
        for path in sorted((stack.REPO_ROOT / root).rglob("*.py"))
        if "tests" not in path.parts
    )


def _problem_codes() -> dict[str, set[int]]:
    """Every problem code the code can answer, with its statuses."""
    found: dict[str, set[int]] = {}
    code = _sources("services", "libs")
    nginx = (stack.REPO_ROOT / "devstack" / "nginx.conf.template").read_text()
    matches = [*RAISED.findall(code), *BUILT.findall(code), *NGINX.findall(nginx)]
    matches += [(str(status), name) for status, name in problems._FRAMEWORK_CODES.items()]
    for status, name in matches:
        found.setdefault(name, set())
        if status:
            found[name].add(int(status))
    found["internal"].add(500)  # problems._handle_unexpected
    return found


def _section(text: str, heading: str) -> str:
    start = text.index(heading)
    rest = text[start + len(heading) :]
    end = re.search(r"^#{1,3} ", rest, re.MULTILINE)
    return rest[: end.start()] if end else rest


def _table(section: str) -> dict[str, str]:
    """The first column's code of each row, and the second column."""
    rows = re.findall(r"^\| `([a-z_]+)` \| ([^|]+) \|", section, re.MULTILINE)
    return {name: second.strip() for name, second in rows}


def test_every_published_route_is_in_the_doc_and_every_documented_route_is_published() -> None:
    documented = {f"{method} {_shape(path)}" for method, path in ROUTE.findall(DOC.read_text())}
    published = _published_routes()
    assert published - documented == set(), "routes docs/api.md does not describe"
    assert documented - published == set(), "routes docs/api.md names that nobody serves"


def test_the_doc_lists_every_problem_code_with_the_statuses_it_comes_with() -> None:
    listed = _table(_section(DOC.read_text(), "### Problem codes"))
    answered = _problem_codes()
    assert set(answered) - set(listed) == set(), "codes the services answer, undocumented"
    assert set(listed) - set(answered) == set(), "documented codes nothing answers"
    for name, status in listed.items():
        assert int(status) in answered[name], f"{name}: documented {status}, sent {answered[name]}"


def test_every_code_the_doc_mentions_with_a_status_is_one_of_them() -> None:
    text = DOC.read_text()
    answered = _problem_codes()
    mentioned = STATUS_CODE.findall(text)
    assert len(mentioned) >= 30  # the pattern still finds what the tables write
    for status, name in mentioned:
        assert name in answered, f"docs/api.md says {status} `{name}`: no such code"
        assert int(status) in answered[name], f"docs/api.md says {status} `{name}`"


def test_the_doc_lists_every_task_error_code() -> None:
    listed = set(_table(_section(DOC.read_text(), "### Task error codes")))
    failures = set(FAILED.findall(_sources("services/worker")))
    assert listed == failures


def test_the_readme_links_the_contract_in_the_repository() -> None:
    readme = (stack.REPO_ROOT / "README.md").read_text()
    assert "../shared/" not in readme
    assert "(docs/api.md)" in readme
    assert Path(DOC).is_file()
