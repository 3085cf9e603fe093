"""The alert engine over real PostgreSQL, fed through the real ingest pipeline and alert loop.

Readings go in through ingest/pipeline.py (which marks the series dirty), the alert loop
(alerts/loop.py) claims them, rolls them up and calls the engine; the sweep is called as the
loop calls it. Every test writes the rules it needs, so the joint rule set cannot mask a case.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any

import pytest
from psycopg_pool import AsyncConnectionPool

from alerts import engine
from core.timeutil import CST
from ingest.pipeline import Pipeline, SourceRef
from schemas.common import QC
from schemas.readings import ReadingIn, Rejection
from schemas.rules import RuleDefinition
from store.alerts import create_maintenance_window
from store.catalogue import read_catalogue
from store.rules import write_rule
from tests.conftest import worker_loop

T0 = datetime(2026, 11, 20, 8, tzinfo=CST)
FEED = SourceRef(code="test", kind="test")
UNITS = {
    "no2": "ug/m3",
    "so2": "ug/m3",
    "co": "mg/m3",
    "o3": "ug/m3",
    "pm10": "ug/m3",
    "pm25": "ug/m3",
    "nh3n": "mg/L",
    "do": "mg/L",
    "conductivity": "uS/cm",
    "codmn": "mg/L",
    "tp": "mg/L",
    "ph": "1",
}
HOUR = timedelta(hours=1)
WARNING_200 = [
    {
        "standard": "GB 3095-2026",
        "levels": [
            {"severity": "warning", "trigger": 200, "clear": 180, "basis": "GB 3095-2026 1h"},
            {"severity": "critical", "trigger": 400, "clear": 360, "basis": "test: 2x the limit"},
        ],
    }
]


def _rule(rule_id: str, **fields: Any) -> RuleDefinition:
    definition: dict[str, Any] = {
        "id": rule_id,
        "name": {"en": rule_id, "zh": rule_id},
        "kind": "threshold",
        "parameter": "no2",
        "unit": "ug/m3",
        "statistic": "instant",
        "scope": {"stations": ["gz-a-huangpu"]},
        "ladders": WARNING_200,
    }
    definition.update(fields)
    return RuleDefinition.model_validate(definition)


async def _rules(pool: AsyncConnectionPool, *rules: RuleDefinition) -> None:
    async with pool.connection() as conn, conn.transaction():
        for rule in rules:
            await write_rule(conn, rule, via="config", by="test", at=T0)


class Feed:
    """Ingest readings and run the alert loop as of a given wall-clock time."""

    def __init__(self, pool: AsyncConnectionPool) -> None:
        self.pool = pool
        self.now = T0

    async def send(self, *items: ReadingIn, at: datetime | None = None) -> dict[str, int]:
        if at is not None:
            self.now = at
        pipeline = Pipeline(self.pool, earliest=date(2000, 1, 1), clock=lambda: self.now)
        batch: list[ReadingIn | Rejection] = list(items)
        result = await pipeline.ingest(batch, source=FEED)
        assert sum(result.summary.values()) == len(items)
        # A new loop object every time: nothing may live in memory between rounds.
        await worker_loop(self.pool, pipeline, clock=lambda: self.now).drain()
        return result.summary

    async def sweep(self, at: datetime) -> None:
        self.now = at
        async with self.pool.connection() as conn, conn.transaction():
            await engine.sweep(conn, catalogue=await read_catalogue(conn), now=at)


def _air(
    value: float,
    at: datetime,
    *,
    parameter: str = "no2",
    station: str = "gz-a-huangpu",
    qc: QC = QC.VALID,
    period_s: int = 0,
) -> ReadingIn:
    return ReadingIn(
        station=station,
        parameter=parameter,
        time=at,
        value=value,
        unit=UNITS[parameter],
        qc=qc,
        period_s=period_s,  # type: ignore[arg-type]
    )


async def _query(pool: AsyncConnectionPool, text: str, *args: Any) -> list[tuple[Any, ...]]:
    async with pool.connection() as conn:
        cur = await conn.execute(text.encode(), list(args))
        return await cur.fetchall()


async def _alerts(pool: AsyncConnectionPool) -> list[tuple[Any, ...]]:
    """(id, rule, station, city, state, severity, value, trigger_time) by id."""
    return await _query(
        pool,
        "SELECT a.id, a.rule_id, s.code, a.city, a.state, a.severity, a.value, a.trigger_time"
        " FROM alert a LEFT JOIN station s ON s.id = a.station_id ORDER BY a.id",
    )


async def _events(pool: AsyncConnectionPool) -> list[tuple[Any, ...]]:
    """(alert id, kind, state, severity, value) in event order."""
    return await _query(
        pool, "SELECT alert_id, kind, state, severity, value FROM alert_event ORDER BY id"
    )


async def test_oscillating_value_fires_once_then_resolves(db: AsyncConnectionPool) -> None:
    await _rules(db, _rule("no2_instant"))
    feed = Feed(db)
    for hour, value in enumerate([205, 195, 205, 195, 205, 170]):
        await feed.send(_air(value, T0 + hour * HOUR), at=T0 + hour * HOUR + timedelta(minutes=5))
    assert await _events(db) == [
        (1, "firing", "firing", "warning", 205),
        (1, "resolved", "resolved", "warning", 170),
    ]
    rows = await _query(
        db,
        "SELECT rule_version, kind, trigger_time, clear_point_at, fired_at, resolved_at,"
        " array_length(addressed_to, 1), details->>'peak', details->>'standard' FROM alert",
    )
    assert rows == [
        (
            1,
            "threshold",
            T0,
            T0 + 5 * HOUR,
            T0 + timedelta(minutes=5),
            T0 + 5 * HOUR + timedelta(minutes=5),
            3,  # both cities' agencies and the joint office
            "205.0",
            "GB 3095-2026",
        )
    ]


async def test_an_alert_resolved_and_a_new_one_opened_in_one_round(
    db: AsyncConnectionPool,
) -> None:
    # A backlog (a worker back after a while) can close the subject's open alert and open its
    # next one in the same round: the closing is written before the opening, which the one open
    # alert per subject index would refuse otherwise.
    await _rules(db, _rule("no2_instant"))
    feed = Feed(db)
    await feed.send(_air(205, T0), at=T0 + timedelta(minutes=5))
    await feed.send(
        _air(170, T0 + HOUR), _air(205, T0 + 2 * HOUR), at=T0 + 2 * HOUR + timedelta(minutes=5)
    )
    assert await _events(db) == [
        (1, "firing", "firing", "warning", 205),
        (1, "resolved", "resolved", "warning", 170),
        (2, "firing", "firing", "warning", 205),
    ]
    assert [(a[0], a[4], a[7]) for a in await _alerts(db)] == [
        (1, "resolved", T0),
        (2, "firing", T0 + 2 * HOUR),
    ]


async def test_escalation_and_deescalation_on_the_same_alert(db: AsyncConnectionPool) -> None:
    await _rules(db, _rule("no2_instant"))
    feed = Feed(db)
    for hour, value in enumerate([250, 450, 380, 350, 150]):
        await feed.send(_air(value, T0 + hour * HOUR), at=T0 + hour * HOUR)
    assert await _events(db) == [
        (1, "firing", "firing", "warning", 250),
        (1, "escalated", "firing", "critical", 450),
        (1, "deescalated", "firing", "warning", 350),
        (1, "resolved", "resolved", "warning", 150),
    ]
    assert len(await _alerts(db)) == 1


async def test_for_duration_survives_a_restart(db: AsyncConnectionPool) -> None:
    await _rules(db, _rule("no2_for", for_s=1800))
    feed = Feed(db)
    await feed.send(_air(250, T0), at=T0 + timedelta(minutes=1))
    assert [row[4] for row in await _alerts(db)] == ["pending"]
    # The worker restarts: new loop and engine calls, same database.
    await feed.sweep(T0 + timedelta(minutes=29))
    assert [row[4] for row in await _alerts(db)] == ["pending"]
    await feed.sweep(T0 + timedelta(minutes=30))
    await feed.sweep(T0 + timedelta(minutes=31))
    # A re-delivery (duplicate) and the same value again change nothing.
    assert await feed.send(_air(250, T0), at=T0 + timedelta(minutes=32)) == {
        "accepted": 0,
        "duplicate": 1,
        "revised": 0,
        "rejected": 0,
    }
    await feed.send(_air(260, T0 + HOUR), at=T0 + HOUR)
    assert await _events(db) == [
        (1, "pending", "pending", "warning", 250),
        (1, "firing", "firing", "warning", 250),
    ]
    fired = await _query(db, "SELECT pending_since, fired_at FROM alert")
    assert fired == [(T0, T0 + timedelta(minutes=30))]


async def test_pending_that_clears_before_its_for_is_cancelled(db: AsyncConnectionPool) -> None:
    await _rules(db, _rule("no2_for", for_s=7200))
    feed = Feed(db)
    await feed.send(_air(250, T0), at=T0)
    await feed.send(_air(120, T0 + HOUR), at=T0 + HOUR)
    await feed.sweep(T0 + 3 * HOUR)
    assert await _events(db) == [
        (1, "pending", "pending", "warning", 250),
        (1, "cancelled", "resolved", "warning", 120),
    ]


async def test_revision_that_turns_a_resolved_alert_back_opens_a_new_alert(
    db: AsyncConnectionPool,
) -> None:
    await _rules(db, _rule("no2_instant"))
    feed = Feed(db)
    await feed.send(_air(250, T0), at=T0)
    await feed.send(_air(150, T0 + HOUR), at=T0 + HOUR)
    # The value that resolved it was provisional; the audited value is still over the limit.
    assert (await feed.send(_air(240, T0 + HOUR), at=T0 + 2 * HOUR))["revised"] == 1
    assert await _alerts(db) == [
        (1, "no2_instant", "gz-a-huangpu", None, "resolved", "warning", 150, T0),
        (2, "no2_instant", "gz-a-huangpu", None, "firing", "warning", 240, T0 + HOUR),
    ]
    assert await _events(db) == [
        (1, "firing", "firing", "warning", 250),
        (1, "resolved", "resolved", "warning", 150),
        (2, "firing", "firing", "warning", 240),
    ]


async def test_late_data_fires_an_alert_for_a_past_window(db: AsyncConnectionPool) -> None:
    await _rules(db, _rule("no2_instant"))
    feed = Feed(db)
    await feed.send(_air(90, T0 + HOUR), _air(95, T0 + 2 * HOUR), at=T0 + 2 * HOUR)
    assert await _alerts(db) == []
    # The 08:00 value arrives last (a backfill after a link outage) and was over the limit.
    await feed.send(_air(230, T0), at=T0 + 3 * HOUR)
    assert await _alerts(db) == [
        (1, "no2_instant", "gz-a-huangpu", None, "resolved", "warning", 90, T0)
    ]
    assert await _events(db) == [
        (1, "firing", "firing", "warning", 230),
        (1, "resolved", "resolved", "warning", 90),
    ]
    # Late data inside that resolved episode opens nothing more.
    await feed.send(_air(260, T0 + timedelta(minutes=30)), at=T0 + 4 * HOUR)
    assert len(await _alerts(db)) == 1


async def test_qc_suspect_data_never_fires(db: AsyncConnectionPool) -> None:
    await _rules(db, _rule("no2_instant"))
    feed = Feed(db)
    await feed.send(
        _air(900, T0, qc=QC.SUSPECT),
        _air(950, T0 + HOUR, qc=QC.MAINTENANCE),
        _air(990, T0 + 2 * HOUR, qc=QC.CALIBRATION),
        at=T0 + 2 * HOUR,
    )
    assert await _alerts(db) == []


async def test_reflagged_outlier_retracts_its_alert(db: AsyncConnectionPool) -> None:
    await _rules(db, _rule("no2_instant"))
    feed = Feed(db)
    await feed.send(_air(40, T0), at=T0)
    await feed.send(_air(600, T0 + HOUR), at=T0 + HOUR)
    assert [row[4:6] for row in await _alerts(db)] == [("firing", "critical")]
    # The outlier is re-flagged suspect through a revision (as history QC does).
    await feed.send(_air(600, T0 + HOUR, qc=QC.SUSPECT), at=T0 + HOUR + timedelta(minutes=10))
    assert [row[4] for row in await _alerts(db)] == ["retracted"]
    assert await _events(db) == [
        (1, "firing", "firing", "critical", 600),
        (1, "retracted", "retracted", "critical", 600),
    ]


async def test_history_qc_spike_is_retracted_but_a_sustained_change_is_not(
    db: AsyncConnectionPool,
) -> None:
    await _rules(
        db,
        _rule("no2_huangpu"),
        _rule("no2_zengcheng", scope={"stations": ["gz-a-zengcheng"]}),
    )
    feed = Feed(db)
    spike = [38, 42, 40, 41, 39, 600, 40, 42, 41]
    step = [38, 42, 40, 41, 39, 600, 610, 590, 605]
    for hour, (a, b) in enumerate(zip(spike, step, strict=True)):
        at = T0 + hour * HOUR
        await feed.send(
            _air(a, at), _air(b, at, station="gz-a-zengcheng"), at=at + timedelta(minutes=5)
        )
    states = {row[1]: row[4] for row in await _alerts(db)}
    assert states == {"no2_huangpu": "retracted", "no2_zengcheng": "firing"}
    flagged = await _query(
        db,
        "SELECT s.code, r.time FROM reading r JOIN station s ON s.id = r.station_id"
        " WHERE r.qc = %s ORDER BY 1, 2",
        QC.SUSPECT.code,
    )
    assert flagged == [("gz-a-huangpu", T0 + 5 * HOUR)]


async def test_hourly_mean_rule_uses_the_rollup_with_its_validity_minimum(
    db: AsyncConnectionPool,
) -> None:
    await _rules(db, _rule("no2_1h", statistic="mean_1h"))
    feed = Feed(db)
    # 44 one-minute samples: under 45 minutes of sampling, no hourly mean, no alert.
    minutes = [_air(300, T0 + timedelta(minutes=m), period_s=60) for m in range(44)]
    await feed.send(*minutes, at=T0 + HOUR)
    assert await _alerts(db) == []
    # The station's own hourly mean for the next hour is authoritative.
    await feed.send(_air(260, T0 + HOUR, period_s=3600), at=T0 + 2 * HOUR)
    assert await _alerts(db) == [
        (1, "no2_1h", "gz-a-huangpu", None, "firing", "warning", 260, T0 + HOUR)
    ]


async def test_maintenance_window_silences_its_data_and_retracts_what_it_raised(
    db: AsyncConnectionPool,
) -> None:
    await _rules(db, _rule("no2_instant"))
    feed = Feed(db)
    station_id = (await _query(db, "SELECT id FROM station WHERE code = 'gz-a-huangpu'"))[0][0]
    async with db.connection() as conn, conn.transaction():
        await create_maintenance_window(
            conn,
            station_id=station_id,
            starts_at=T0,
            ends_at=T0 + 2 * HOUR,
            reason="analyser calibration",
            created_by="gz_eeb:key1",
            at=T0,
        )
    await feed.sweep(T0)
    await feed.send(_air(500, T0 + HOUR), at=T0 + HOUR)
    assert await _alerts(db) == []
    await feed.send(_air(240, T0 + 2 * HOUR), at=T0 + 2 * HOUR)
    assert [row[4] for row in await _alerts(db)] == ["firing"]
    # A window recorded afterwards for work that had already happened retracts that alert.
    async with db.connection() as conn, conn.transaction():
        await create_maintenance_window(
            conn,
            station_id=station_id,
            starts_at=T0 + 2 * HOUR,
            ends_at=T0 + 3 * HOUR,
            reason="unplanned repair",
            created_by="gz_eeb:key1",
            at=T0 + 3 * HOUR,
        )
    await feed.sweep(T0 + 3 * HOUR)
    assert [row[4] for row in await _alerts(db)] == ["retracted"]
    applied = await _query(db, "SELECT applied_at, closed_at FROM maintenance_window ORDER BY id")
    assert applied == [(T0, T0 + 3 * HOUR), (T0 + 3 * HOUR, T0 + 3 * HOUR)]


async def test_propagation_pre_alerts_the_downstream_agency_with_its_eta(
    db: AsyncConnectionPool,
) -> None:
    water = {
        "standard": "GB 3838-2002",
        "levels": [
            {"severity": "warning", "trigger": 1.5, "clear": 1.35, "basis": "GB 3838-2002 IV"},
            {"severity": "critical", "trigger": 2.0, "clear": 1.8, "basis": "GB 3838-2002 V"},
        ],
    }
    await _rules(
        db,
        _rule(
            "nh3n_high", parameter="nh3n", unit="mg/L", scope={"medium": "water"}, ladders=[water]
        ),
        RuleDefinition.model_validate(
            {
                "id": "river_propagation",
                "name": {"en": "p", "zh": "p"},
                "kind": "propagation",
                "propagation": {
                    "from_rules": ["nh3n_high"],
                    "min_severity": "warning",
                    "pre_alert_severity": {"warning": "advisory", "critical": "warning"},
                    "max_eta_s": 20000,
                    "basis": "joint agreement",
                },
            }
        ),
    )
    feed = Feed(db)
    reading = ReadingIn(station="dg-w-zhongtang", parameter="nh3n", time=T0, value=1.7, unit="mg/L")
    await feed.send(reading, at=T0 + timedelta(minutes=5))
    rows = await _query(
        db,
        "SELECT a.id, a.rule_id, s.code, a.kind, a.state, a.severity, a.source_alert_id,"
        " array(SELECT g.code FROM agency g WHERE g.id = ANY(a.addressed_to) ORDER BY g.code),"
        " (a.details->>'eta_s')::int, a.details->>'expected_at', a.details->>'source_station',"
        " a.details->>'distance_km'"
        " FROM alert a JOIN station s ON s.id = a.station_id ORDER BY a.id",
    )
    # Zhongtang (Dongguan) -> Xintang (Guangzhou): 6 km at 0.5 m/s = 12000 s, within 20000 s.
    assert rows == [
        (
            1,
            "nh3n_high",
            "dg-w-zhongtang",
            "threshold",
            "firing",
            "warning",
            None,
            ["dg_eeb", "gz_eeb", "joint_office"],
            None,
            None,
            None,
            None,
        ),
        (
            2,
            "river_propagation",
            "gz-w-xintang",
            "propagation",
            "firing",
            "advisory",
            1,
            ["gz_eeb"],
            12000,
            (T0 + timedelta(seconds=12000)).isoformat(),
            "dg-w-zhongtang",
            "6.0",
        ),
    ]
    # The source escalates: so does the pre-alert; then it resolves: so does the pre-alert.
    await feed.send(reading.model_copy(update={"time": T0 + HOUR, "value": 2.4}), at=T0 + HOUR)
    await feed.send(
        reading.model_copy(update={"time": T0 + 2 * HOUR, "value": 0.4}), at=T0 + 2 * HOUR
    )
    assert await _events(db) == [
        (1, "firing", "firing", "warning", 1.7),
        (2, "firing", "firing", "advisory", 1.7),
        (1, "escalated", "firing", "critical", 2.4),
        (2, "escalated", "firing", "warning", 1.7),
        (1, "resolved", "resolved", "critical", 0.4),
        (2, "resolved", "resolved", "warning", 1.7),
    ]


@pytest.mark.parametrize(
    ("ammonia", "handed_over"),
    [
        # At the same level the pre-alert changes source without a word to anyone.
        (1.7, []),
        # From a critical source to a warning one: the pre-alert deescalates with it.
        (2.4, [(2, "deescalated", "firing", "advisory", 2.4)]),
    ],
)
async def test_a_pre_alert_passes_to_a_source_still_firing_when_its_own_ends(
    db: AsyncConnectionPool, ammonia: float, handed_over: list[tuple[Any, ...]]
) -> None:
    def water(warning: float, critical: float) -> list[dict[str, Any]]:
        return [
            {
                "standard": "GB 3838-2002",
                "levels": [
                    {
                        "severity": "warning",
                        "trigger": warning,
                        "clear": warning * 0.9,
                        "basis": "GB 3838-2002 IV",
                    },
                    {
                        "severity": "critical",
                        "trigger": critical,
                        "clear": critical * 0.9,
                        "basis": "GB 3838-2002 V",
                    },
                ],
            }
        ]

    scope = {"medium": "water"}
    await _rules(
        db,
        _rule("nh3n_high", parameter="nh3n", unit="mg/L", scope=scope, ladders=water(1.5, 2.0)),
        _rule("tp_high", parameter="tp", unit="mg/L", scope=scope, ladders=water(0.3, 0.4)),
        RuleDefinition.model_validate(
            {
                "id": "river_propagation",
                "name": {"en": "p", "zh": "p"},
                "kind": "propagation",
                "propagation": {
                    "from_rules": ["nh3n_high", "tp_high"],
                    "min_severity": "warning",
                    "pre_alert_severity": {"warning": "advisory", "critical": "warning"},
                    "max_eta_s": 20000,
                    "basis": "joint agreement",
                },
            }
        ),
    )
    feed = Feed(db)

    def zhongtang(parameter: str, hours: int, value: float) -> ReadingIn:
        return ReadingIn(
            station="dg-w-zhongtang",
            parameter=parameter,
            time=T0 + hours * HOUR,
            value=value,
            unit="mg/L",
        )

    await feed.send(zhongtang("nh3n", 0, ammonia), at=T0 + timedelta(minutes=5))
    await feed.send(zhongtang("tp", 1, 0.35), at=T0 + HOUR)
    ammonia_level, pre_alert_level = (
        ("warning", "advisory") if ammonia < 2 else ("critical", "warning")
    )
    assert await _events(db) == [
        (1, "firing", "firing", ammonia_level, ammonia),
        (2, "firing", "firing", pre_alert_level, ammonia),
        (3, "firing", "firing", "warning", 0.35),
    ]
    # Zhongtang's ammonia recovers while its phosphorus still breaches: Xintang's pre-alert
    # stays open, now naming the phosphorus alert; it ends with that one.
    await feed.send(zhongtang("nh3n", 2, 0.4), at=T0 + 2 * HOUR)
    pre_alert = (
        "SELECT state, severity, source_alert_id, details->>'source_rule' FROM alert WHERE id = 2"
    )
    assert await _query(db, pre_alert) == [("firing", "advisory", 3, "tp_high")]
    await feed.send(zhongtang("tp", 3, 0.1), at=T0 + 3 * HOUR)
    assert await _query(db, pre_alert) == [("resolved", "advisory", 3, "tp_high")]
    assert (await _events(db))[3:] == [
        (1, "resolved", "resolved", ammonia_level, 0.4),
        *handed_over,
        (3, "resolved", "resolved", "warning", 0.1),
        (2, "resolved", "resolved", "advisory", ammonia),
    ]


async def test_city_wide_aqi_ignores_the_background_station(db: AsyncConnectionPool) -> None:
    ladder = [
        {
            "standard": "HJ 633-2026",
            "levels": [
                {"severity": "warning", "trigger": 150, "clear": 140, "basis": "HJ 633-2026 IV"}
            ],
        }
    ]
    await _rules(
        db,
        RuleDefinition.model_validate(
            {
                "id": "aqi_city",
                "name": {"en": "a", "zh": "a"},
                "kind": "aqi",
                "statistic": "mean_1h",
                "scope": {"medium": "air", "city_wide": True},
                "ladders": ladder,
            }
        ),
    )
    feed = Feed(db)
    guangzhou = ["gz-a-huangpu", "gz-a-zengcheng", "gz-a-panyu", "gz-a-huangge", "gz-a-nansha"]
    clean = {"so2": 8, "no2": 30, "co": 0.6, "o3": 60, "pm10": 40, "pm25": 20}

    def hour(station: str, at: datetime, **override: float) -> list[ReadingIn]:
        values = {**clean, **override}
        return [
            _air(value, at, parameter=code, station=station, period_s=3600)
            for code, value in values.items()
        ]

    # Only the background site (Maofengshan) is heavily polluted: no city alert.
    items = [i for s in guangzhou for i in hour(s, T0)] + hour("gz-a-maofengshan", T0, pm25=400)
    await feed.send(*items, at=T0 + HOUR)
    assert await _alerts(db) == []
    # All five city stations at PM2.5 130 ug/m3: IAQI 170 (HJ 633-2026, 115-150 -> 150-200).
    items = [i for s in guangzhou for i in hour(s, T0 + HOUR, pm25=130)]
    await feed.send(*items, at=T0 + 2 * HOUR)
    assert await _alerts(db) == [
        (1, "aqi_city", None, "guangzhou", "firing", "warning", 172, T0 + HOUR)
    ]
    details = await _query(
        db,
        "SELECT details->'primary_pollutants', details->>'aqi_edition',"
        " details->>'stations' FROM alert",
    )
    assert details == [(["pm25"], "HJ 633-2026", "5")]


async def test_water_class_worse_than_target(db: AsyncConnectionPool) -> None:
    ladder = [
        {
            "standard": "GB 3838-2002",
            "levels": [
                {
                    "severity": "advisory",
                    "trigger": 0,
                    "clear": 0,
                    "basis": "GB 3838-2002 one class",
                },
                {
                    "severity": "warning",
                    "trigger": 1,
                    "clear": 1,
                    "basis": "GB 3838-2002 two classes",
                },
            ],
        }
    ]
    await _rules(
        db,
        RuleDefinition.model_validate(
            {
                "id": "water_class",
                "name": {"en": "w", "zh": "w"},
                "kind": "water_class",
                "statistic": "water_sample",
                "scope": {"stations": ["gz-w-dadun"]},
                "ladders": ladder,
            }
        ),
    )
    feed = Feed(db)

    def sample(parameter: str, value: float, at: datetime) -> ReadingIn:
        return ReadingIn(
            station="gz-w-dadun", parameter=parameter, time=at, value=value, unit=UNITS[parameter]
        )

    # Target class II. NH3-N 0.4 (II), DO 6.5 (II), TP 0.08 (II): on target.
    await feed.send(sample("nh3n", 0.4, T0), sample("do", 6.5, T0), sample("tp", 0.08, T0), at=T0)
    assert await _alerts(db) == []
    # An hour later only DO is measured (nutrients are 4-hourly): DO 4.5 is class IV.
    await feed.send(sample("do", 4.5, T0 + HOUR), at=T0 + HOUR)
    assert await _alerts(db) == [
        (1, "water_class", "gz-w-dadun", None, "firing", "warning", 2, T0 + HOUR)
    ]
    limiting = await _query(db, "SELECT details->>'class', details->'limiting' FROM alert")
    assert limiting == [("IV", [{"item": "do", "class": 4, "value": 4.5, "exceedance": None}])]


async def test_rate_of_change_dissolved_oxygen_drop(db: AsyncConnectionPool) -> None:
    ladder = [
        {
            "standard": "Joint agreement",
            "levels": [
                {"severity": "advisory", "trigger": 2.0, "clear": 1.0, "basis": "Joint agreement"}
            ],
        }
    ]
    await _rules(
        db,
        _rule(
            "do_drop",
            kind="rate_of_change",
            parameter="do",
            unit="mg/L",
            rate={"window_s": 10800, "direction": "fall"},
            scope={"stations": ["dg-w-shijie"]},
            ladders=ladder,
        ),
    )
    feed = Feed(db)
    values = [7.0, 6.8, 5.9, 4.7, 4.6, 4.5, 4.4]
    for hour, value in enumerate(values):
        at = T0 + hour * HOUR
        item = ReadingIn(station="dg-w-shijie", parameter="do", time=at, value=value, unit="mg/L")
        await feed.send(item, at=at)
    # Falls against the highest value of the 3 hours before: 11:00 7.0 -> 4.7 = 2.3 fires;
    # 12:00 2.2 and 13:00 1.4 stay above clear 1.0; 14:00 4.7 -> 4.4 = 0.3 resolves.
    events = await _events(db)
    assert events == [
        (1, "firing", "firing", "advisory", pytest.approx(2.3)),
        (1, "resolved", "resolved", "advisory", pytest.approx(0.3)),
    ]


async def test_staleness_per_cadence_and_fresh_data_clears_it(db: AsyncConnectionPool) -> None:
    ladder = [
        {
            "standard": "Joint agreement",
            "levels": [
                {"severity": "warning", "trigger": 2, "clear": 1.5, "basis": "Joint agreement"}
            ],
        }
    ]
    await _rules(
        db,
        RuleDefinition.model_validate(
            {
                "id": "station_silent",
                "name": {"en": "s", "zh": "s"},
                "kind": "staleness",
                "staleness": {"max_interval_s": 86400},
                "scope": {"stations": ["gz-w-dadun"]},
                "ladders": ladder,
            }
        ),
    )
    feed = Feed(db)

    def sample(parameter: str, at: datetime) -> ReadingIn:
        return ReadingIn(
            station="gz-w-dadun", parameter=parameter, time=at, value=0.3, unit=UNITS[parameter]
        )

    # DO is hourly, NH3-N 4-hourly: both last reported at 08:00.
    await feed.send(sample("do", T0), sample("nh3n", T0), at=T0)
    await feed.sweep(T0 + 2 * HOUR)  # DO silent 2 intervals: not more than 2
    assert await _alerts(db) == []
    await feed.sweep(T0 + 2 * HOUR + timedelta(minutes=1))
    alert = await _query(db, "SELECT state, severity, details->'silent' FROM alert")
    assert [(a[0], a[1], [s["parameter"] for s in a[2]]) for a in alert] == [
        ("firing", "warning", ["do"])
    ]
    # NH3-N is only late after 8 hours; fresh DO data clears the alert at once.
    await feed.send(sample("do", T0 + 3 * HOUR), at=T0 + 3 * HOUR + timedelta(minutes=5))
    assert [row[4] for row in await _alerts(db)] == ["resolved"]
    await feed.sweep(T0 + 8 * HOUR + timedelta(minutes=1))
    silent = await _query(db, "SELECT state, details->'silent' FROM alert WHERE state = 'firing'")
    assert [[s["parameter"] for s in row[1]] for row in silent] == [["do", "nh3n"]]


async def test_rule_version_is_recorded_and_a_new_version_applies_to_new_alerts(
    db: AsyncConnectionPool,
) -> None:
    await _rules(db, _rule("no2_instant"))
    feed = Feed(db)
    await feed.send(_air(250, T0), at=T0)
    stricter = _rule(
        "no2_instant",
        ladders=[
            {
                "standard": "test",
                "levels": [{"severity": "warning", "trigger": 100, "clear": 90, "basis": "test"}],
            }
        ],
    )
    async with db.connection() as conn, conn.transaction():
        await write_rule(conn, stricter, via="api", by="joint_office:key9", at=T0 + HOUR)
    await feed.send(_air(80, T0 + HOUR), at=T0 + HOUR)
    await feed.send(_air(150, T0 + 2 * HOUR), at=T0 + 2 * HOUR)
    versions = await _query(db, "SELECT id, rule_version, state FROM alert ORDER BY id")
    assert versions == [(1, 1, "resolved"), (2, 2, "firing")]


async def test_daily_mean_rule_needs_twenty_valid_hours(db: AsyncConnectionPool) -> None:
    ladder = [
        {
            "standard": "GB 3095-2026 (transition limits)",
            "levels": [
                {"severity": "warning", "trigger": 60, "clear": 55, "basis": "GB 3095-2026 60"}
            ],
        }
    ]
    await _rules(db, _rule("pm25_24h", parameter="pm25", statistic="day_mean", ladders=ladder))
    feed = Feed(db)
    day = datetime(2026, 11, 20, tzinfo=CST)
    # 19 hourly means around 80 ug/m3 (varying: a constant series would be a stuck sensor to
    # history QC): not a valid natural-day mean, no alert.
    values = [76, 78, 80, 82, 84] * 4
    hours = [_air(values[h], day + h * HOUR, parameter="pm25", period_s=3600) for h in range(19)]
    await feed.send(*hours, at=day + 20 * HOUR)
    assert await _alerts(db) == []
    # The 20th hour makes the day valid: its mean (80) is over the 2026 transition limit of 60.
    last = _air(values[19], day + 19 * HOUR, parameter="pm25", period_s=3600)
    await feed.send(last, at=day + 21 * HOUR)
    assert await _alerts(db) == [
        (1, "pm25_24h", "gz-a-huangpu", None, "firing", "warning", 80, day)
    ]


async def test_city_aqi_before_2026_uses_hj633_2012(db: AsyncConnectionPool) -> None:
    ladder = [
        {
            "standard": "HJ 633-2012",
            "applies_until": "2026-03-01",
            "levels": [
                {"severity": "warning", "trigger": 150, "clear": 140, "basis": "HJ 633-2012 IV"}
            ],
        }
    ]
    await _rules(
        db,
        RuleDefinition.model_validate(
            {
                "id": "aqi_city",
                "name": {"en": "a", "zh": "a"},
                "kind": "aqi",
                "statistic": "mean_1h",
                "scope": {"medium": "air", "city_wide": True},
                "ladders": ladder,
            }
        ),
    )
    feed = Feed(db)
    at = datetime(2025, 11, 20, 8, tzinfo=CST)
    dongguan = ["dg-a-yuanling", "dg-a-shilong", "dg-a-machong", "dg-a-humen"]
    items = [
        _air(value, at, parameter=code, station=station, period_s=3600)
        for station in dongguan
        for code, value in {
            "so2": 8,
            "no2": 30,
            "co": 0.6,
            "o3": 60,
            "pm10": 40,
            "pm25": 130,
        }.items()
    ]
    await feed.send(*items, at=at + HOUR)
    # HJ 633-2012 PM2.5 1-hour mean on the 24-hour column: 115-150 -> IAQI 150-200: 172.
    assert await _alerts(db) == [(1, "aqi_city", None, "dongguan", "firing", "warning", 172, at)]
    details = await _query(db, "SELECT details->>'aqi_edition', details->>'stations' FROM alert")
    assert details == [("HJ 633-2012", "4")]
