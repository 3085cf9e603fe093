"""/docs and /redoc work on a network cut off from the internet: every asset comes from EnvLink."""

from __future__ import annotations

import re

import httpx
import pytest

from api.app import create_app
from core.settings import Settings

ASSET = re.compile(r"""(?:src|href)\s*=\s*['"]([^'"]+)['"]|url:\s*['"]([^'"]+)['"]""")


@pytest.fixture
async def client() -> httpx.AsyncClient:
    app = create_app(Settings(database_url="postgresql://unused@localhost/none"))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://envlink")


@pytest.mark.parametrize(
    ("page", "assets"),
    [
        (
            "/docs",
            [
                "/docs-assets/favicon.png",
                "/docs-assets/swagger-ui-bundle.js",
                "/docs-assets/swagger-ui.css",
                "/openapi.json",
            ],
        ),
        ("/redoc", ["/docs-assets/favicon.png", "/docs-assets/redoc.standalone.js"]),
    ],
)
async def test_docs_load_every_asset_from_envlink(
    client: httpx.AsyncClient, page: str, assets: list[str]
) -> None:
    html = (await client.get(page)).text
    found = sorted({a or b for a, b in ASSET.findall(html)})
    assert found == sorted(assets)
    assert "fonts.googleapis" not in html
    for asset in assets:
        if asset == "/openapi.json":
            continue
        response = await client.get(asset)
        assert (response.status_code, len(response.content) > 1000) == (200, True), asset


async def test_the_api_key_is_a_security_scheme_of_every_keyed_operation(
    client: httpx.AsyncClient,
) -> None:
    spec = (await client.get("/openapi.json")).json()
    assert spec["components"]["securitySchemes"] == {
        "HTTPBearer": {
            "type": "http",
            "scheme": "bearer",
            "description": "Authorization: Bearer <API key>",
        },
        "APIKeyHeader": {
            "type": "apiKey",
            "in": "header",
            "name": "X-API-Key",
            "description": "The API key",
        },
    }
    # Keyless: health, metrics, the screen, and the signed bulletin links (their signature is
    # the credential).
    public = {
        "/healthz",
        "/readyz",
        "/metrics",
        "/",
        "/openapi.json",
        "/v1/reports/bulletin/signed",
    }
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            expected = [] if path in public else [{"HTTPBearer": []}, {"APIKeyHeader": []}]
            assert operation.get("security", []) == expected, f"{method.upper()} {path}"
            headers = {p["name"].lower() for p in operation.get("parameters", [])}
            assert not headers & {"authorization", "x-api-key"}, f"{method.upper()} {path}"
