"""Regional air episodes (docs/evaluation.md §7) as the alert engine records them, and their reads.

An episode row belongs to the regional-episode alert that announces it (one each); the engine
writes it in the round that decides the alert, so the two never disagree. The caller owns every
transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from psycopg.rows import class_row

from store.pool import Conn


@dataclass(slots=True)
class Episode:
    """One regional episode: [start, end) (end None while it goes on), and its alert."""

    rule_id: str
    alert_id: int
    series: str
    start: datetime
    end: datetime | None
    cities: list[str]
    city_days: int
    peak_aqi: int
    peak_category: str
    primary_pollutants: list[str]


@dataclass(slots=True)
class EpisodeRow(Episode):
    """A stored episode with its id."""

    id: int = 0


_COLUMNS = (
    'rule_id, alert_id, series, start_at AS start, end_at AS "end", cities, city_days, peak_aqi,'
    " peak_category, primary_pollutants, id"
)


async def episodes_of_alerts(conn: Conn, alert_ids: Sequence[int]) -> dict[int, EpisodeRow]:
    """The episodes these alerts recorded, by alert id."""
    if not alert_ids:
        return {}
    async with conn.cursor(row_factory=class_row(EpisodeRow)) as cur:
        await cur.execute(
            "SELECT " + _COLUMNS + " FROM episode WHERE alert_id = ANY(%s)", [list(alert_ids)]
        )
        return {row.alert_id: row for row in await cur.fetchall()}


async def save_episodes(conn: Conn, episodes: Sequence[Episode]) -> None:
    """Insert each episode, or replace what its alert recorded before."""
    if not episodes:
        return
    async with conn.cursor() as cur:
        await cur.executemany(
            "INSERT INTO episode (rule_id, alert_id, series, start_at, end_at, cities, city_days,"
            " peak_aqi, peak_category, primary_pollutants)"
            " VALUES (%(rule_id)s, %(alert_id)s, %(series)s, %(start)s, %(end)s, %(cities)s,"
            " %(city_days)s, %(peak_aqi)s, %(peak_category)s, %(primary_pollutants)s)"
            " ON CONFLICT (alert_id) DO UPDATE SET start_at = EXCLUDED.start_at,"
            " end_at = EXCLUDED.end_at, cities = EXCLUDED.cities,"
            " city_days = EXCLUDED.city_days, peak_aqi = EXCLUDED.peak_aqi,"
            " peak_category = EXCLUDED.peak_category,"
            " primary_pollutants = EXCLUDED.primary_pollutants",
            [
                {
                    "rule_id": e.rule_id,
                    "alert_id": e.alert_id,
                    "series": e.series,
                    "start": e.start,
                    "end": e.end,
                    "cities": e.cities,
                    "city_days": e.city_days,
                    "peak_aqi": e.peak_aqi,
                    "peak_category": e.peak_category,
                    "primary_pollutants": e.primary_pollutants,
                }
                for e in episodes
            ],
        )


async def delete_episodes(conn: Conn, alert_ids: Sequence[int]) -> None:
    """Forget the episodes of retracted alerts (the data that raised them is no longer valid)."""
    if alert_ids:
        await conn.execute("DELETE FROM episode WHERE alert_id = ANY(%s)", [list(alert_ids)])


async def list_episodes(
    conn: Conn,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    city: str | None = None,
    before: tuple[datetime, int] | None = None,
    limit: int = 100,
) -> list[EpisodeRow]:
    """Episodes overlapping [start, end) (either open), that take in `city`, latest start first;
    `before` is the (start, id) of the last one of the previous page."""
    async with conn.cursor(row_factory=class_row(EpisodeRow)) as cur:
        await cur.execute(
            "SELECT " + _COLUMNS + " FROM episode"
            " WHERE (%(end)s::timestamptz IS NULL OR start_at < %(end)s)"
            " AND (%(start)s::timestamptz IS NULL OR end_at IS NULL OR end_at > %(start)s)"
            " AND (%(city)s::text IS NULL OR %(city)s = ANY(cities))"
            " AND (%(before_start)s::timestamptz IS NULL"
            "      OR (start_at, id) < (%(before_start)s, %(before_id)s))"
            " ORDER BY start_at DESC, id DESC LIMIT %(limit)s",
            {
                "start": start,
                "end": end,
                "city": city,
                "before_start": before[0] if before else None,
                "before_id": before[1] if before else None,
                "limit": limit,
            },
        )
        return await cur.fetchall()
