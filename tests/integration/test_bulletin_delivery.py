"""Delivering the monthly bulletin over real PostgreSQL, a real SMTP server (aiosmtpd) and a real
HTTP receiver: one message per bulletin subscription and version, e-mail with the stored page and
CSV zip attached, webhooks with a signed link that answers without an API key for 30 days."""

from __future__ import annotations

import email
import email.policy
from collections.abc import AsyncIterator
from datetime import timedelta
from email.message import EmailMessage
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import orjson
import pytest
from psycopg_pool import AsyncConnectionPool
from pydantic import SecretStr

from alerts.bulletin.monthly import generate_monthly_bulletin
from alerts.notify.channels import build_channels
from alerts.notify.channels.base import http_client
from alerts.notify.dispatcher import Dispatcher
from api.app import create_app
from core.errors import SettingsError
from core.settings import Settings
from core.signing import bulletin_link
from core.timeutil import utcnow
from envlink.runtime import run_seed_subscriptions
from schemas.notifications import SubscriptionIn
from store.bulletins import BulletinFiles, bulletin_files, queue_bulletin_deliveries
from store.keys import create_key
from store.outbox import attempts_of, list_notifications
from store.subscriptions import create_subscription
from tests.e2e.test_channels import Mailbox, Receiver, start_smtp

SIGNING_KEY = "bulletin-signing-key-0123456789"
BASE = "http://envlink"


async def _subscribe(
    db: AsyncConnectionPool, code: str, channel: str, target: str, kind: str
) -> None:
    spec = SubscriptionIn(code=code, channel=channel, target=target, kind=kind, language="both")
    async with db.connection() as conn, conn.transaction():
        await create_subscription(conn, agency="gz_eeb", spec=spec, via="api", at=utcnow())


@pytest.fixture
async def mailbox() -> AsyncIterator[tuple[Mailbox, int]]:
    box = Mailbox()
    server, service = await start_smtp(box)
    yield box, service.port
    server.close()
    await server.wait_closed()


def _dispatcher(
    db: AsyncConnectionPool, settings: Settings, client: httpx.AsyncClient, smtp_port: int,
    signing_key: str | None = SIGNING_KEY,
) -> Dispatcher:  # fmt: skip
    smtp = settings.model_copy(update={"smtp_host": "127.0.0.1", "smtp_port": smtp_port})
    return Dispatcher(
        db, build_channels(smtp, client), public_base_url=BASE, signing_key=signing_key
    )


def _api(db: AsyncConnectionPool, settings: Settings) -> httpx.AsyncClient:
    app = create_app(settings.model_copy(update={"signing_key": SecretStr(SIGNING_KEY)}), pool=db)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE)


def _attachments(raw: bytes) -> list[tuple[str | None, str, bytes]]:
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return [
        (part.get_filename(), part.get_content_type(), part.get_payload(decode=True))
        for part in message.iter_attachments()
    ]


async def test_each_bulletin_subscription_gets_the_version_once(
    db: AsyncConnectionPool, settings: Settings, mailbox: tuple[Mailbox, int]
) -> None:
    box, smtp_port = mailbox
    async with Receiver() as hook:
        await _subscribe(db, "gz-bulletin-mail", "email", "office@example.cn", "bulletin")
        await _subscribe(db, "gz-bulletin-hook", "webhook", hook.url(), "bulletin")
        await _subscribe(db, "gz-alerts-mail", "email", "duty@example.cn", "alerts")
        stored = await generate_monthly_bulletin(db, now=utcnow())
        async with db.connection() as conn:
            files = await bulletin_files(conn, stored.month, stored.version)
            assert files is not None
            # Queuing the same version again adds nothing: once per subscription and version.
            again = await queue_bulletin_deliveries(
                conn, stored, at=utcnow(), deadline_at=utcnow() + timedelta(days=1)
            )
        assert again == []
        async with http_client(5.0) as client:
            attempted = await _dispatcher(db, settings, client, smtp_port).drain()
            assert [a.status for a in attempted] == ["sent", "sent"]
            assert await _dispatcher(db, settings, client, smtp_port).drain() == []
    month = f"{stored.month:%Y-%m}"
    stem = f"envlink-bulletin-{month}-v{stored.version}"
    assert [(sender, to) for sender, to, _ in box.messages] == [
        ("envlink@localhost", ["office@example.cn"])
    ]
    assert _attachments(box.messages[0][2]) == [
        (f"{stem}.html", "text/html", files.html.encode()),
        (f"{stem}.zip", "application/zip", files.csv_zip),
    ]
    assert len(hook.requests) == 1
    request = hook.requests[0]
    body = orjson.loads(request.body)
    assert body["notification"]["kind"] == "bulletin"
    assert request.headers["idempotency-key"] == body["notification"]["id"]
    assert (body["bulletin"]["month"], body["bulletin"]["version"]) == (month, stored.version)
    await _the_links_answer_without_a_key(db, settings, body["bulletin"]["links"], files)


async def _the_links_answer_without_a_key(
    db: AsyncConnectionPool, settings: Settings, links: dict[str, str], files: BulletinFiles
) -> None:
    async with _api(db, settings) as api:
        assert links["html"].startswith(f"{BASE}/v1/reports/bulletin/signed?")
        page = await api.get(links["html"])
        assert page.status_code == 200, page.text
        assert page.headers["content-type"] == "text/html; charset=utf-8"
        assert page.text == files.html
        zipped = await api.get(links["csv"])
        assert zipped.status_code == 200, zipped.text
        assert zipped.headers["content-type"] == "application/zip"
        assert zipped.content == files.csv_zip
        # Tampered: another version, another format, a later expiry, a changed signature.
        query = {k: v[0] for k, v in parse_qs(urlsplit(links["html"]).query).items()}
        path = "/v1/reports/bulletin/signed"
        for change in (
            {"version": str(int(query["version"]) + 1)},
            {"format": "csv"},
            {"expires": str(int(query["expires"]) + 1)},
            {"sig": ("0" if query["sig"][0] != "0" else "1") + query["sig"][1:]},
        ):
            bad = await api.get(path, params={**query, **change})
            assert bad.status_code == 403, (change, bad.text)
            assert bad.json()["error"]["code"] == "bad_signature"
        # Signed with another key.
        month, version = query["month"], int(query["version"])
        other = bulletin_link(
            BASE, "another-key-0123456789", month=month, version=version, file_format="html",
            expires_at=utcnow() + timedelta(days=1),
        )  # fmt: skip
        assert (await api.get(other)).json()["error"]["code"] == "bad_signature"
        expired = bulletin_link(
            BASE, SIGNING_KEY, month=month, version=version, file_format="html",
            expires_at=utcnow() - timedelta(seconds=1),
        )  # fmt: skip
        answer = await api.get(expired)
        assert answer.status_code == 403
        assert answer.json()["error"]["code"] == "link_expired"
        # A well-signed link to a version never stored.
        missing = bulletin_link(
            BASE, SIGNING_KEY, month=month, version=version + 5, file_format="html",
            expires_at=utcnow() + timedelta(days=1),
        )  # fmt: skip
        assert (await api.get(missing)).status_code == 404


async def test_the_links_expire_30_days_after_the_message(
    db: AsyncConnectionPool, settings: Settings, mailbox: tuple[Mailbox, int]
) -> None:
    async with Receiver() as hook:
        await _subscribe(db, "dg-bulletin-hook", "webhook", hook.url(), "bulletin")
        now = utcnow()
        await generate_monthly_bulletin(db, now=now)
        async with http_client(5.0) as client:
            await _dispatcher(db, settings, client, mailbox[1]).drain()
    links = orjson.loads(hook.requests[0].body)["bulletin"]["links"]
    expires = int(parse_qs(urlsplit(links["html"]).query)["expires"][0])
    assert expires == int((now + timedelta(days=30)).timestamp())


async def test_a_new_version_is_delivered_again_and_a_link_channel_needs_the_signing_key(
    db: AsyncConnectionPool, settings: Settings, mailbox: tuple[Mailbox, int]
) -> None:
    box, smtp_port = mailbox
    await _subscribe(db, "gz-bulletin-mail", "email", "office@example.cn", "bulletin")
    await _subscribe(db, "gz-bulletin-robot", "wecom", "http://127.0.0.1:9/robot", "bulletin")
    await generate_monthly_bulletin(db, now=utcnow())
    second = await generate_monthly_bulletin(db, now=utcnow())
    assert second.version == 2
    async with http_client(5.0) as client:
        attempted = await _dispatcher(db, settings, client, smtp_port, signing_key=None).drain()
    # E-mail needs no link: both versions are mailed. The robot's messages are dead-lettered.
    assert sorted(a.status for a in attempted) == ["failed", "failed", "sent", "sent"]
    subjects = sorted(
        str(email.message_from_bytes(raw, policy=email.policy.default)["Subject"])
        for _, _, raw in box.messages
    )
    assert [s.endswith(f"(version {v})") for s, v in zip(subjects, (1, 2), strict=True)] == [
        True,
        True,
    ]
    async with db.connection() as conn:
        failed = await list_notifications(conn, status="failed")
        tries = await attempts_of(conn, [n.id for n in failed])
    assert [(n.kind, n.channel) for n in failed] == [("bulletin", "wecom")] * 2
    async with db.connection() as conn:
        _, plain = await create_key(conn, agency="gz_eeb", roles=["reader"])
    async with _api(db, settings) as api:
        listed = await api.get("/v1/notifications", headers={"X-API-Key": plain})
    assert listed.status_code == 200, listed.text
    assert sorted((n["kind"], n["channel"], n["status"]) for n in listed.json()["items"]) == [
        ("bulletin", "email", "sent"),
        ("bulletin", "email", "sent"),
        ("bulletin", "wecom", "failed"),
        ("bulletin", "wecom", "failed"),
    ]
    assert [t.error for t in tries] == [
        "cannot build the message: a bulletin sent by wecom needs a signed link: set"
        " ENVLINK_SIGNING_KEY on the worker and the API (the same value)"
    ] * 2


async def test_a_bulletin_by_link_needs_a_signing_key_where_subscriptions_are_made(
    db: AsyncConnectionPool, settings: Settings, tmp_path: Path
) -> None:
    async with db.connection() as conn:
        _, plain = await create_key(conn, agency="gz_eeb", roles=["admin"])
    body = {"code": "gz-bulletin-hook", "channel": "webhook", "target": "https://h.example.cn/b"}
    body |= {"kind": "bulletin"}
    app = create_app(settings, pool=db)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url=BASE, headers={"X-API-Key": plain}
    ) as keyless:
        refused = await keyless.post("/v1/subscriptions", json=body)
        assert refused.status_code == 400, refused.text
        assert refused.json()["error"]["message"] == (
            "kind: subscription gz-bulletin-hook sends the bulletin by webhook as a signed link,"
            " which needs ENVLINK_SIGNING_KEY (the same on the API and the worker); set it, or"
            " use e-mail"
        )
        mailed = await keyless.post(
            "/v1/subscriptions",
            json={**body, "code": "gz-bulletin-mail", "channel": "email", "target": "a@example.cn"},
        )
        assert mailed.status_code == 201, mailed.text
    async with _api(db, settings) as signing:
        made = await signing.post("/v1/subscriptions", json=body, headers={"X-API-Key": plain})
    assert made.status_code == 201, made.text
    (tmp_path / "subscriptions.yaml").write_text(
        "subscriptions:\n"
        "  - {code: dg-bulletin-robot, agency: dg_eeb, channel: wecom, kind: bulletin,\n"
        "     target: 'https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=k'}\n"
    )
    with pytest.raises(SettingsError) as raised:
        await run_seed_subscriptions("postgresql://nowhere.invalid/x", Settings(
            database_url=settings.database_url, config_dir=tmp_path
        ))  # fmt: skip
    assert str(raised.value).startswith(
        "subscriptions.yaml: kind: subscription dg-bulletin-robot sends the bulletin by wecom"
    )
