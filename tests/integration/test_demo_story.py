"""The demo's story over real PostgreSQL: the simulator (with its first-round history and
backfill), the pipeline, history QC, rollups and the alert engine with the joint rule set,
stepped through the story's first eleven minutes on a clock of their own.

What a newcomer watching the screen sees, in order: the ammonia / oxygen incident at Zhongtang
under way with pre-alerts downstream, an ozone episode in both cities, the silent Maofengshan
station reported, the plume reaching Xintang when the pre-alert said, and then Zhongtang,
Maofengshan and the ozone alerts resolving; a stuck PM2.5 sensor flagged by QC.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from psycopg_pool import AsyncConnectionPool

from envlink.demo import demo_story, demo_subscriptions
from envlink.history import load_history
from ingest.pipeline import Pipeline
from ingest.sources.simulator import SimulatorJob
from ingest.sources.story import SCENES, STORY_LEAD_S, Story
from schemas.common import QC
from schemas.rules import load_rules
from store.readings import newest_reading_end
from store.rules import seed_rules
from tests.conftest import CONFIG_DIR, worker_loop

# 03:06 in Guangzhou: a night, when ozone is low before the episode.
ANCHOR = datetime(2026, 12, 4, 19, 6, tzinfo=UTC)
STEP = timedelta(seconds=30)
OZONE_STATIONS = next(scene.stations for scene in SCENES if scene.kind == "ozone")


async def _rows(pool: AsyncConnectionPool, query: str, *args: object) -> list[tuple[Any, ...]]:
    async with pool.connection() as conn:
        cur = await conn.execute(query.encode(), args or None)
        return await cur.fetchall()


async def _play(db: AsyncConnectionPool, until: timedelta) -> datetime:
    """The demo started 20 s after the anchor, one round every STEP; the last round's time."""
    clock = [ANCHOR + timedelta(seconds=20)]
    pipeline = Pipeline(db, earliest=date(2000, 1, 1), clock=lambda: clock[0])
    job = SimulatorJob(
        pipeline,
        interval_s=STEP.total_seconds(),
        history_hours=24,
        clock=lambda: clock[0],
        story=Story(ANCHOR),
    )
    loop = worker_loop(db, pipeline, clock=lambda: clock[0])
    while clock[0] <= ANCHOR + until:
        result = await job.run()
        assert result.summary["revised"] == 0 and result.summary["rejected"] == 0
        await loop.drain(sweep=True)
        clock[0] += STEP
    return clock[0] - STEP


async def _events(db: AsyncConnectionPool) -> dict[tuple[str, str], list[tuple[str, str, int]]]:
    """Each (rule, station or city)'s events: kind, severity and seconds after the anchor."""
    rows = await _rows(
        db,
        "SELECT a.rule_id, coalesce(s.code, a.city), e.kind, e.severity, e.at"
        " FROM alert_event e JOIN alert a ON a.id = e.alert_id"
        " LEFT JOIN station s ON s.id = a.station_id ORDER BY e.id",
    )
    found: defaultdict[tuple[str, str], list[tuple[str, str, int]]] = defaultdict(list)
    for rule, subject, kind, severity, at in rows:
        found[(rule, subject)].append((kind, severity, round((at - ANCHOR).total_seconds())))
    return found


async def test_the_story_plays_its_first_eleven_minutes(db: AsyncConnectionPool) -> None:
    async with db.connection() as conn, conn.transaction():
        await seed_rules(conn, load_rules(CONFIG_DIR / "thresholds.yaml"), at=ANCHOR - timedelta(1))
    await _play(db, timedelta(minutes=11))
    events = await _events(db)
    anchor_s = int(ANCHOR.timestamp())

    # The incident at Zhongtang began 3 h 16 min before the anchor (the backfill holds it from
    # its first minute): critical at the first round, resolved once the source stops (+7 min).
    zhongtang = await _rows(
        db,
        "SELECT a.id, a.trigger_time, a.state FROM alert a JOIN station s ON s.id = a.station_id"
        " WHERE s.code = 'dg-w-zhongtang' AND a.rule_id = 'nh3n_high'",
    )
    assert len(zhongtang) == 1
    _, trigger, state = zhongtang[0]
    assert trigger == ANCHOR + timedelta(seconds=240 - 12000 + 60)
    assert state == "resolved"
    kinds = events[("nh3n_high", "dg-w-zhongtang")]
    assert kinds[0] == ("firing", "critical", 20)
    assert kinds[-1][0] == "resolved" and 360 < kinds[-1][2] <= 450

    # Its pre-alert at Xintang, raised at the first round, says when the plume arrives: the
    # breach's start + 6 km / 0.5 m/s, 5 minutes after the anchor. When Zhongtang's ammonia and
    # oxygen recover (+7 min) its water class still breaches: the same pre-alert stays open,
    # following that alert now, with no event (nobody is told the same thing twice) and the
    # arrival it first gave.
    pre_alert = await _rows(
        db,
        "SELECT a.details, a.state, source.rule_id FROM alert a"
        " JOIN station s ON s.id = a.station_id JOIN alert source ON source.id = a.source_alert_id"
        " WHERE s.code = 'gz-w-xintang' AND a.rule_id = 'river_propagation'",
    )
    assert len(pre_alert) == 1
    details, pre_state, source_rule = pre_alert[0]
    assert details["source_station"] == "dg-w-zhongtang" and details["eta_s"] == 12000
    assert datetime.fromisoformat(details["expected_at"]) == ANCHOR + timedelta(minutes=5)
    assert events[("river_propagation", "gz-w-xintang")] == [("firing", "warning", 20)]
    assert (pre_state, source_rule, details["source_rule"]) == (
        "firing",
        "water_class_sample",
        "water_class_sample",
    )

    # The plume reaches Xintang as predicted: ammonia breaches within a minute of the
    # expected arrival, and stays (the plume takes 3 h 20 min to pass).
    xintang = events[("nh3n_high", "gz-w-xintang")]
    assert xintang[0][:1] == ("firing",) and 240 < xintang[0][2] <= 330
    assert "critical" in {severity for _, severity, _ in xintang}
    assert all(kind != "resolved" for kind, _, _ in xintang)
    assert events[("do_low", "gz-w-xintang")][0][0] == "firing"

    # The ozone episode: every urban station of both cities, and both cities' AQI, fire after
    # the start and resolve by +11 min, as the hour's mean in progress falls back. The hour's
    # mean is provisional: once it no longer exceeds the trigger at all, the alert it raised
    # is retracted too (the hour as a whole was not above the limit).
    for code in OZONE_STATIONS:
        ozone = events[("o3_1h", code)]
        assert ozone[0][0] == "firing" and 60 < ozone[0][2] < 240, (code, ozone)
        assert ("escalated", "critical") in {(kind, severity) for kind, severity, _ in ozone}
        ends = [kind for kind, _, _ in ozone[3:]]
        assert ends in (["resolved"], ["resolved", "retracted"]), (code, ozone)
        assert ozone[3][2] <= 660, (code, ozone)
    for city in ("guangzhou", "dongguan"):
        aqi = [kind for kind, _, at in events[("aqi_city_moderate", city)] if at <= 660]
        assert aqi in (["firing", "resolved"], ["firing", "resolved", "retracted"]), (city, aqi)

    # Maofengshan: silent since 1 h 57 min before the anchor; reported once two hours passed
    # since its last reading (the first sweep after +2 min), resolved when it reports (+6 min).
    silent = events[("station_silent", "gz-a-maofengshan")]
    assert [(kind, severity) for kind, severity, _ in silent] == [
        ("firing", "warning"),
        ("resolved", "warning"),
    ]
    assert 120 < silent[0][2] <= 150 and 360 <= silent[1][2] <= 390

    # The stuck PM2.5 sensor at Huangge: its flat hourly means are flagged by QC.
    stuck = await _rows(
        db,
        "SELECT r.time, r.value FROM reading r JOIN station s ON s.id = r.station_id"
        " JOIN parameter p ON p.id = r.parameter_id WHERE s.code = 'gz-a-huangge'"
        " AND p.code = 'pm25' AND r.period_s = 3600 AND r.qc = %s ORDER BY r.time",
        QC.SUSPECT.code,
    )
    assert len(stuck) >= 6 and {value for _, value in stuck} == {38.0}
    assert int(stuck[0][0].timestamp()) >= anchor_s - 6 * 3600 - 1800

    # Nothing else: the everyday simulator's noise raises no alert in these minutes.
    story = {
        "dg-w-zhongtang", "gz-w-xintang", "gz-w-dadun", "gz-a-maofengshan", "guangzhou",
        "dongguan", *OZONE_STATIONS, "gz-w-lianhuashan", "dg-w-shatian", "dg-w-humen",
        "gz-w-nansha",
    }  # fmt: skip
    assert {subject for _, subject in events} <= story


async def test_history_and_restarts_send_the_story_as_duplicates(
    db: AsyncConnectionPool, database_url: str
) -> None:
    """`--history` loads what the story's simulator sends, and a restarted demo re-sends the
    same values: duplicates, never revisions."""
    now = ANCHOR + timedelta(seconds=20)
    story = Story(ANCHOR)
    await load_history(database_url, days=1, water_min_samples=1, now=now, story=story)
    for started in (now, now + timedelta(minutes=3)):  # a start, and a restart 3 minutes on
        pipeline = Pipeline(db, earliest=date(2000, 1, 1), clock=lambda at=started: at)
        job = SimulatorJob(
            pipeline, interval_s=10, history_hours=24, clock=lambda at=started: at, story=story
        )
        result = await job.run()
        assert result.summary["revised"] == 0 and result.summary["rejected"] == 0
        assert result.summary["duplicate"] > 0
    # The stuck sensor's loaded hours are the story's.
    loaded = await _rows(
        db,
        "SELECT count(*) FROM reading r JOIN station s ON s.id = r.station_id"
        " JOIN parameter p ON p.id = r.parameter_id WHERE s.code = 'gz-a-huangge'"
        " AND p.code = 'pm25' AND r.period_s = 3600 AND r.value = 38.0",
    )
    assert loaded[0][0] >= 6


async def test_a_demo_restarted_after_a_pause_begins_its_story_anew(
    db: AsyncConnectionPool, database_url: str, tmp_path: Path
) -> None:
    """A restart soon after continues the story; one after a pause longer than the story's lead
    begins a new one at its start, and re-sends nothing the first story sent as a revision."""
    assert (await demo_story(database_url, tmp_path, ANCHOR)).anchor == ANCHOR
    started = ANCHOR + timedelta(seconds=20)
    pipeline = Pipeline(db, earliest=date(2000, 1, 1), clock=lambda: started)
    job = SimulatorJob(
        pipeline, interval_s=10, history_hours=24, clock=lambda: started, story=Story(ANCHOR)
    )
    assert (await job.run()).summary["accepted"] > 0
    async with db.connection() as conn:
        last_sent = await newest_reading_end(conn)
    newest = await _rows(db, "SELECT max(time + period_s * interval '1 second') FROM reading")
    assert last_sent == newest[0][0] and last_sent is not None
    soon = last_sent + timedelta(seconds=STORY_LEAD_S - 60)
    assert (await demo_story(database_url, tmp_path, soon)).anchor == ANCHOR
    restart = last_sent + timedelta(seconds=STORY_LEAD_S + 60)
    story = await demo_story(database_url, tmp_path, restart)
    assert story.anchor == restart.replace(second=0, microsecond=0)
    # The new story's incident is under way at once: its source station reads high.
    later = SimulatorJob(
        Pipeline(db, earliest=date(2000, 1, 1), clock=lambda: restart),
        interval_s=10, history_hours=24, clock=lambda: restart, story=story,
    )  # fmt: skip
    result = await later.run()
    assert result.summary["revised"] == 0 and result.summary["rejected"] == 0
    high = await _rows(
        db,
        "SELECT max(r.value) FROM reading r JOIN station s ON s.id = r.station_id"
        " JOIN parameter p ON p.id = r.parameter_id WHERE s.code = 'dg-w-zhongtang'"
        " AND p.code = 'nh3n' AND r.time > %s",
        restart - timedelta(hours=1),
    )
    assert high[0][0] == 2.6


async def test_the_demo_subscribes_each_agency_to_its_inbox(
    db: AsyncConnectionPool, database_url: str
) -> None:
    codes = await demo_subscriptions(database_url, "http://127.0.0.1:8000")
    # A restart on another port points them there, and makes no others.
    assert await demo_subscriptions(database_url, "http://127.0.0.1:8123") == codes
    rows = await _rows(
        db,
        "SELECT s.code, g.code, s.enabled, s.channel, s.target, s.cities, s.min_severity"
        " FROM subscription s JOIN agency g ON g.id = s.agency_id"
        " WHERE s.code LIKE 'demo-inbox-%%' ORDER BY s.code",
    )
    inbox = "http://127.0.0.1:8123/demo/inbox"
    assert rows == [
        ("demo-inbox-dg-eeb", "dg_eeb", True, "webhook", inbox, ["dongguan"], "warning"),
        ("demo-inbox-gz-eeb", "gz_eeb", True, "webhook", inbox, ["guangzhou"], "warning"),
        ("demo-inbox-joint-office", "joint_office", True, "webhook", inbox, None, "warning"),
    ]


async def test_a_later_cycle_s_stuck_sensor_is_caught_live(db: AsyncConnectionPool) -> None:
    """Each hour's mean goes out when the hour is over; QC flags the stuck sensor's run as
    its sixth flat hour arrives (the second cycle's run begins 6 h 30 min before its zero)."""
    zero = ANCHOR + timedelta(hours=8)
    clock = [ANCHOR + timedelta(hours=1, minutes=5)]
    pipeline = Pipeline(db, earliest=date(2000, 1, 1), clock=lambda: clock[0])
    job = SimulatorJob(
        pipeline, interval_s=1800, history_hours=0, clock=lambda: clock[0], story=Story(ANCHOR)
    )
    loop = worker_loop(db, pipeline, clock=lambda: clock[0])
    query = (
        "SELECT r.time, r.value, r.qc FROM reading r JOIN station s ON s.id = r.station_id"
        " JOIN parameter p ON p.id = r.parameter_id WHERE s.code = 'gz-a-huangge'"
        " AND p.code = 'pm25' AND r.period_s = 3600 ORDER BY r.time"
    )
    # The run's first flat hour is 21:00-22:00 UTC; its sixth ends at 03:00, 6 min before zero.
    sixth_ends = datetime(2026, 12, 5, 3, 0, tzinfo=UTC)
    while clock[0] < sixth_ends:
        await job.run()
        await loop.drain()
        clock[0] += timedelta(minutes=30)
    hourly = await _rows(db, query)
    assert [value for _, value, _ in hourly][-5:] == [38.0] * 5
    assert {qc for _, _, qc in hourly} == {QC.VALID.code}
    await job.run()
    await loop.drain()
    hourly = await _rows(db, query)
    flat = [(time, qc) for time, value, qc in hourly if value == 38.0]
    assert len(flat) == 6 and {qc for _, qc in flat} == {QC.SUSPECT.code}
    assert flat[-1][0] == sixth_ends - timedelta(hours=1) and sixth_ends < zero
