"""The OpenAPI document says what the API enforces: its errors, enums, bounds and links.

Each case is a mismatch the schemathesis run (tests/integration/test_api_fuzz.py) found.
"""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest

from api.app import create_app
from core.settings import Settings
from schemas.common import YEARS_PATTERN

ERROR_BODY = {"$ref": "#/components/schemas/ErrorOut"}
# Operations that take no key: no 401 to document.
KEYLESS = {"/v1/reports/bulletin/signed"}


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    app = create_app(Settings(database_url="postgresql://unused@localhost/none"))
    document: dict[str, Any] = app.openapi()
    return document


def _operations(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method.upper(), path, operation)
        for path, operations in spec["paths"].items()
        for method, operation in operations.items()
    ]


def _error_schema(operation: dict[str, Any], status: str) -> Any:
    return operation["responses"][status]["content"]["application/json"]["schema"]


def test_every_v1_operation_documents_its_errors_in_the_error_envelope(
    spec: dict[str, Any],
) -> None:
    for method, path, operation in _operations(spec):
        if not path.startswith("/v1/"):
            continue
        statuses = ("422", "503") if path in KEYLESS else ("401", "422", "503")
        for status in statuses:
            assert _error_schema(operation, status) == ERROR_BODY, (method, path, status)
        assert "Retry-After" in operation["responses"]["503"]["headers"], (method, path)
    assert "HTTPValidationError" not in spec["components"]["schemas"]


def test_every_operation_with_a_body_documents_the_400_of_a_body_that_is_not_json(
    spec: dict[str, Any],
) -> None:
    for method, path, operation in _operations(spec):
        if "requestBody" in operation:
            assert _error_schema(operation, "400") == ERROR_BODY, (method, path)


@pytest.mark.parametrize(
    ("method", "path", "statuses"),
    [
        ("GET", "/v1/stations/{code}", {"404"}),
        ("GET", "/v1/readings", {"400", "404"}),
        ("GET", "/v1/aqi", {"400", "404"}),
        ("GET", "/v1/alerts", {"400"}),
        ("GET", "/v1/alerts/{alert_id}", {"404"}),
        ("POST", "/v1/alerts/{alert_id}/ack", {"403", "404"}),
        ("POST", "/v1/stations/{code}/maintenance", {"400", "403", "404"}),
        ("DELETE", "/v1/silences/{silence_id}", {"403", "404"}),
        ("DELETE", "/v1/subscriptions/{subscription_id}", {"403", "404"}),
        ("GET", "/v1/notifications", {"400"}),
    ],
)
def test_refusals_are_documented_where_they_happen(
    spec: dict[str, Any], method: str, path: str, statuses: set[str]
) -> None:
    operation = spec["paths"][path][method.lower()]
    for status in statuses:
        assert _error_schema(operation, status) == ERROR_BODY, status


def _parameter(spec: dict[str, Any], path: str, name: str) -> dict[str, Any]:
    operation = spec["paths"][path]["get"]
    found: dict[str, Any] = next(p for p in operation["parameters"] if p["name"] == name)
    return found


def _resolved(spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    variants = [s for s in schema.get("anyOf", [schema]) if s.get("type") != "null"]
    (found,) = variants
    if "$ref" in found:
        found = spec["components"]["schemas"][found["$ref"].rsplit("/", 1)[1]]
    return found


def test_aqi_says_it_needs_exactly_one_of_station_or_city(spec: dict[str, Any]) -> None:
    operation = spec["paths"]["/v1/aqi"]["get"]
    assert "Give exactly one of `station` or `city`" in operation["description"]
    assert "not both" in _parameter(spec, "/v1/aqi", "station")["description"]
    assert "give this or `station`" in _parameter(spec, "/v1/aqi", "city")["description"]


def test_closed_sets_are_enums(spec: dict[str, Any]) -> None:
    period = _resolved(spec, _parameter(spec, "/v1/readings", "period_s")["schema"])
    assert (period["type"], period["enum"]) == ("integer", [0, 60, 3600, 86400])
    group = _resolved(spec, _parameter(spec, "/v1/parameters", "group")["schema"])
    assert group["enum"] == ["air", "weather", "water", "lab"]


def test_times_document_the_years_the_api_takes(spec: dict[str, Any]) -> None:
    since = _resolved(spec, _parameter(spec, "/v1/alerts", "since")["schema"])
    assert (since["format"], since["pattern"]) == ("date-time", YEARS_PATTERN)
    years = re.compile(YEARS_PATTERN)
    assert [y for y in range(1000, 10000) if years.match(f"{y}-01-01")] == list(range(1900, 2200))


def test_every_reference_resolves(spec: dict[str, Any]) -> None:
    def references(node: Any) -> list[str]:
        if isinstance(node, dict):
            own = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
            return own + [ref for value in node.values() for ref in references(value)]
        if isinstance(node, list):
            return [ref for item in node for ref in references(item)]
        return []

    found = set(references(spec["paths"]))
    assert {ref for ref in found if not ref.startswith("#/components/schemas/")} == set()
    names = {ref.removeprefix("#/components/schemas/") for ref in found}
    assert names - set(spec["components"]["schemas"]) == set()


def test_path_ids_are_bounded_to_bigint(spec: dict[str, Any]) -> None:
    for _, path, operation in _operations(spec):
        for parameter in operation.get("parameters", []):
            if parameter["in"] == "path" and parameter["schema"].get("type") == "integer":
                bounds = (parameter["schema"]["minimum"], parameter["schema"]["maximum"])
                assert bounds == (1, 2**63 - 1), (path, parameter["name"])


def test_links_lead_to_real_stations_alerts_and_rules(spec: dict[str, Any]) -> None:
    def links(path: str, method: str, status: str) -> dict[str, tuple[str, dict[str, str]]]:
        found = spec["paths"][path][method]["responses"][status]["links"]
        return {name: (link["operationRef"], link["parameters"]) for name, link in found.items()}

    assert links("/v1/stations", "get", "200")["plan_maintenance"] == (
        "#/paths/~1v1~1stations~1%7Bcode%7D~1maintenance/post",
        {"code": "$response.body#/items/0/code"},
    )
    assert links("/v1/alerts", "get", "200")["ack"] == (
        "#/paths/~1v1~1alerts~1%7Balert_id%7D~1ack/post",
        {"alert_id": "$response.body#/items/0/id"},
    )
    assert links("/v1/alerts/{alert_id}", "get", "200")["cap"] == (
        "#/paths/~1v1~1alerts~1%7Balert_id%7D.cap/get",
        {"alert_id": "$request.path.alert_id"},
    )
    # Every link names an operation of this document.
    for _, path, operation in _operations(spec):
        for response in operation["responses"].values():
            for link in response.get("links", {}).values():
                pointer = link["operationRef"].removeprefix("#/paths/")
                target, method = pointer.rsplit("/", 1)
                target = target.replace("%7B", "{").replace("%7D", "}")
                target = target.replace("~1", "/").replace("~0", "~")
                assert method in spec["paths"][target], (path, link)


async def test_a_method_the_path_does_not_take_is_405_naming_every_method_it_takes() -> None:
    app = create_app(Settings(database_url="postgresql://unused@localhost/none"))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://envlink") as client:
        readings = await client.options("/v1/readings")
        rule = await client.request("TRACE", "/v1/rules/no2_1h")
    assert (readings.status_code, readings.headers["Allow"]) == (405, "GET, POST")
    assert readings.json()["error"]["code"] == "method_not_allowed"
    assert (rule.status_code, rule.headers["Allow"]) == (405, "GET, PUT")


def test_the_signed_bulletin_link_documents_the_answers_it_gives(spec: dict[str, Any]) -> None:
    operation = spec["paths"]["/v1/reports/bulletin/signed"]["get"]
    assert operation.get("security") is None
    # Keyless: never 401, and no key's rate limit (429).
    assert sorted(operation["responses"]) == ["200", "400", "403", "404", "422", "503"]
    for status in ("400", "403", "404", "422", "503"):
        assert _error_schema(operation, status) == ERROR_BODY, status
    refused = operation["responses"]["403"]["description"]
    assert "bad_signature" in refused and "link_expired" in refused
    assert sorted(operation["responses"]["200"]["content"]) == ["application/zip", "text/html"]


@pytest.mark.parametrize(
    ("path", "models"),
    [
        ("/v1/reports/air", {"AirPeriodReport", "AirReportParts"}),
        ("/v1/reports/water", {"WaterPeriodReport"}),
        ("/v1/reports/bulletins", {"Page_StoredBulletinOut_"}),
        ("/v1/reports/bulletins/{month}", {"Bulletin"}),
    ],
)
def test_the_reports_answers_are_typed_objects(
    spec: dict[str, Any], path: str, models: set[str]
) -> None:
    schema = spec["paths"][path]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    refs = [schema] if "$ref" in schema else schema["anyOf"]
    assert {ref["$ref"].rsplit("/", 1)[1] for ref in refs} == models
    for name in models:
        component = spec["components"]["schemas"][name]
        assert component["type"] == "object" and component["properties"], name


def test_the_report_objects_have_their_fields_and_no_others(spec: dict[str, Any]) -> None:
    schemas = spec["components"]["schemas"]
    air = schemas["AirPeriodReport"]
    assert air["additionalProperties"] is False
    for field in (
        "rule_set", "valid_days", "category_days", "good_day_share", "exceedance_days",
        "heavy_pollution_days", "pollutants", "composite_index", "primary_pollutant_days",
        "primary_pollutant_shares", "last_year", "episodes",
    ):  # fmt: skip
        assert field in air["required"], field
    pollutant = schemas["PollutantFigures"]["properties"]
    assert {"statistic", "value", "valid_days", "limit", "exceedance_multiple"} <= set(pollutant)
    assert set(schemas["PollutantTable"]["required"]) == {"so2", "no2", "co", "o3", "pm10", "pm25"}
    last_year = schemas["AirLastYear"]["properties"]
    assert set(last_year) == {"as_published", "like_for_like", "changes"}
    shortfall = schemas["Shortfall"]["properties"]
    assert shortfall["status"] == {
        "type": "string",
        "const": "insufficient_data",
        "title": "Status",
    }
    section = schemas["SectionFigures"]
    assert section["additionalProperties"] is False
    assert {"items", "class", "target", "compliant", "exceedances", "cwqi"} <= set(
        section["properties"]
    )
    assert set(schemas["SectionExceedances"]["properties"]) == {"target", "class_iii"}
    water = schemas["WaterPeriodReport"]["properties"]
    assert {"sections", "sea_points", "group", "sea_area", "last_year"} <= set(water)
