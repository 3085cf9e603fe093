"""The catalogue read model over real PostgreSQL: one snapshot, one cache, one invalidation.

A seed that changes the catalogue announces it on CATALOGUE_CHANNEL when it commits; every
process's CatalogueCache hears it on its Listener and reads the catalogue again. A cache whose
read fails keeps serving the last snapshot it read.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import psycopg
import pytest
from psycopg import sql
from psycopg_pool import AsyncConnectionPool, PoolClosed

from schemas.catalogue import Catalogue, Hj212Def, StationParameterDef, load_catalogue
from store.catalogue import CatalogueCache, CatalogueSnapshot, seed_catalogue
from store.coordination import CATALOGUE_CHANNEL
from store.listen import Listener
from store.migrate import migrate
from tests.conftest import CONFIG_DIR

pytestmark = pytest.mark.integration

CONFIG = load_catalogue(CONFIG_DIR)


async def _fresh(new_database: Callable[[], str]) -> str:
    """A new database, migrated and seeded with config/."""
    url = new_database()
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await migrate(conn)
        async with conn.transaction():
            await seed_catalogue(conn, CONFIG)
    return url


@pytest.fixture(scope="module")
async def url(new_database: Callable[[], str]) -> str:
    """This module's own database: its tests add stations the other tests must not see."""
    return await _fresh(new_database)


@pytest.fixture
async def own_pool(url: str) -> AsyncIterator[AsyncConnectionPool]:
    async with AsyncConnectionPool(url, min_size=1, max_size=2, open=False) as opened:
        yield opened


def _with_station(code: str, *, mn: str | None = None) -> Catalogue:
    """config/'s catalogue and one more station: a copy of Huangpu's air station."""
    huangpu = next(s for s in CONFIG.stations if s.code == "gz-a-huangpu")
    station = huangpu.model_copy(
        update={
            "code": code,
            "name": code,
            "city": "dongguan",
            "hj212": None if mn is None else Hj212Def(mn=mn),
        }
    )
    links = {"pm25": StationParameterDef(unit="mg/m3", interval_s=60)}
    return CONFIG.model_copy(
        update={
            "stations": [*CONFIG.stations, station],
            "station_parameters": {**CONFIG.station_parameters, code: links},
        }
    )


async def _seed(url: str, catalogue: Catalogue) -> None:
    async with await psycopg.AsyncConnection.connect(url) as conn, conn.transaction():
        await seed_catalogue(conn, catalogue)


async def _until(cache: CatalogueCache, code: str, within_s: float) -> float:
    """Seconds until the cache's snapshot holds station `code` (fails after `within_s`)."""
    started = time.perf_counter()
    while code not in (await cache.get()).stations:
        assert time.perf_counter() - started < within_s, f"{code} not seen within {within_s} s"
        await asyncio.sleep(0.005)
    return time.perf_counter() - started


async def test_the_snapshot_indexes_the_whole_catalogue(own_pool: AsyncConnectionPool) -> None:
    snapshot = await CatalogueCache(own_pool).get()
    assert sorted(snapshot.stations) == sorted(s.code for s in CONFIG.stations)
    assert sorted(s.code for s in snapshot.stations_by_id.values()) == sorted(snapshot.stations)
    assert all(snapshot.stations_by_id[s.id] is s for s in snapshot.stations.values())
    assert {mn: s.code for mn, s in snapshot.stations_by_mn.items()} == {
        s.hj212.mn: s.code for s in CONFIG.stations if s.hj212
    }
    assert sorted(snapshot.parameters) == sorted(p.code for p in CONFIG.parameters)
    assert {c: p.code for c, p in snapshot.parameters_by_hj212.items()} == {
        p.hj212: p.code for p in CONFIG.parameters if p.hj212
    }
    assert snapshot.decimals == {p.code: p.decimals for p in CONFIG.parameters}
    assert snapshot.parameter_id("pm25") == snapshot.parameters["pm25"].id
    assert snapshot.parameter_id("no-such-parameter") is None
    assert snapshot.cities == {s.code: s.city for s in CONFIG.stations}
    assert sorted(a.code for a in snapshot.agencies.values()) == sorted(
        a.code for a in CONFIG.agencies
    )
    assert snapshot.agency_ids == sorted(snapshot.agencies)
    assert {r.code: r.downstream for r in snapshot.reaches.values()} == {
        r.code: tuple(r.downstream) for r in CONFIG.reaches
    }
    for city in ("guangzhou", "dongguan"):
        placed = [(s.lat, s.lon) for s in CONFIG.stations if s.city == city]
        mean = (sum(p[0] for p in placed) / len(placed), sum(p[1] for p in placed) / len(placed))
        assert snapshot.city_centres[city] == pytest.approx(mean, abs=1e-12)
    # Every configured station × parameter, with the unit the station sends and its interval.
    assert len(snapshot.station_parameters) == sum(
        len(links) for links in CONFIG.station_parameters.values()
    )
    for code, links in CONFIG.station_parameters.items():
        station = snapshot.stations[code]
        measured = snapshot.parameters_of(station)
        assert {p.code: (s.unit, s.interval_s) for p, s in measured} == {
            parameter: (link.unit, link.interval_s) for parameter, link in links.items()
        }
        assert [s.parameter_id for _, s in measured] == sorted(s.parameter_id for _, s in measured)
        assert snapshot.series_by_station.get(station.id, []) == [s for _, s in measured]
    humen = snapshot.stations["dg-w-humen"]
    assert [s.parameter for s in snapshot.station_series(humen.id, ["tp", "do", "pm25"])] == [
        "do",
        "tp",
    ]


async def test_a_seed_reaches_two_listening_caches_at_once(url: str) -> None:
    listeners = [Listener(url, name=f"catalogue-{n}") for n in (1, 2)]
    caches = []
    async with AsyncConnectionPool(url, min_size=1, max_size=2, open=False) as pool:
        for listener in listeners:
            cache = CatalogueCache(pool)
            cache.listen(listener)
            await listener.start()
            await listener.listening(CATALOGUE_CHANNEL)
            caches.append(cache)
        try:
            for cache in caches:
                assert "dg-a-new-1" not in (await cache.get()).stations
            await _seed(url, _with_station("dg-a-new-1", mn="NEW0000000001"))
            for cache in caches:
                assert await _until(cache, "dg-a-new-1", within_s=1.0) < 1.0
                snapshot = await cache.get()
                added = snapshot.stations["dg-a-new-1"]
                assert snapshot.stations_by_mn["NEW0000000001"] is added
                assert snapshot.cities["dg-a-new-1"] == "dongguan"
                assert [(p.code, s.unit) for p, s in snapshot.parameters_of(added)] == [
                    ("pm25", "mg/m3")
                ]
                # Read once at the start and once for the seed: served from memory otherwise.
                assert cache.reads == 2
        finally:
            for listener in listeners:
                await listener.stop()


async def test_an_unchanged_seed_announces_nothing(url: str) -> None:
    await _seed(url, CONFIG)  # as configured again (other tests add stations and links)
    heard: list[str | None] = []
    sentinel = asyncio.Event()

    def hear(payload: str | None) -> None:
        heard.append(payload)
        if payload == "sentinel":
            sentinel.set()

    listener = Listener(url, name="catalogue-quiet")
    listener.subscribe(CATALOGUE_CHANNEL, hear)
    await listener.start()
    try:
        await listener.listening(CATALOGUE_CHANNEL)
        async with await psycopg.AsyncConnection.connect(url) as conn:
            async with conn.transaction():
                report = await seed_catalogue(conn, CONFIG)
            assert not any(report.inserted.values()) and not any(report.updated.values())
            async with conn.transaction():
                # Delivered after whatever the seed sent, had it sent anything.
                await conn.execute("SELECT pg_notify(%s, 'sentinel')", [CATALOGUE_CHANNEL])
        await asyncio.wait_for(sentinel.wait(), timeout=1.0)
        assert heard == ["sentinel"]
    finally:
        await listener.stop()


async def test_a_cache_not_listening_reads_again_when_invalidated_or_aged(
    url: str, own_pool: AsyncConnectionPool
) -> None:
    cache = CatalogueCache(own_pool)
    aging = CatalogueCache(own_pool, max_age_s=0.05)
    first = await cache.get()
    await aging.get()
    await _seed(url, _with_station("dg-a-new-2"))
    assert await cache.get() is first  # nobody told it
    assert cache.reads == 1
    cache.invalidate()
    assert "dg-a-new-2" in (await cache.get()).stations
    assert cache.reads == 2
    await asyncio.sleep(0.1)
    assert "dg-a-new-2" in (await aging.get()).stations
    assert aging.reads == 2


async def test_the_last_snapshot_is_served_while_the_database_is_away(
    new_database: Callable[[], str], server_url: str
) -> None:
    url = await _fresh(new_database)
    name = psycopg.conninfo.conninfo_to_dict(url)["dbname"]
    assert isinstance(name, str)
    # A real outage of this database: no new connections, and those open are ended.
    away = sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS {}")
    async with (
        await psycopg.AsyncConnection.connect(server_url, autocommit=True) as admin,
        AsyncConnectionPool(url, min_size=1, max_size=1, open=False) as pool,
    ):
        cache = CatalogueCache(pool)
        last = await cache.get()
        await admin.execute(away.format(sql.Identifier(name), sql.SQL("false")))
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = %s AND pid <> pg_backend_pid()",
            [name],
        )
        cache.invalidate()
        started = time.perf_counter()
        assert await cache.get() is last  # the read failed: not raised
        assert time.perf_counter() - started < CatalogueCache.READ_TIMEOUT_S + 0.5
        # Within RETRY_S it does not even try again.
        started = time.perf_counter()
        assert await cache.get() is last
        assert time.perf_counter() - started < 0.05
        assert cache.reads == 1
        await admin.execute(away.format(sql.Identifier(name), sql.SQL("true")))
        # Back: the next read after RETRY_S succeeds.
        async with asyncio.timeout(CatalogueCache.RETRY_S + 5.0):
            while cache.reads == 1:
                await asyncio.sleep(0.05)
                await cache.get()
        assert await cache.get() is not last
        assert sorted((await cache.get()).stations) == sorted(last.stations)


async def test_only_the_first_read_raises(url: str) -> None:
    pool = AsyncConnectionPool(url, min_size=1, max_size=1, open=False)
    await pool.open()
    held = CatalogueCache(pool)
    snapshot = await held.get()
    await pool.close()
    held.invalidate()
    assert await held.get() is snapshot
    with pytest.raises(PoolClosed):
        await CatalogueCache(pool).get()


def test_a_snapshot_of_nothing_is_empty() -> None:
    empty = CatalogueSnapshot.of([], [], [], [], [])
    assert (empty.stations, empty.city_centres, empty.agency_ids) == ({}, {}, [])
