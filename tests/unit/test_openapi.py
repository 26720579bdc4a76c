"""The committed OpenAPI document is the app's own; regenerate it with `make openapi`."""

from __future__ import annotations

from pathlib import Path

import yaml

from hutch.api.app import create_app
from hutch.settings import Settings

SPEC = Path(__file__).parents[2] / "specs" / "openapi.yaml"


def test_committed_openapi_matches_the_app(settings: Settings) -> None:
    committed = yaml.safe_load(SPEC.read_text())
    generated = create_app(settings).openapi()
    assert committed == generated, "specs/openapi.yaml is stale: run `make openapi`"


def test_openapi_documents_the_seed_001_routes(settings: Settings) -> None:
    paths = create_app(settings).openapi()["paths"]
    for path in ("/v1/shapes", "/v1/rootfs", "/v1/hosts", "/v1/whoami", "/healthz", "/readyz"):
        assert "get" in paths[path], path
    assert paths["/v1/whoami"]["get"]["security"], "whoami needs a key"
    assert "security" not in paths["/v1/shapes"]["get"], "shapes needs none"
    assert "503" in paths["/readyz"]["get"]["responses"]
