"""/metrics, /readyz and request ids, through the real app on the session's database."""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Iterator
from datetime import timedelta

import httpx
import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families
from psycopg_pool import AsyncConnectionPool

from api.app import create_app
from core.logging import FORMAT, OneLineFormatter, install_request_ids
from core.settings import Settings
from store.keys import create_key
from store.migrate import available_migrations, migrate
from tests.integration.test_engine import T0, Feed, _air, _rule, _rules

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def _headers(pool: AsyncConnectionPool) -> dict[str, str]:
    async with pool.connection() as conn:
        _, plain = await create_key(conn, agency="gz_eeb", roles=["reader"])
    return {"Authorization": f"Bearer {plain}"}


async def _scrape(client: httpx.AsyncClient) -> Samples:
    answer = await client.get("/metrics")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain; version=")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(answer.text)
        for sample in family.samples
    }


def _only(samples: Samples, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {labels: value for (found, labels), value in samples.items() if found == name}


async def test_requests_are_counted_by_route_template_and_status(
    db: AsyncConnectionPool, client: httpx.AsyncClient
) -> None:
    headers = await _headers(db)
    for path in ("/v1/stations", "/v1/stations", "/v1/stations/gz-a-huangpu", "/v1/stations/x"):
        await client.get(path, headers=headers)
    await client.get("/v1/stations")  # no key: 401
    await client.get("/no/such/page")
    samples = await _scrape(client)
    # The scrape itself is counted once it has answered: not in its own output.
    assert _only(samples, "envlink_http_requests_total") == {
        (("method", "GET"), ("route", "/v1/stations"), ("status", "200")): 2.0,
        (("method", "GET"), ("route", "/v1/stations"), ("status", "401")): 1.0,
        (("method", "GET"), ("route", "/v1/stations/{code}"), ("status", "200")): 1.0,
        (("method", "GET"), ("route", "/v1/stations/{code}"), ("status", "404")): 1.0,
        (("method", "GET"), ("route", "unmatched"), ("status", "404")): 1.0,
    }
    counts = _only(samples, "envlink_http_request_duration_seconds_count")
    assert counts[(("method", "GET"), ("route", "/v1/stations"), ("status", "200"))] == 2.0
    assert sum(counts.values()) == 6.0
    again = await _scrape(client)
    metrics_route = (("method", "GET"), ("route", "/metrics"), ("status", "200"))
    assert _only(again, "envlink_http_requests_total")[metrics_route] == 1.0
    # Nothing holds a connection between requests; nobody waits for one.
    assert again[("envlink_db_pool_connections_in_use", ())] == 1.0  # the scrape's own
    assert again[("envlink_db_pool_requests_waiting", ())] == 0.0


async def test_readings_alert_transitions_and_outbox_depth_come_from_the_database(
    db: AsyncConnectionPool, client: httpx.AsyncClient
) -> None:
    await _rules(db, _rule("no2_instant"))
    feed = Feed(db)
    await feed.send(_air(250, T0), _air(30, T0, parameter="pm25", period_s=3600), at=T0)
    await feed.send(_air(250, T0), _air(31, T0, parameter="pm25", period_s=3600), at=T0)
    await feed.send(_air(20, T0 + timedelta(minutes=5)), at=T0 + timedelta(minutes=5))
    async with db.connection() as conn:
        await conn.execute(
            "INSERT INTO notification (agency_id, kind, group_key, channel, target, language,"
            " status, created_at, deadline_at, due_at)"
            " SELECT id, 'firing', 'g', 'webhook', 'http://127.0.0.1:9/', 'en', status,"
            " now(), now() + interval '1 hour', now()"
            " FROM agency, unnest(ARRAY['pending', 'pending', 'sent']) AS status"
            " WHERE code = 'gz_eeb'"
        )
    samples = await _scrape(client)
    assert samples[("envlink_database_up", ())] == 1.0
    assert _only(samples, "envlink_readings_total") == {
        (("outcome", "accepted"), ("source", "test")): 3.0,
        (("outcome", "duplicate"), ("source", "test")): 1.0,
        (("outcome", "rejected"), ("source", "test")): 0.0,
        (("outcome", "revised"), ("source", "test")): 1.0,
    }
    assert _only(samples, "envlink_alert_transitions_total") == {
        (("kind", "firing"),): 1.0,
        (("kind", "resolved"),): 1.0,
    }
    assert samples[("envlink_outbox_depth", ())] == 2.0


async def test_readyz_is_ready_on_a_current_database(client: httpx.AsyncClient) -> None:
    answer = await client.get("/readyz")
    assert (answer.status_code, answer.json()) == (
        200,
        {"status": "ready", "database": "ok", "migrations": "current"},
    )


async def test_readyz_is_503_while_migrations_are_behind(
    new_database: Callable[[], str], settings: Settings
) -> None:
    url = new_database()
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await migrate(conn)
        await conn.execute("DELETE FROM schema_migration WHERE version >= 33")
    async with AsyncConnectionPool(url, min_size=1, max_size=2, open=False) as pool:
        app = create_app(settings.model_copy(update={"database_url": url}), pool=pool)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://envlink") as client:
            behind = await client.get("/readyz")
            live = await client.get("/healthz")
    assert behind.status_code == 503
    assert behind.json()["error"]["code"] == "migrations_pending"
    lacking = ", ".join(
        f"{m.version:04d}_{m.name}" for m in available_migrations() if m.version >= 33
    )
    assert lacking.startswith("0033_rate_limits")
    assert behind.json()["error"]["message"] == (
        f"the database lacks migrations {lacking}: run `envlink migrate`"
    )
    assert live.status_code == 200  # liveness does not care


@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    """The log as EnvLink's handler writes it, for the test's time."""
    install_request_ids()
    written = io.StringIO()
    handler = logging.StreamHandler(written)
    handler.setFormatter(OneLineFormatter(FORMAT))
    logger = logging.getLogger("api")
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    yield written
    logger.removeHandler(handler)
    logger.setLevel(level)


async def test_a_request_id_is_echoed_and_named_in_the_requests_log_lines(
    db: AsyncConnectionPool, settings: Settings, log_lines: io.StringIO
) -> None:
    app = create_app(settings, pool=db)

    @app.get("/boom")
    async def boom() -> None:
        logging.getLogger("api.test").info("about to fail")
        raise RuntimeError("boom")

    # Starlette re-raises an unhandled error after answering 500, for the server to log.
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://envlink") as client:
        given = await client.get("/healthz", headers={"X-Request-ID": "probe-7.a:b_c"})
        made = await client.get("/healthz")
        replaced = [
            await client.get("/healthz", headers={"X-Request-ID": unsafe})
            for unsafe in ("a b", "x" * 129, "a\\nb", "é".encode())
        ]
        failed = await client.get("/boom", headers={"X-Request-ID": "req-42"})
        samples = await _scrape(client)
    assert given.headers["X-Request-ID"] == "probe-7.a:b_c"
    assert len(made.headers["X-Request-ID"]) == 32
    assert [len(a.headers["X-Request-ID"]) for a in replaced] == [32] * 4
    assert (failed.status_code, failed.headers["X-Request-ID"]) == (500, "req-42")
    route = (("method", "GET"), ("route", "/boom"), ("status", "500"))
    assert _only(samples, "envlink_http_requests_total")[route] == 1.0
    lines = log_lines.getvalue().splitlines()
    assert [line.split(" ", 3)[3] for line in lines if not line.startswith("  ")] == [
        "api.test: about to fail [request req-42]",
        "api.errors: unhandled error on GET /boom [request req-42]",
    ]
