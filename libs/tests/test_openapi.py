"""Merging services' OpenAPI descriptions into the one published document."""

from __future__ import annotations

import msgspec
import pytest

from mediaflow_libs.openapi import DATE_TIME, SHARED_SCHEMAS, component_schemas, merged


def _document(path: str, **schemas: object) -> dict[str, object]:
    return {
        "paths": {path: {"get": {"responses": {"200": {"description": "ok"}}}}},
        "components": {"schemas": {**SHARED_SCHEMAS, **schemas}},
    }


def test_merging_adds_every_path_and_shares_identical_components() -> None:
    first = {"openapi": "3.1.0", "info": {"title": "t", "version": "1"}} | _document("/a")
    result = merged(first, _document("/b", B={"type": "string"}))
    assert set(result["paths"]) == {"/a", "/b"}
    assert set(result["components"]["schemas"]) == {*SHARED_SCHEMAS, "B"}
    assert result["info"] == {"title": "t", "version": "1"}


def test_merging_refuses_a_path_or_component_described_two_ways() -> None:
    # Either description would be silently wrong for half of the routes.
    with pytest.raises(ValueError, match="/a is described twice"):
        merged(_document("/a"), _document("/a"))
    with pytest.raises(ValueError, match=r"components\.schemas\.User differs"):
        merged(_document("/a"), _document("/b", User={"type": "object"}))


class _Inner(msgspec.Struct):
    at: DATE_TIME | None


class _Outer(msgspec.Struct):
    inner: _Inner | None
    count: int | None = None


def test_component_schemas_write_a_nullable_plain_type_as_a_type_list() -> None:
    schemas = component_schemas(_Outer)
    assert schemas["_Inner"]["properties"]["at"] == {
        "type": ["string", "null"],
        "format": "date-time",
    }
    assert schemas["_Outer"]["properties"]["count"] == {
        "type": ["integer", "null"],
        "default": None,
    }
    # A reference cannot take a type list: its union stays as it is.
    assert schemas["_Outer"]["properties"]["inner"] == {
        "anyOf": [{"$ref": "#/components/schemas/_Inner"}, {"type": "null"}]
    }
