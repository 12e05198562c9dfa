"""Merging services' OpenAPI descriptions into the one published document."""

from __future__ import annotations

import pytest

from mediaflow_libs.openapi import SHARED_SCHEMAS, merged


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
