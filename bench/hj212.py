"""Benchmark the HJ 212 server: 200 stations uploading real-time data, answered after commit.

A load generator in its own process opens one connection per synthetic station (200 by
default) and sends CN 2011 real-time packets of 6-9 pollutants with a reply requested (Flag=5),
at a steady total rate, without waiting for the replies; every packet has its own DataTime, and
every frame is built before the clock starts (a 10-minute run at 2,000/s holds 1.2 M). This
process runs the server (Hj212Server → Pipeline → PostgreSQL) as `envlink worker` does, and a
third process runs an alert loop (history QC, rollups, the engine) over the same database, as a
second worker would. At the end it prints the sustained packet rate, the reply latency (send →
reply, measured by the generator), the CPU time of each process and of PostgreSQL, how far the
alert loop lagged behind, and checks that every reading sent was stored exactly once.

    .venv/bin/python bench/hj212.py [--seconds 60] [--rate 1000] [--stations 200] [--no-alert-loop]

The database is a fresh one: on the server of ENVLINK_DATABASE_URL when set (a database of its
own, dropped at the end), else on an embedded server started in a temporary directory.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import logging
import multiprocessing
import os
import pstats
import resource
import statistics
import sys
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from multiprocessing.connection import Connection
from operator import itemgetter
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped]
import psycopg
from psycopg_pool import AsyncConnectionPool

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from alerts.loop import AlertLoop, RoundReport  # noqa: E402
from bench._common import fresh_database  # noqa: E402
from envlink.runtime import tune_gc  # noqa: E402
from ingest.history import HistoryQc  # noqa: E402
from ingest.pipeline import Pipeline  # noqa: E402
from ingest.sources.hj212.client import Hj212Client  # noqa: E402
from ingest.sources.hj212.protocol import Packet, format_datatime  # noqa: E402
from ingest.sources.hj212.server import Hj212Server  # noqa: E402
from schemas.catalogue import (  # noqa: E402
    Catalogue,
    Hj212Def,
    StationParameterDef,
    load_catalogue,
)
from store.catalogue import seed_catalogue  # noqa: E402
from store.listen import Listener  # noqa: E402
from store.migrate import migrate  # noqa: E402
from store.rollups import pending_dirty  # noqa: E402

# The nine air codes a station may send, with the parameter and its unit in stations.yaml.
POLLUTANTS = (
    ("a21026", "so2", "ug/m3"),
    ("a21004", "no2", "ug/m3"),
    ("a21005", "co", "mg/m3"),
    ("a05024", "o3", "ug/m3"),
    ("a34002", "pm10", "ug/m3"),
    ("a34004", "pm25", "ug/m3"),
    ("a01001", "air_temp", "degC"),
    ("a01002", "humidity", "%"),
    ("a01007", "wind_speed", "m/s"),
)
REPLY_GRACE_S = 15.0


def mn_of(index: int) -> str:
    return f"BENCH{index:09d}"


def items_of(index: int) -> int:
    """6, 7, 8 or 9 pollutants per station."""
    return 6 + index % 4


def bench_catalogue(config_dir: Path, stations: int) -> Catalogue:
    """The joint catalogue plus `stations` synthetic air stations with HJ 212 MNs."""
    catalogue = load_catalogue(config_dir)
    template = next(s for s in catalogue.stations if s.medium == "air")
    extra = [
        template.model_copy(
            update={"code": f"bench-a-{i:04d}", "hj212": Hj212Def(mn=mn_of(i), crc="hj212")}
        )
        for i in range(stations)
    ]
    links = dict(catalogue.station_parameters)
    for i, station in enumerate(extra):
        links[station.code] = {
            parameter: StationParameterDef(unit=unit, interval_s=3600)
            for _, parameter, unit in POLLUTANTS[: items_of(i)]
        }
    return catalogue.model_copy(
        update={"stations": [*catalogue.stations, *extra], "station_parameters": links}
    )


@dataclass
class GeneratorReport:
    sent: int
    answered: int
    readings: int
    send_s: float
    first_send: float
    last_reply: float
    latencies_ms: list[float]
    cpu_s: float
    connect_s: float
    # (wall-clock send time, latency ms) of every answered packet, to line stalls up with rounds
    timeline: list[tuple[float, float]]


def generator(port: int, stations: int, rate: float, seconds: float, out: Connection) -> None:
    """Entry point of the load generator process."""
    report = asyncio.run(_generate(port, stations, rate, seconds))
    out.send(report)
    out.close()


def _schedule(
    clients: list[Hj212Client], *, stations: int, rate: float, seconds: float
) -> list[tuple[float, int, str, bytes, int]]:
    """Every packet of the run, by when it is due: (seconds from the start, station, QN, frame,
    readings). Each station sends every `stations / rate` seconds, the stations spread evenly
    over that interval; each packet has its own DataTime (one second apart per station, ending
    before now) and its QN is the time it is due, so a station's QNs increase."""
    interval = stations / rate
    base = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=3)
    qn_base = datetime.now(UTC) + timedelta(seconds=1)
    schedule: list[tuple[float, int, str, bytes, int]] = []
    for index, client in enumerate(clients):
        codes = [code for code, _, _ in POLLUTANTS[: items_of(index)]]
        offset = interval * index / stations
        step = 0
        while offset < seconds:
            values = {code: (float(10 + (step + n) % 50), "N") for n, code in enumerate(codes)}
            qn = format_datatime(qn_base + timedelta(seconds=offset), ms=True)
            qn, frame = client.upload_frame("2011", base + timedelta(seconds=step), values, qn=qn)
            schedule.append((offset, index, qn, frame, len(codes)))
            step += 1
            offset = interval * (index / stations + step)
    schedule.sort(key=itemgetter(0))
    return schedule


async def _generate(port: int, stations: int, rate: float, seconds: float) -> GeneratorReport:
    loop = asyncio.get_running_loop()
    sent_at: dict[tuple[int, str], float] = {}
    sent_wall: dict[tuple[int, str], float] = {}
    latencies: list[float] = []
    timeline: list[tuple[float, float]] = []
    last_reply = 0.0

    def on_reply_of(index: int) -> Any:
        def on_reply(qn: str, packet: Packet, arrived: float) -> None:
            nonlocal last_reply
            sent = sent_at.pop((index, qn), None)
            if sent is not None:
                latencies.append((arrived - sent) * 1000)
                timeline.append((sent_wall.pop((index, qn)), latencies[-1]))
                last_reply = max(last_reply, arrived)

        return on_reply

    connect_started = time.perf_counter()
    clients = [
        Hj212Client(mn=mn_of(i), pw="123456", st="22", on_reply=on_reply_of(i), record=False)
        for i in range(stations)
    ]
    await asyncio.gather(*(client.connect("127.0.0.1", port) for client in clients))
    connect_s = time.perf_counter() - connect_started
    # Every frame is built before the clock starts, and one task sends whatever is due: built
    # as they went, by a task per station, the frames and the wake-ups cost this process 1.7
    # times the CPU (26 % of a core against 15 % at 2,000 packets/s), taken from the server it
    # measures on the same cores; and a busy generator reads its replies late, which counts as
    # the server's latency.
    schedule = _schedule(clients, stations=stations, rate=rate, seconds=seconds)
    cpu_before = _own_cpu()
    start = loop.time() + 0.2
    first_send = time.perf_counter() + 0.2
    counts = {"sent": 0, "readings": 0}
    position = 0
    while position < len(schedule):
        delay = start + schedule[position][0] - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        now = loop.time()
        while position < len(schedule) and start + schedule[position][0] <= now:
            _, index, qn, frame, readings = schedule[position]
            sent_at[(index, qn)] = time.perf_counter()
            sent_wall[(index, qn)] = time.time()
            clients[index].write(frame)
            counts["sent"] += 1
            counts["readings"] += readings
            position += 1
    send_s = loop.time() - start
    for _ in range(int(REPLY_GRACE_S * 10)):
        if not sent_at:
            break
        await asyncio.sleep(0.1)
    cpu_s = _own_cpu() - cpu_before
    await asyncio.gather(*(client.close() for client in clients))
    return GeneratorReport(
        sent=counts["sent"],
        answered=len(latencies),
        readings=counts["readings"],
        send_s=send_s,
        first_send=first_send,
        last_reply=last_reply,
        latencies_ms=latencies,
        cpu_s=cpu_s,
        connect_s=connect_s,
        timeline=timeline,
    )


@dataclass
class AlertLoopReport:
    rounds: int
    drained: int
    drain_s: float
    cpu_s: float
    # (wall-clock start, end, keys claimed) of every round while the load ran
    round_times: list[tuple[float, float, int]]


def alert_worker(url: str, stop: Connection, out: Connection) -> None:
    """Entry point of the alert loop process: run until told the load is over, then drain."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    out.send(asyncio.run(_alert_worker(url, stop)))
    out.close()


async def _alert_worker(url: str, stop: Connection) -> AlertLoopReport:
    tune_gc()
    async with AsyncConnectionPool(url, min_size=1, max_size=2, open=False) as pool:
        pipeline = Pipeline(pool, earliest=date(2000, 1, 1))
        loop = AlertLoop(pool, catalogue=pipeline.catalogue_cache, judge=HistoryQc(pipeline).judge)
        round_times: list[tuple[float, float, int]] = []
        process = loop.process

        async def timed(*, sweep: bool = False) -> RoundReport:
            began = time.time()
            report = await process(sweep=sweep)
            if report.claimed:
                round_times.append((began, time.time(), len(report.claimed)))
            return report

        loop.process = timed  # type: ignore[method-assign]
        listener = Listener(url, name="bench")
        await listener.start()
        running = asyncio.create_task(loop.run(listener))
        await asyncio.to_thread(stop.recv)
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
        await listener.stop()
        started = time.perf_counter()
        during = list(round_times)
        drained = len(await loop.drain())
        return AlertLoopReport(
            loop.rounds, drained, time.perf_counter() - started, _own_cpu(), during
        )


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class CpuMeter:
    """CPU seconds used by a set of processes between two snapshots."""

    def __init__(self, pids: list[int]) -> None:
        self._pids = pids
        self._before = self._snapshot()

    def _snapshot(self) -> dict[int, float]:
        times: dict[int, float] = {}
        for pid in self._pids:
            try:
                process = psutil.Process(pid)
                for member in [process, *process.children(recursive=True)]:
                    cpu = member.cpu_times()
                    times[member.pid] = cpu.user + cpu.system
            except psutil.Error:
                continue
        return times

    def used(self) -> float:
        after = self._snapshot()
        return sum(after[pid] - self._before.get(pid, 0.0) for pid in after)


STALL_MS = 250.0


def stall_summary(
    timeline: list[tuple[float, float]], rounds: list[tuple[float, float, int]]
) -> str:
    """Replies slower than STALL_MS, by 1-s send window, and how many came during a round."""
    slow = sorted(sent for sent, ms in timeline if ms > STALL_MS)
    windows = sorted({int(sent) for sent in slow})
    in_round = sum(any(a - 1 <= w <= b for a, b, _ in rounds) for w in windows)
    busy = [b - a for a, b, _ in rounds]
    claimed = [n for _, _, n in rounds]
    during = [ms for sent, ms in timeline if any(a <= sent <= b for a, b, _ in rounds)]
    outside = [ms for sent, ms in timeline if not any(a <= sent <= b for a, b, _ in rounds)]
    share = sum(busy) / max(max(t for t, _ in timeline) - min(t for t, _ in timeline), 1e-9)
    return (
        f"replies over {STALL_MS:g} ms: {len(slow)}, in {len(windows)} 1-s windows, "
        f"{in_round} of them during or 1 s before a round; sent during a round "
        f"({share:.0%} of the time): p50 {percentile(during, 0.5) if during else 0:.1f} / "
        f"p99 {percentile(during, 0.99) if during else 0:.1f} ms, outside: p50 "
        f"{percentile(outside, 0.5) if outside else 0:.1f} / p99 "
        f"{percentile(outside, 0.99) if outside else 0:.1f} ms; rounds with keys: {len(rounds)}, "
        f"{statistics.median(busy) if busy else 0:.2f} s median / {max(busy, default=0):.2f} s "
        f"longest, {statistics.median(claimed) if claimed else 0:.0f} keys median"
    )


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def run(args: argparse.Namespace) -> int:
    load_start = os.getloadavg()
    async with fresh_database("envlink_bench_hj212") as database:
        url, postmaster = database.url, database.postmaster
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            await migrate(conn)
            version = (await (await conn.execute("SHOW server_version")).fetchone() or ["?"])[0]
            async with conn.transaction():
                await seed_catalogue(conn, bench_catalogue(ROOT / "config", args.stations))
        async with AsyncConnectionPool(url, min_size=2, max_size=4, open=False) as pool:
            pipeline = Pipeline(pool, earliest=date(2000, 1, 1))
            tune_gc()  # as `envlink worker` does
            await pipeline.catalogue()
            server = Hj212Server(
                pipeline,
                host="127.0.0.1",
                port=0,
                batch_window_s=args.window_ms / 1000,
                commits_in_flight=args.in_flight,
            )
            await server.start()
            async with pool.connection() as conn:
                cur = await conn.execute(
                    "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
                )
                backends = [pid for (pid,) in await cur.fetchall()]
            pg_meter = CpuMeter([postmaster] if postmaster else backends)
            spawn = multiprocessing.get_context("spawn")
            alerts_stop, stop_alerts = spawn.Pipe(duplex=False)
            alerts_out, alerts_in = spawn.Pipe(duplex=False)
            alerts = spawn.Process(
                target=alert_worker, args=(url, alerts_stop, alerts_in), name="alert-loop"
            )
            if args.alert_loop:
                alerts.start()
            own_before = _own_cpu()
            receiver, sender = spawn.Pipe(duplex=False)
            process = spawn.Process(
                target=generator,
                args=(server.port, args.stations, args.rate, args.seconds, sender),
                name="hj212-load",
            )
            process.start()
            sender.close()
            report: GeneratorReport = await asyncio.to_thread(receiver.recv)
            await asyncio.to_thread(process.join)
            server_cpu = _own_cpu() - own_before
            pg_cpu = pg_meter.used()
            stats = server.stats
            await server.stop()
            loop_report: AlertLoopReport | None = None
            async with pool.connection() as conn:
                backlog = await pending_dirty(conn)
            if args.alert_loop:
                stop_alerts.send("stop")
                loop_report = await asyncio.to_thread(alerts_out.recv)
                await asyncio.to_thread(alerts.join)
            async with pool.connection() as conn:
                cur = await conn.execute("SELECT count(*) FROM qc_audit")
                reflagged = (await cur.fetchone() or (0,))[0]
                cur = await conn.execute(
                    "SELECT count(*), count(DISTINCT (r.station_id, r.parameter_id, r.time))"
                    " FROM reading r JOIN station s ON s.id = r.station_id"
                    " WHERE s.code LIKE 'bench-a-%%' AND r.period_s = 0"
                )
                rows, distinct = await cur.fetchone() or (0, 0)

    elapsed = report.last_reply - report.first_send
    load_end = os.getloadavg()
    latencies = report.latencies_ms
    print(
        f"PostgreSQL {version}; {args.stations} stations, {args.rate:g} packets/s offered "
        f"for {args.seconds:g} s, group commit window {args.window_ms:g} ms, "
        f"{args.in_flight} commits in flight"
        + ("" if args.alert_loop else ", WITHOUT the alert loop process")
    )
    print(
        "load average (1, 5, 15 min): at the start "
        + ", ".join(f"{x:.2f}" for x in load_start)
        + "; at the end "
        + ", ".join(f"{x:.2f}" for x in load_end)
    )
    print(f"connections opened in {report.connect_s:.2f} s")
    print(
        f"sent {report.sent} packets ({report.readings} readings) in {report.send_s:.1f} s "
        f"= {report.sent / report.send_s:.0f} packets/s offered"
    )
    print(
        f"answered {report.answered} of {report.sent}; sustained "
        f"{report.answered / elapsed:.0f} packets/s "
        f"({report.readings / elapsed:.0f} readings/s) from first send to last reply"
    )
    if latencies:
        print(
            f"reply latency ms: p50 {percentile(latencies, 0.50):.1f}  "
            f"p90 {percentile(latencies, 0.90):.1f}  p99 {percentile(latencies, 0.99):.1f}  "
            f"max {max(latencies):.1f}  mean {statistics.fmean(latencies):.1f}"
        )
    print(
        f"CPU s: server {server_cpu:.1f} ({server_cpu / report.send_s:.0%} of a core, "
        f"{server_cpu / max(report.sent, 1) * 1000:.3f} ms a frame), "
        f"generator {report.cpu_s:.1f} ({report.cpu_s / report.send_s:.0%}), "
        f"PostgreSQL {pg_cpu:.1f} ({pg_cpu / report.send_s:.0%})"
    )
    print(
        f"server: {stats.frames} frames, {stats.batches} commits "
        f"({stats.frames / max(stats.batches, 1):.1f} frames each), "
        f"{stats.replies} replies, bad CRC {stats.bad_crc}, garbage {stats.garbage_bytes} B; "
        f"readings accepted {stats.accepted}, duplicate {stats.duplicate}, "
        f"revised {stats.revised}, rejected {stats.rejected}"
    )
    if loop_report is not None:
        print(
            f"alert loop (own process): {loop_report.rounds} rounds; {backlog} dirty keys "
            f"waiting when the load ended, drained in {loop_report.drain_s:.1f} s; CPU "
            f"{loop_report.cpu_s:.1f} s ({loop_report.cpu_s / report.send_s:.0%}); "
            f"history QC re-flagged {reflagged} readings"
        )
        print(stall_summary(report.timeline, loop_report.round_times))
    exact = rows == distinct == report.readings == stats.accepted and stats.duplicate == 0
    print(f"stored {rows} rows ({distinct} distinct keys) for {report.readings} readings sent: "
          + ("every reading stored exactly once" if exact else "MISMATCH"))  # fmt: skip
    return 0 if exact and report.answered == report.sent else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--rate", type=float, default=1000.0, help="packets/s, all stations")
    parser.add_argument("--stations", type=int, default=200)
    parser.add_argument("--window-ms", type=float, default=5.0, help="group commit window")
    parser.add_argument("--in-flight", type=int, default=2, help="commits in flight at once")
    parser.add_argument(
        "--no-alert-loop",
        dest="alert_loop",
        action="store_false",
        help="diagnostic: run no alert loop (history QC, rollups) beside the server",
    )
    parser.add_argument("--profile", type=Path, help="write the server's cProfile stats here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.profile is None:
        return asyncio.run(run(args))
    profile = cProfile.Profile()
    try:
        return profile.runcall(asyncio.run, run(args))
    finally:
        profile.dump_stats(args.profile)
        pstats.Stats(str(args.profile)).sort_stats("cumulative").print_stats(25)


if __name__ == "__main__":
    sys.exit(main())
