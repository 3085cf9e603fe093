"""The `envlink` command: migrate, seed, keys, api, worker, serve, demo, import-csv, export,
report."""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import sys
import time
from collections.abc import Sequence
from contextlib import nullcontext
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Final, get_args

from core.errors import EnvLinkError, InvalidInput, SettingsError
from core.logging import configure_logging
from core.settings import Settings, load_settings
from core.timeutil import CST, parse_time, rfc3339, utcnow
from envlink.check import LIVENESS_MAX_AGE_S, Finding, check, liveness
from envlink.database import database
from envlink.history import history_days, load_history
from ingest.pipeline import Pipeline
from ingest.sources.csv_folder import FileReport, import_file
from ingest.sources.hj212.protocol import request_window
from ingest.sources.http_pull import HttpPullJob, PullError
from schemas.common import ROLES, Area, City
from schemas.readings import INTERVAL_PERIOD_S, Interval
from schemas.sources import Feed, load_sources
from store.audit import record_audit
from store.backfill import (
    NOT_CONNECTED,
    BackfillRequest,
    backfill_request,
    expire_backfill_requests,
    request_backfill,
)
from store.export import export_batches, export_count, plan_export
from store.keys import ApiKey, create_key, get_key, list_keys, revoke_key
from store.migrate import Migration, migrate_to_timescaledb
from store.pool import connect, open_pool
from store.timescale import TimescaleOptions, reading_layout

if TYPE_CHECKING:
    from alerts.bulletin.page import Language
    from ingest.sources.story import Story
    from schemas.bulletin import Bulletin

# The API, the worker and the bulletin are imported by the commands that use them, so that the
# others (backfill, check, export, keys…) start in a fraction of the time.


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="envlink",
        description="EnvLink: shared air and water monitoring of Guangzhou and Dongguan.",
        epilog="Settings come from ENVLINK_* environment variables (see README.md).",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    migrate = commands.add_parser("migrate", help="apply database migrations")
    migrate.add_argument(
        "--to-timescaledb",
        action="store_true",
        help="also move readings kept in monthly partitions onto a TimescaleDB hypertable"
        " (the server must preload TimescaleDB; writers of readings wait while it runs)",
    )
    commands.add_parser("seed", help="load config/*.yaml (stations, parameters, rivers)")
    keys = commands.add_parser("keys", help="create, list and revoke API keys")
    key_commands = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    create = key_commands.add_parser("create", help="create a key; prints it on the last line")
    create.add_argument("--agency", required=True, help="agency code, e.g. gz_eeb")
    create.add_argument(
        "--role", action="append", required=True, choices=ROLES, help="repeat for several roles"
    )
    create.add_argument("--label", help="a note to recognise the key by")
    create.add_argument(
        "--rate-limit",
        type=_positive,
        metavar="N",
        help="requests a minute for this key (default: ENVLINK_RATE_LIMIT_PER_MINUTE)",
    )
    expiry = create.add_mutually_exclusive_group()
    expiry.add_argument("--expires", help="expiry time, RFC 3339 (no offset = Asia/Shanghai)")
    expiry.add_argument("--expires-in-days", type=float, help="expiry in days from now")
    key_commands.add_parser("list", help="list keys (never the keys themselves)")
    revoke = key_commands.add_parser("revoke", help="revoke a key by id")
    revoke.add_argument("id", type=int)
    api = commands.add_parser("api", help="serve the HTTP API")
    api.add_argument(
        "--workers",
        type=_positive,
        default=1,
        metavar="N",
        help="serve from N processes (each with its own database pool); default 1",
    )
    worker = commands.add_parser("worker", help="run ingest and alert jobs")
    worker.add_argument("--simulate", action="store_true", help="also run the simulator")
    serve_parser = commands.add_parser("serve", help="API and worker in one process")
    serve_parser.add_argument("--simulate", action="store_true", help="also run the simulator")
    demo = commands.add_parser(
        "demo",
        help="embedded database, catalogue, simulator and API"
        " (on ENVLINK_API_HOST:ENVLINK_API_PORT, 127.0.0.1:8000 unless set)",
    )
    demo.add_argument(
        "--history",
        type=_history,
        metavar="Nd",
        help="first load N days of simulated hourly data (e.g. 400d), skipping days that hold"
        " data already; it raises no alerts",
    )
    check = commands.add_parser(
        "check",
        help="check settings, database, migrations, TimescaleDB, catalogue and sources;"
        " exit 1 on a problem",
    )
    check.add_argument(
        "--liveness",
        action="store_true",
        help="only whether a worker here touched its heartbeat lately (no database needed)",
    )
    check.add_argument(
        "--max-age",
        type=float,
        default=LIVENESS_MAX_AGE_S,
        metavar="S",
        help=f"oldest heartbeat that counts as alive, in seconds (default {LIVENESS_MAX_AGE_S:g})",
    )
    backfill = commands.add_parser(
        "backfill",
        help="fetch and store a range of an HTTP pull feed again (config/sources.yaml), or ask"
        " a connected HJ 212 station for it; what is stored already counts as duplicate",
    )
    what = backfill.add_mutually_exclusive_group(required=True)
    what.add_argument("--source", help="the HTTP pull feed's code in sources.yaml")
    what.add_argument(
        "--station",
        help="an HJ 212 station's code: the worker holding its connection asks it for the range",
    )
    backfill.add_argument(
        "--from", dest="start", required=True, help="RFC 3339 (no offset = Asia/Shanghai)"
    )
    backfill.add_argument("--to", dest="end", required=True, help="RFC 3339, after --from")
    backfill.add_argument(
        "--kind",
        choices=tuple(KIND_PERIOD_S),
        default="hourly",
        help="with --station: the data asked for (CN 2051, 2061 or 2031); default hourly",
    )
    backfill.add_argument(
        "--timeout",
        type=_positive,
        default=300,
        metavar="S",
        help="with --station: seconds the station has to finish its answer (default 300)",
    )
    backfill.add_argument(
        "--connected-within",
        type=_positive,
        default=10,
        metavar="S",
        help="with --station: seconds for a worker holding the station's connection to take the"
        " request, else it is not connected (default 10)",
    )
    import_csv = commands.add_parser(
        "import-csv",
        help="import laboratory CSV files once and print a report per row (files stay in place)",
    )
    import_csv.add_argument("files", nargs="+", type=Path, metavar="FILE")
    export = commands.add_parser(
        "export",
        help="readings of a period as CSV or NDJSON (as GET /v1/export), with a progress bar",
    )
    export.add_argument("--start", required=True, help="RFC 3339 (no offset = Asia/Shanghai)")
    export.add_argument("--end", required=True, help="end of the half-open range [start, end)")
    export.add_argument("--format", choices=("csv", "ndjson"), default="csv")
    export.add_argument("--station", action="append", help="station code; repeat for several")
    export.add_argument("--parameter", action="append", help="parameter code; repeat for several")
    export.add_argument("--area", choices=get_args(Area))
    export.add_argument("--city", choices=get_args(City))
    export.add_argument("--interval", choices=get_args(Interval), default="raw")
    export.add_argument("--tz", choices=("Asia/Shanghai", "UTC"), default="Asia/Shanghai")
    export.add_argument(
        "--output", "-o", type=Path, help="file to write (default: standard output)"
    )
    report = commands.add_parser(
        "report",
        help="write a month's joint bulletin into a folder: JSON, a zip of CSV tables, HTML"
        " (as GET /v1/reports/bulletin)",
    )
    report.add_argument("--month", required=True, help="the month, YYYY-MM")
    report.add_argument(
        "--out", required=True, type=Path, metavar="DIR", help="folder to write (made if missing)"
    )
    report.add_argument(
        "--lang", choices=("zh", "en"), default="zh", help="the HTML page's first language"
    )
    return parser


# `envlink backfill --station --kind`: the period of the data asked for.
KIND_PERIOD_S: Final = {"minute": 60, "hourly": 3600, "daily": 86400}
# How often `envlink backfill --station` reads its request's row back.
BACKFILL_POLL_S: Final = 0.2


def _positive(text: str) -> int:
    try:
        number = int(text)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, not {text!r}")
    return number


def _history(text: str) -> int:
    try:
        return history_days(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = load_settings()
        configure_logging(settings.log_level)
        return _run(args, settings)
    except EnvLinkError as exc:
        print(f"envlink: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _run(args: argparse.Namespace, settings: Settings) -> int:
    if args.command == "check" and args.liveness:
        return _report([liveness(settings.heartbeat_path, max_age_s=args.max_age)])
    if args.command == "demo":
        settings = settings.model_copy(update={"database_url": None})
    if args.command == "report":
        from alerts.bulletin.assemble import bulletin_month

        bulletin_month(args.month)  # a bad month stops here, before any database starts
    # The API's port is taken before anything starts: a port in use stops start-up at once.
    api_socket = _listen(settings) if args.command in ("api", "serve", "demo") else None
    try:
        return _run_with(args, settings, api_socket)
    finally:
        if api_socket is not None:
            api_socket.close()


def _listen(settings: Settings) -> socket.socket:
    """A socket listening where the API is to serve; SettingsError names the setting.

    Made as a TCP socket by name (IPPROTO_TCP, not the default 0): asyncio turns Nagle's
    algorithm off only on connections accepted from such a socket, and with it on, the body
    of a response written after its headers waited for the client's delayed acknowledgement
    on a kept-alive connection (40 ms more a request for `envlink api` in one process).
    """
    host, port = settings.api_host, settings.api_port
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listening = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:  # as socket.create_server: IPv6 only
            listening.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        listening.bind((host, port))
        listening.listen()
        return listening
    except OSError as exc:
        listening.close()
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise SettingsError(
            f"cannot serve the API on {host}:{port}: {reason}; set ENVLINK_API_PORT to a free"
            " port (or ENVLINK_API_HOST to an address of this machine)"
        ) from exc


def _api_url(settings: Settings) -> str:
    """The URL the API answers on, as a browser on this machine reaches it."""
    host = settings.api_host
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "[::1]"
    elif ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.api_port}"


def _run_with(
    args: argparse.Namespace, settings: Settings, api_socket: socket.socket | None
) -> int:
    with database(settings) as url:
        if args.command == "migrate" and args.to_timescaledb:
            return asyncio.run(_to_timescaledb(url, settings))
        if args.command == "keys":
            return asyncio.run(_keys(url, args))
        if args.command == "check":
            return _report(asyncio.run(check(url, settings)))
        if args.command == "backfill" and args.station:
            return asyncio.run(_backfill_station(url, args))
        if args.command == "backfill":
            return asyncio.run(_backfill(url, settings, args))
        if args.command == "import-csv":
            return asyncio.run(_import_csv(url, settings, args.files))
        if args.command == "export":
            return asyncio.run(_export(url, settings, args))
        if args.command == "report":
            found = asyncio.run(_bulletin(url, args.month))
            return _write_bulletin(found, args.out, args.lang)
        return _prepare_or_serve(url, args, settings, api_socket)


def _prepare_or_serve(
    url: str, args: argparse.Namespace, settings: Settings, api_socket: socket.socket | None
) -> int:
    """migrate, seed, demo, api, worker and serve: the commands that need the runtime."""
    from envlink.demo import (
        INBOX_FILE,
        KEYS_FILE,
        STORY_FILE,
        demo_keys,
        demo_story,
        demo_subscriptions,
        inbox_router,
    )
    from envlink.runtime import (
        check_timescaledb,
        run_migrations,
        run_seed,
        run_seed_subscriptions,
        serve,
        serve_api_processes,
    )

    if args.command in ("migrate", "demo"):
        applied, layout = asyncio.run(run_migrations(url, settings))
        _print_applied(applied)
        print(layout)
    if args.command in ("seed", "demo"):
        report, rules = asyncio.run(run_seed(url, settings))
        subscriptions = asyncio.run(run_seed_subscriptions(url, settings))
        print("\n".join(report.lines() + rules.lines() + subscriptions.lines()))
    story = None
    if args.command == "demo":
        story = asyncio.run(demo_story(url, settings.data_dir, utcnow()))
    if args.command == "demo" and args.history:
        _load_history(url, settings, args.history, story)
    if args.command in ("api", "worker", "serve"):
        asyncio.run(check_timescaledb(url, settings))
    if args.command == "demo":
        keys = asyncio.run(demo_keys(url, settings.data_dir))
        inboxes = asyncio.run(demo_subscriptions(url, _api_url(settings)))
        where = settings.data_dir / KEYS_FILE
        banner = [
            f"EnvLink demo: {_api_url(settings)}/docs",
            f"API keys (kept in {where}, mode 0600, and reused at the next start):",
            *(f"  {key.agency} ({', '.join(key.roles)}): {key.key}" for key in keys),
            f"Story (README, 'The demo's story'): anchored at {_story_start(story)}"
            f" (kept in {settings.data_dir / STORY_FILE}), replayed every"
            f" {story.period_s // 3600} h"
            if story is not None
            else "",
            f"Notifications of subscriptions {', '.join(inboxes)} are printed here and kept in"
            f" {settings.data_dir / INBOX_FILE}",
        ]
        asyncio.run(
            serve(
                url,
                settings,
                api=True,
                worker=True,
                simulate=True,
                api_socket=api_socket,
                announce="\n".join(line for line in banner if line),
                story=story,
                extra_routes=inbox_router(settings.data_dir),
            )
        )
    elif args.command == "api" and args.workers > 1:
        assert api_socket is not None
        return serve_api_processes(url, settings, workers=args.workers, api_socket=api_socket)
    elif args.command in ("api", "worker", "serve"):
        asyncio.run(
            serve(
                url,
                settings,
                api=args.command in ("api", "serve"),
                worker=args.command in ("worker", "serve"),
                simulate=getattr(args, "simulate", False),
                api_socket=api_socket,
            )
        )
    return 0


def _report(findings: list[Finding]) -> int:
    """Print one line per finding; 1 if any found a problem."""
    for finding in findings:
        print(finding.line())
    problems = sum(not finding.ok for finding in findings)
    print(f"{problems} problem{'s' if problems != 1 else ''}" if problems else "all ok")
    return 1 if problems else 0


def _print_applied(applied: Sequence[Migration]) -> None:
    print(
        f"migrations: {len(applied)} applied"
        + "".join(f"\n  {m.version:04d}_{m.name}" for m in applied)
    )


class _ProgressBar:
    """A one-line progress bar on standard error, redrawn in place."""

    def __init__(self, label: str, width: int = 30, unit: str = "rows") -> None:
        self.label, self.width, self.started = label, width, time.monotonic()
        self.unit = unit
        self.drawn = False

    def __call__(self, done: int, total: int, note: str = "") -> None:
        share = min(done / total, 1.0) if total else 1.0
        filled = round(share * self.width)
        elapsed = time.monotonic() - self.started
        sys.stderr.write(
            f"\r{self.label} [{'#' * filled}{'.' * (self.width - filled)}] {share:4.0%}"
            f" {done:,}/{total:,} {self.unit}, {elapsed:.0f} s{f': {note}' if note else ''}"
        )
        sys.stderr.flush()
        self.drawn = True

    def close(self) -> None:
        if self.drawn:
            sys.stderr.write("\n")
            self.drawn = False


def _story_start(story: Story) -> str:
    return story.anchor.astimezone(CST).isoformat(timespec="minutes")


def _load_history(url: str, settings: Settings, days: int, story: Story | None = None) -> None:
    """`envlink demo --history Nd`: the simulated past, with a progress bar in days."""
    bar = _ProgressBar("loading history", unit="days")
    try:
        report = asyncio.run(
            load_history(
                url,
                days=days,
                water_min_samples=settings.water_daily_min_samples,
                earliest=settings.earliest_reading_date,
                progress=bar,
                story=story,
            )
        )
    finally:
        bar.close()
    print("\n".join(report.lines()), flush=True)


async def _to_timescaledb(url: str, settings: Settings) -> int:
    """`envlink migrate --to-timescaledb`: migrations, then the readings onto a hypertable."""
    conn = await connect(url)
    bar = _ProgressBar("moving readings")
    try:
        try:
            applied, report = await migrate_to_timescaledb(
                conn, timescaledb=TimescaleOptions.from_settings(settings), progress=bar
            )
        finally:
            bar.close()
        _print_applied(applied)
        if report.already:
            print("reading is a TimescaleDB hypertable already: nothing to move")
        else:
            print(f"moved {report.moved:,} readings onto a TimescaleDB hypertable (counts checked)")
        print((await reading_layout(conn)).describe())
        return 0
    finally:
        await conn.close()


async def _create_key(
    url: str,
    agency: str,
    roles: list[str],
    label: str | None,
    expires: str | None,
    rate_limit: int | None = None,
) -> tuple[ApiKey, str]:
    from api.routers.keys import audited  # the API's view of a key, for the audit log

    conn = await connect(url)
    try:
        expires_at = parse_time(expires, field="--expires") if expires else None
        async with conn.transaction():
            key, plain = await create_key(
                conn,
                agency=agency,
                roles=roles,
                label=label,
                expires_at=expires_at,
                rate_limit=rate_limit,
            )
            await record_audit(
                conn, key_id=None, agency=None, action="key.create", target=f"key:{key.id}",
                after=audited(key),
            )  # fmt: skip
        return key, plain
    finally:
        await conn.close()


async def _keys(url: str, args: argparse.Namespace) -> int:
    if args.keys_command == "create":
        expires = args.expires
        if args.expires_in_days is not None:
            expires = (utcnow() + timedelta(days=args.expires_in_days)).isoformat()
        key, plain = await _create_key(
            url, args.agency, args.role, args.label, expires, args.rate_limit
        )
        print(
            f"created key {key.id} ({key.prefix}) for {key.agency}: roles {', '.join(key.roles)}"
            + (f", expires {rfc3339(key.expires_at)}" if key.expires_at else "")
            + (f", {key.rate_limit} requests a minute" if key.rate_limit else "")
        )
        print(plain)
        return 0
    from api.routers.keys import audited

    conn = await connect(url)
    try:
        if args.keys_command == "list":
            for key in await list_keys(conn):
                state = (
                    "revoked"
                    if key.revoked_at
                    else ("expired" if key.expires_at and key.expires_at <= utcnow() else "active")
                )
                print(
                    f"{key.id}\t{key.prefix}\t{key.agency}\t{','.join(key.roles)}\t{state}"
                    f"\t{_rate(key)}\t{key.label or ''}"
                )
        else:
            async with conn.transaction():
                before = await get_key(conn, args.id)
                key = await revoke_key(conn, args.id)
                if before.revoked_at is None:
                    await record_audit(
                        conn, key_id=None, agency=None, action="key.revoke",
                        target=f"key:{key.id}", before=audited(before), after=audited(key),
                    )  # fmt: skip
            print(f"revoked key {key.id} ({key.prefix}) of {key.agency}")
        return 0
    finally:
        await conn.close()


def _rate(key: ApiKey) -> str:
    return f"{key.rate_limit}/min" if key.rate_limit is not None else "default rate"


def _pull_feed(settings: Settings, code: str) -> Feed:
    """The HTTP pull feed `code` (or `http:code`); a SettingsError names the feeds there are."""
    feeds = load_sources(settings.sources_path, required=True).http_feeds
    wanted = code.removeprefix("http:")
    for feed in feeds:
        if feed.code == wanted:
            return feed
    known = ", ".join(feed.code for feed in feeds) or "none"
    raise SettingsError(
        f"--source {code}: no HTTP pull feed of that code in {settings.sources_path} (there:"
        f" {known}). Backfill re-runs pull feeds; HJ 212 stations are asked with --station"
        " CODE, MQTT and CSV sources resend or re-drop"
    )


async def _backfill(url: str, settings: Settings, args: argparse.Namespace) -> int:
    """`envlink backfill`: one feed's range fetched and stored again, with a progress bar."""
    feed = _pull_feed(settings, args.source)
    start = parse_time(args.start, field="--from")
    end = parse_time(args.end, field="--to")
    if start >= end:
        raise SettingsError(f"--from {args.start} must be before --to {args.end}")
    pool = await open_pool(url, name="backfill", min_size=1, max_size=2)
    bar = _ProgressBar(f"backfill {feed.code}", unit="windows")
    try:
        job = HttpPullJob(Pipeline(pool, earliest=settings.earliest_reading_date), pool, feed)
        await job.start()
        try:
            report = await job.backfill(start, end, progress=bar)
        except PullError as exc:
            bar.close()
            print(f"envlink: backfill of {feed.code} stopped: {exc}", file=sys.stderr)
            return 1
        finally:
            await job.stop()
    finally:
        bar.close()
        await pool.close()
    counts = ", ".join(
        f"{report.total(outcome)} {outcome}"
        for outcome in ("accepted", "duplicate", "revised", "rejected")
    )
    print(f"{feed.code}: {len(report.windows)} windows, {counts}")
    return 0


async def _backfill_station(url: str, args: argparse.Namespace) -> int:
    """`envlink backfill --station`: a request row for the worker holding the station's
    connection, then its progress until the station has answered (0) or it failed (1)."""
    period_s = KIND_PERIOD_S[args.kind]
    start = parse_time(args.start, field="--from")
    end = parse_time(args.end, field="--to")
    if start >= end:
        raise SettingsError(f"--from {args.start} must be before --to {args.end}")
    begin, last = request_window(period_s, start, end)
    periods = (last - begin) // timedelta(seconds=period_s) + 1
    conn = await connect(url)
    try:
        async with conn.transaction():
            request = await request_backfill(
                conn,
                station=args.station,
                period_s=period_s,
                begin=begin,
                end=last,
                claim_within_s=args.connected_within,
                timeout_s=args.timeout,
            )
        print(
            f"backfill request {request.id}: {args.kind} data of {request.station},"
            f" {periods} periods from {rfc3339(begin)} to {rfc3339(last)}"
        )
        bar = _ProgressBar(f"backfill {request.station}", unit="periods")
        try:
            while not request.finished:
                bar(request.packets, periods, _progress(request))
                await asyncio.sleep(BACKFILL_POLL_S)
                async with conn.transaction():
                    await expire_backfill_requests(conn)
                found = await backfill_request(conn, request.id)
                assert found is not None  # requests are never deleted
                request = found
            bar(request.packets, periods, _progress(request))
        finally:
            bar.close()
    finally:
        await conn.close()
    return _backfill_outcome(request, args.connected_within)


def _progress(request: BackfillRequest) -> str:
    """`answered,  12 readings`: the state padded, so that a shorter one leaves no tail."""
    return f"{request.state + ',':<10} {request.readings:,} readings"


def _backfill_outcome(request: BackfillRequest, connected_within: int) -> int:
    """Print how a finished station backfill went; its exit status."""
    counts = ", ".join(
        f"{count} {outcome}"
        for outcome, count in (
            ("accepted", request.accepted),
            ("duplicate", request.duplicate),
            ("revised", request.revised),
            ("rejected", request.rejected),
        )
    )
    if request.state == "completed":
        note = f" ({request.detail})" if request.detail else ""
        print(f"{request.station}: completed, {request.packets} packets, {counts}{note}")
        return 0
    if request.detail == NOT_CONNECTED:
        print(
            f"envlink: station {request.station} is not connected to any running HJ 212 server"
            f" (no worker took backfill request {request.id} within {connected_within} s)",
            file=sys.stderr,
        )
    else:
        print(
            f"envlink: backfill request {request.id} of {request.station} failed:"
            f" {request.detail} ({request.packets} packets, {counts})",
            file=sys.stderr,
        )
    return 1


async def _import_csv(url: str, settings: Settings, files: list[Path]) -> int:
    """Import each file in one intake and print its report; 1 if any file could not be read."""
    pool = await open_pool(url, name="import-csv", min_size=1, max_size=2)
    failed = 0
    try:
        pipeline = Pipeline(pool, earliest=settings.earliest_reading_date)
        for path in files:
            if not path.is_file():
                report = FileReport(name=str(path), failure="no such file")
            else:
                report = await import_file(pipeline, path)
            failed += report.failure is not None
            _print_report(path, report)
    finally:
        await pool.close()
    return 1 if failed else 0


async def _export(url: str, settings: Settings, args: argparse.Namespace) -> int:
    """`envlink export`: the file to --output (written whole, or not at all) or standard output."""
    conn = await connect(url)
    try:
        plan = await plan_export(
            conn,
            stations=args.station,
            parameters=args.parameter,
            area=args.area,
            city=args.city,
            start=parse_time(args.start, field="--start"),
            end=parse_time(args.end, field="--end"),
            period_s=INTERVAL_PERIOD_S.get(args.interval),
            format=args.format,
            utc=args.tz == "UTC",
            max_days=settings.export_max_days,
        )
        total = await export_count(conn, plan)
        output: Path | None = args.output
        partial = output.with_name(output.name + ".part") if output else None
        bar = _ProgressBar("exporting")
        done = 0
        try:
            with partial.open("wb") if partial else nullcontext(sys.stdout.buffer) as out:
                out.write(plan.preamble())
                bar(done, total)
                async for batch in export_batches(conn, plan):
                    out.write(batch)
                    done += batch.count(b"\n")
                    bar(done, total)
        except BaseException:
            if partial is not None:
                partial.unlink(missing_ok=True)
            raise
        finally:
            bar.close()
        if partial is not None and output is not None:
            partial.replace(output)
        where = f" to {output}" if output else ""
        print(f"exported {done:,} rows{where}", file=sys.stderr)
        return 0
    finally:
        await conn.close()


async def _bulletin(url: str, month: str) -> Bulletin:
    """The month's bulletin, assembled now."""
    from alerts.bulletin.assemble import assemble_bulletin, bulletin_month

    conn = await connect(url)
    try:
        return await assemble_bulletin(conn, bulletin_month(month), now=utcnow())
    finally:
        await conn.close()


def _write_bulletin(found: Bulletin, out: Path, language: Language) -> int:
    """`envlink report`: the bulletin as JSON, CSV zip and HTML files in `out`."""
    from alerts.bulletin.page import render_html
    from alerts.bulletin.tables import bulletin_zip

    stem = f"envlink-bulletin-{found.month}"
    files = {
        f"{stem}.json": found.model_dump_json(indent=2).encode("utf-8"),
        f"{stem}.zip": bulletin_zip(found),
        f"{stem}.html": render_html(found, language).encode("utf-8"),
    }
    try:
        out.mkdir(parents=True, exist_ok=True)
        for name, body in files.items():
            partial = out / f"{name}.part"
            partial.write_bytes(body)
            partial.replace(out / name)
    except OSError as exc:
        raise InvalidInput(f"--out {out}: {exc.strerror or exc}") from exc
    for name in files:
        print(out / name)
    return 0


def _print_report(path: Path, report: FileReport) -> None:
    if report.failure:
        print(f"{path}: failed: {report.failure}")
        return
    counts = report.summary
    print(
        f"{path}: {len(report.lines)} rows ({report.encoding}): "
        + ", ".join(f"{count} {outcome}" for outcome, count in counts.items())
    )
    for line in report.lines:
        print(f"{path}:{line.line}\t{line.outcome}" + (f"\t{line.reason}" if line.reason else ""))


if __name__ == "__main__":
    sys.exit(main())
