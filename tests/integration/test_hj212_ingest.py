"""The simulator speaking HJ 212 to the real server: what arrives is what the direct path stores."""

from __future__ import annotations

import socket
from datetime import UTC, date, datetime

from psycopg_pool import AsyncConnectionPool

from ingest.pipeline import Pipeline
from ingest.sources.hj212.client import Hj212Fleet
from ingest.sources.hj212.server import Hj212Server
from ingest.sources.simulator import SimulatorJob, simulated_history
from store.sources import source_statuses

NOW = datetime(2026, 11, 26, 4, 0, 5, tzinfo=UTC)
HISTORY_HOURS = 2


async def _counts(db: AsyncConnectionPool) -> dict[str, tuple[int, int, int, int]]:
    async with db.connection() as conn:
        return {
            s.code: (s.accepted, s.duplicate, s.revised, s.rejected)
            for s in await source_statuses(conn)
        }


async def test_simulator_delivers_over_hj212_exactly_what_it_would_deliver_directly(
    db: AsyncConnectionPool,
) -> None:
    pipeline = Pipeline(db, earliest=date(2000, 1, 1), clock=lambda: NOW)
    server = Hj212Server(pipeline, host="127.0.0.1", port=0)
    await server.start()
    fleet = Hj212Fleet("127.0.0.1", server.port, history=simulated_history)
    try:
        job = SimulatorJob(
            pipeline, interval_s=10, history_hours=HISTORY_HOURS, clock=lambda: NOW, hj212=fleet
        )
        first = await job.run()
        again = await job.run()
    finally:
        await fleet.close()
        await server.stop()
    catalogue = await pipeline.catalogue()
    codes = {s.id: s.code for s in catalogue.stations.values()}
    without_code = sorted(
        (codes[station_id], catalogue.parameters_by_id[parameter_id].code)
        for station_id, parameter_id in catalogue.station_parameters
        if catalogue.parameters_by_id[parameter_id].hj212_code is None
    )
    # These have no HJ 212 code (hj212: null), so only they go through the pipeline directly.
    assert without_code == [
        ("dg-w-humen", "salinity"),
        ("dg-w-shatian", "salinity"),
        ("gz-w-lianhuashan", "salinity"),
        ("gz-w-nansha", "cod_mn_alkaline"),
        ("gz-w-nansha", "din"),
        ("gz-w-nansha", "po4p"),
        ("gz-w-nansha", "salinity"),
    ]
    uncoded = len(without_code)
    coded = len(catalogue.station_parameters) - uncoded
    rounds = 1 + HISTORY_HOURS
    # Every station sends one 2011 packet and two 2061 packets, then one 2011 again.
    stations = len(catalogue.stations)
    assert (fleet.uploads, fleet.answered, server.stats.replies) == (stations * 4,) * 3
    assert first.summary == {"accepted": uncoded * rounds, "duplicate": 0, "revised": 0,
                             "rejected": 0}  # fmt: skip
    assert again.summary == {"accepted": 0, "duplicate": uncoded, "revised": 0, "rejected": 0}
    assert await _counts(db) == {
        "hj212": (coded * rounds, coded, 0, 0),
        "simulator": (uncoded * rounds, uncoded, 0, 0),
    }
    # The same round delivered straight through the pipeline meets only duplicates: same keys,
    # same values (units converted alike), same QC — nothing was lost or bent on the wire.
    direct = SimulatorJob(pipeline, interval_s=10, history_hours=HISTORY_HOURS, clock=lambda: NOW)
    replay = await direct.run()
    assert replay.summary == {
        "accepted": 0,
        "duplicate": len(catalogue.station_parameters) * rounds,
        "revised": 0,
        "rejected": 0,
    }


async def test_simulator_delivers_directly_when_the_hj212_server_is_down(
    db: AsyncConnectionPool,
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    pipeline = Pipeline(db, earliest=date(2000, 1, 1), clock=lambda: NOW)
    fleet = Hj212Fleet("127.0.0.1", closed_port, history=simulated_history)
    job = SimulatorJob(pipeline, interval_s=10, history_hours=0, clock=lambda: NOW, hj212=fleet)
    result = await job.run()
    await fleet.close()
    pairs = len((await pipeline.catalogue()).station_parameters)
    assert result.summary == {"accepted": pairs, "duplicate": 0, "revised": 0, "rejected": 0}
    assert fleet.uploads == 0
    assert await _counts(db) == {"simulator": (pairs, 0, 0, 0)}
