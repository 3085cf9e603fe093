"""Every notification channel against a real local server over loopback sockets.

HTTP channels talk to a small asyncio HTTP/1.1 receiver started by each test (it records each
request exactly as it arrived and answers as the test scripts it: a status, a body, a delay, or
a dropped connection). E-mail goes to a real aiosmtpd SMTP server, plain and with STARTTLS
(a self-signed certificate made by the test with `cryptography`).
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import email
import email.policy
import hashlib
import hmac
import ipaddress
import socket
import ssl
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import orjson
import pytest
import xmlschema
from aiosmtpd.smtp import SMTP as SmtpServer
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session

from alerts.notify.channels import build_channels
from alerts.notify.channels.base import ChannelTarget, http_client
from alerts.notify.channels.cap import render_cap
from alerts.notify.channels.dingtalk import DingTalkChannel
from alerts.notify.channels.dingtalk import text as dingtalk_text
from alerts.notify.channels.dingtalk import title as dingtalk_title
from alerts.notify.channels.email import EmailChannel, SmtpConfig
from alerts.notify.channels.webhook import WebhookChannel, notification_body
from alerts.notify.channels.wecom import WeComChannel
from alerts.notify.channels.wecom import content as wecom_content
from alerts.notify.message import (
    AgencyInfo,
    AlertEvent,
    AlertSnapshot,
    Notification,
    NotificationEvent,
    ParameterInfo,
    RuleInfo,
    StationInfo,
    alert_links,
)
from alerts.notify.render import full_subject, render_text
from core.settings import Settings
from tests.conftest import ROOT

pytestmark = pytest.mark.slow

CAP_SCHEMA = xmlschema.XMLSchema(ROOT / "schemas" / "cap" / "CAP-v1.2.xsd")
SECRET = "whsec-0123456789"
NOW_S = 1_795_665_605.0  # 2026-11-26 04:00:05 UTC: the channels' fixed clock
FIRED = datetime(2026, 11, 26, 4, 0, 5, tzinfo=UTC)
TIMEOUT_S = 0.5

HUANGPU = StationInfo(
    "gz-a-huangpu", "Huangpu", "黄埔", "guangzhou", "dongjiang", "air", 23.1047, 113.4332
)
HUMEN = StationInfo("dg-a-humen", "Humen", "虎门", "dongguan", "shiziyang", "air", 22.81, 113.67)
PM25 = ParameterInfo("pm25", "PM2.5", "细颗粒物", "ug/m3")
GZ = AgencyInfo("gz_eeb", "Guangzhou EEB", "广州市生态环境局", "guangzhou")


def alert(alert_id: int = 42, station: StationInfo = HUANGPU) -> AlertSnapshot:
    """A firing critical PM2.5 alert."""
    return AlertSnapshot(
        id=alert_id,
        kind="threshold",
        state="firing",
        severity="critical",
        rule=RuleInfo("pm25-1h", 3, "PM2.5 hourly", "PM2.5 小时均值", "GB 3095-2012"),
        station=station,
        parameter=PM25,
        value=182.4,
        unit="ug/m3",
        threshold=150.0,
        opened_at=FIRED,
        links=alert_links("https://envlink.example.cn", alert_id),
        fired_at=FIRED,
        trigger_time=datetime(2026, 11, 26, 3, 0, tzinfo=UTC),
    )


def firing(alert_id: int = 42, station: StationInfo = HUANGPU) -> NotificationEvent:
    """The alert and its firing event."""
    event = AlertEvent(alert_id * 10, alert_id, FIRED, "firing", "firing", "critical", 182.4)
    return NotificationEvent(alert(alert_id, station), event)


def notification(
    *items: NotificationEvent, language: str = "zh", notification_id: str = "ntf-1001"
) -> Notification:
    """A notification to the Guangzhou bureau (the firing of alert 42 by default)."""
    return Notification(
        id=notification_id,
        kind="firing",
        language=language,  # type: ignore[arg-type]
        agency=GZ,
        events=items or (firing(),),
        created_at=FIRED + timedelta(seconds=1),
    )


def fixed_clock() -> float:
    return NOW_S


@dataclass
class Reply:
    """How the receiver answers one request."""

    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    drop: bool = False  # close the connection without answering

    @classmethod
    def json(cls, document: object, status: int = 200) -> Reply:
        return cls(status, orjson.dumps(document), {"Content-Type": "application/json"})


@dataclass
class Request:
    """One request exactly as the receiver read it."""

    method: str
    target: str
    headers: dict[str, str]
    body: bytes

    @property
    def path(self) -> str:
        return urlsplit(self.target).path

    @property
    def query(self) -> dict[str, list[str]]:
        return parse_qs(urlsplit(self.target).query)

    @property
    def raw_query(self) -> str:
        return urlsplit(self.target).query


class Receiver:
    """A minimal HTTP/1.1 server on 127.0.0.1 answering with scripted replies, in order."""

    def __init__(self, *replies: Reply, default: Reply | None = None) -> None:
        self.replies = list(replies)
        self.default = default or Reply(200, b"ok")
        self.requests: list[Request] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> Receiver:
        self._server = await asyncio.start_server(self._connection, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            while request := await self._read(reader):
                self.requests.append(request)
                reply = self.replies.pop(0) if self.replies else self.default
                if reply.delay_s:
                    await asyncio.sleep(reply.delay_s)
                if reply.drop:
                    break
                head = [f"HTTP/1.1 {reply.status} {HTTPStatus(reply.status).phrase}"]
                head += [f"{name}: {value}" for name, value in reply.headers.items()]
                head.append(f"Content-Length: {len(reply.body)}")
                writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + reply.body)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._tasks.discard(task)
            writer.close()

    @staticmethod
    async def _read(reader: asyncio.StreamReader) -> Request | None:
        line = await reader.readline()
        if not line:
            return None
        method, target, _ = line.decode("latin-1").split(" ", 2)
        headers: dict[str, str] = {}
        while (header := await reader.readline()) not in (b"\r\n", b"\n", b""):
            name, _, value = header.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        return Request(method, target, headers, body)


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with http_client(TIMEOUT_S) as shared:
        yield shared


def webhook(client: httpx.AsyncClient, **options: Any) -> WebhookChannel:
    return WebhookChannel(
        client, cap_sender="envlink@envlink.example.cn", clock=fixed_clock, **options
    )


def receiver_verifies(request: Request, secret: str) -> bool:
    """What a subscriber does: HMAC-SHA256 over "<timestamp>.<raw body>" with its secret."""
    timestamp = request.headers["x-envlink-timestamp"]
    expected = hmac.new(secret.encode(), timestamp.encode() + b"." + request.body, hashlib.sha256)
    return hmac.compare_digest(
        f"sha256={expected.hexdigest()}", request.headers["x-envlink-signature"]
    )


def free_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


async def test_webhook_delivers_signed_json_the_receiver_can_verify(
    client: httpx.AsyncClient,
) -> None:
    async with Receiver(Reply(202)) as receiver:
        result = await webhook(client).send(
            notification(), ChannelTarget(receiver.url(), secret=SECRET)
        )
    assert (result.status, result.response_code, result.error) == ("sent", 202, None)
    assert len(receiver.requests) == 1
    request = receiver.requests[0]
    assert (request.method, request.path) == ("POST", "/hook")
    assert request.headers["content-type"] == "application/json"
    assert request.headers["idempotency-key"] == "ntf-1001"
    assert request.headers["x-envlink-timestamp"] == "1795665605"
    assert receiver_verifies(request, SECRET)
    assert not receiver_verifies(request, "not-the-secret")
    body = orjson.loads(request.body)
    assert body == notification_body(notification())
    assert body["notification"] == {
        "id": "ntf-1001",
        "kind": "firing",
        "language": "zh",
        "severity": "critical",
        "created_at": "2026-11-26T12:00:06+08:00",
        "agency": {
            "code": "gz_eeb",
            "name": "Guangzhou EEB",
            "name_zh": "广州市生态环境局",
            "city": "guangzhou",
        },
    }
    [item] = body["events"]
    assert item["alert"]["id"] == 42
    assert (item["alert"]["value"], item["alert"]["unit"], item["alert"]["threshold"]) == (
        182.4,
        "ug/m3",
        150.0,
    )
    assert item["alert"]["trigger_time"] == "2026-11-26T11:00:00+08:00"
    assert item["event"] == {
        "id": 420,
        "kind": "firing",
        "state": "firing",
        "severity": "critical",
        "value": 182.4,
        "at": "2026-11-26T12:00:05+08:00",
    }
    assert item["station"]["code"] == "gz-a-huangpu"
    assert item["parameter"]["code"] == "pm25"
    assert item["rule"] == {
        "id": "pm25-1h",
        "version": 3,
        "name": "PM2.5 hourly",
        "name_zh": "PM2.5 小时均值",
        "standard": "GB 3095-2012",
    }
    assert item["links"] == {
        "alert": "https://envlink.example.cn/v1/alerts/42",
        "cap": "https://envlink.example.cn/v1/alerts/42.cap",
    }
    assert item["headline"] == {
        "zh": "[严重] 告警：黄埔 细颗粒物超过阈值",
        "en": "[Critical] ALERT: PM2.5 above threshold at Huangpu",
    }


async def test_a_tampered_body_or_a_wrong_secret_fails_verification(
    client: httpx.AsyncClient,
) -> None:
    async with Receiver() as receiver:
        await webhook(client).send(notification(), ChannelTarget(receiver.url(), secret=SECRET))
    request = receiver.requests[0]
    tampered = replace(request, body=request.body.replace(b"182.4", b"18.24"))
    assert receiver_verifies(request, SECRET)
    assert not receiver_verifies(tampered, SECRET)
    assert not receiver_verifies(request, SECRET + "x")


async def test_a_resend_carries_the_same_idempotency_key_and_body(
    client: httpx.AsyncClient,
) -> None:
    async with Receiver(Reply(500, b"database down"), Reply(200)) as receiver:
        channel = webhook(client)
        first = await channel.send(notification(), ChannelTarget(receiver.url(), secret=SECRET))
        second = await channel.send(notification(), ChannelTarget(receiver.url(), secret=SECRET))
    assert (first.status, first.response_code, first.error) == (
        "retry",
        500,
        "HTTP 500: database down",
    )
    assert (second.status, second.response_code) == ("sent", 200)
    keys = [r.headers["idempotency-key"] for r in receiver.requests]
    assert keys == ["ntf-1001", "ntf-1001"]
    assert receiver.requests[0].body == receiver.requests[1].body


async def test_a_webhook_without_secret_is_sent_unsigned(client: httpx.AsyncClient) -> None:
    async with Receiver() as receiver:
        result = await webhook(client).send(notification(), ChannelTarget(receiver.url()))
    assert result.status == "sent"
    assert "x-envlink-signature" not in receiver.requests[0].headers
    assert receiver.requests[0].headers["idempotency-key"] == "ntf-1001"


@pytest.mark.parametrize(
    ("reply", "status", "code", "error", "retry_after"),
    [
        (Reply(500, b"boom"), "retry", 500, "HTTP 500: boom", None),
        (Reply(503, headers={"Retry-After": "7"}), "retry", 503, "HTTP 503", 7.0),
        (Reply(429, b"slow down"), "retry", 429, "HTTP 429: slow down", None),
        (Reply(408), "retry", 408, "HTTP 408", None),
        (Reply(404, b"no such hook"), "failed", 404, "HTTP 404: no such hook", None),
        (Reply(401), "failed", 401, "HTTP 401", None),
        (
            Reply(301, headers={"Location": "http://elsewhere/"}),
            "failed",
            301,
            "HTTP 301 redirect to http://elsewhere/ (not followed)",
            None,
        ),
    ],
)
async def test_webhook_answers_are_classified(
    client: httpx.AsyncClient,
    reply: Reply,
    status: str,
    code: int,
    error: str,
    retry_after: float | None,
) -> None:
    async with Receiver(reply) as receiver:
        result = await webhook(client).send(notification(), ChannelTarget(receiver.url()))
    assert (result.status, result.response_code, result.error, result.retry_after_s) == (
        status,
        code,
        error,
        retry_after,
    )
    assert len(receiver.requests) == 1


async def test_a_receiver_slower_than_the_timeout_is_retried(client: httpx.AsyncClient) -> None:
    async with Receiver(Reply(200, delay_s=3.0)) as receiver:
        started = time.monotonic()
        result = await webhook(client).send(notification(), ChannelTarget(receiver.url()))
        elapsed = time.monotonic() - started
    assert result.status == "retry"
    assert result.response_code is None
    assert result.error == "timed out after 0.5 s (ReadTimeout)"
    assert 0.4 < elapsed < 2.0


async def test_a_refused_connection_is_retried(client: httpx.AsyncClient) -> None:
    url = f"http://127.0.0.1:{free_port()}/hook"
    result = await webhook(client).send(notification(), ChannelTarget(url))
    assert result.status == "retry"
    assert result.response_code is None
    assert result.error is not None and result.error.startswith("cannot connect: ")


async def test_a_connection_dropped_without_answer_is_retried(client: httpx.AsyncClient) -> None:
    async with Receiver(Reply(drop=True)) as receiver:
        result = await webhook(client).send(notification(), ChannelTarget(receiver.url()))
    assert result.status == "retry"
    assert result.error == "RemoteProtocolError: Server disconnected without sending a response."
    assert len(receiver.requests) == 1


async def test_a_malformed_target_fails_without_retry(client: httpx.AsyncClient) -> None:
    result = await webhook(client).send(notification(), ChannelTarget("ftp://127.0.0.1/hook"))
    assert result.status == "failed"
    assert result.error is not None and result.error.startswith("bad target URL: ")


async def test_webhook_in_cap_format_posts_a_valid_cap_document(client: httpx.AsyncClient) -> None:
    async with Receiver() as receiver:
        target = ChannelTarget(receiver.url(), secret=SECRET, format="cap")
        result = await webhook(client).send(notification(language="both"), target)
    assert result.status == "sent"
    [request] = receiver.requests
    assert request.headers["content-type"] == "application/cap+xml; charset=utf-8"
    assert request.headers["idempotency-key"] == "ntf-1001"
    assert receiver_verifies(request, SECRET)
    CAP_SCHEMA.validate(request.body.decode())
    expected = render_cap(
        alert(), [firing().event], sender="envlink@envlink.example.cn", language="both"
    )
    assert request.body == expected
    assert b"<identifier>envlink-42-firing-20261126T040005Z</identifier>" in request.body


async def test_cap_for_several_alerts_is_one_request_per_alert(client: httpx.AsyncClient) -> None:
    message = notification(firing(42), firing(43, HUMEN), language="en")
    async with Receiver(Reply(200), Reply(200)) as receiver:
        result = await webhook(client, force_format="cap", name="cap").send(
            message, ChannelTarget(receiver.url())
        )
    assert result.status == "sent"
    assert [r.headers["idempotency-key"] for r in receiver.requests] == [
        "ntf-1001/42",
        "ntf-1001/43",
    ]
    for request in receiver.requests:
        CAP_SCHEMA.validate(request.body.decode())
    assert b"<areaDesc>Humen (dg-a-humen), Dongguan" in receiver.requests[1].body


async def test_cap_stops_at_the_first_alert_not_accepted(client: httpx.AsyncClient) -> None:
    message = notification(firing(42), firing(43, HUMEN), language="en")
    async with Receiver(Reply(502, b"bad gateway")) as receiver:
        result = await webhook(client, force_format="cap").send(
            message, ChannelTarget(receiver.url())
        )
    assert (result.status, result.response_code) == ("retry", 502)
    assert [r.headers["idempotency-key"] for r in receiver.requests] == ["ntf-1001/42"]


async def test_wecom_robot_receives_markdown_and_ok_means_sent(client: httpx.AsyncClient) -> None:
    async with Receiver(Reply.json({"errcode": 0, "errmsg": "ok"})) as receiver:
        url = receiver.url("/cgi-bin/webhook/send?key=693a91f6-7xxx")
        result = await WeComChannel(client).send(notification(language="both"), ChannelTarget(url))
    assert (result.status, result.response_code, result.error) == ("sent", 200, None)
    [request] = receiver.requests
    assert request.path == "/cgi-bin/webhook/send"
    assert request.query == {"key": ["693a91f6-7xxx"]}
    assert request.headers["content-type"] == "application/json; charset=utf-8"
    body = orjson.loads(request.body)
    assert body == {
        "msgtype": "markdown",
        "markdown": {"content": wecom_content(notification(language="both"))},
    }
    content = body["markdown"]["content"]
    assert content.startswith("### [EnvLink][严重] 告警：黄埔 细颗粒物超过阈值\n")
    assert "\n\n---\n\n### [EnvLink][Critical] ALERT: PM2.5 above threshold at Huangpu\n" in content


async def test_wecom_content_stays_within_4096_bytes(client: httpx.AsyncClient) -> None:
    many = [firing(alert_id) for alert_id in range(100, 160)]
    async with Receiver(Reply.json({"errcode": 0, "errmsg": "ok"})) as receiver:
        result = await WeComChannel(client).send(
            notification(*many), ChannelTarget(receiver.url("/cgi-bin/webhook/send?key=k"))
        )
    assert result.status == "sent"
    content = orjson.loads(receiver.requests[0].body)["markdown"]["content"]
    size = len(content.encode("utf-8"))
    assert 3000 < size <= 4096
    shown = content.count("#### ")
    assert f"…另有 {60 - shown} 条事件未显示" in content


@pytest.mark.parametrize(
    ("reply", "status", "error"),
    [
        (
            Reply.json({"errcode": 45009, "errmsg": "api freq out of limit"}),
            "retry",
            "errcode 45009: api freq out of limit",
        ),
        (Reply.json({"errcode": -1, "errmsg": "system busy"}), "retry", "errcode -1: system busy"),
        (
            Reply.json({"errcode": 93000, "errmsg": "invalid webhook url"}),
            "failed",
            "errcode 93000: invalid webhook url",
        ),
        (
            Reply.json({"errcode": 40058, "errmsg": "markdown.content exceed max length"}),
            "failed",
            "errcode 40058: markdown.content exceed max length",
        ),
        (
            Reply(200, b"<html>proxy</html>"),
            "retry",
            "HTTP 200 without an errcode: '<html>proxy</html>'",
        ),
        (Reply(502, b"bad gateway"), "retry", "HTTP 502: bad gateway"),
    ],
)
async def test_wecom_errcodes_are_classified(
    client: httpx.AsyncClient, reply: Reply, status: str, error: str
) -> None:
    async with Receiver(reply) as receiver:
        result = await WeComChannel(client).send(
            notification(), ChannelTarget(receiver.url("/cgi-bin/webhook/send?key=k"))
        )
    assert (result.status, result.error) == (status, error)


def dingtalk_verifies(request: Request, secret: str, *, now_ms: int) -> bool:
    """What DingTalk does: recompute the sign from the timestamp and the robot's secret."""
    timestamp = request.query["timestamp"][0]
    if abs(now_ms - int(timestamp)) > 3_600_000:
        return False
    digest = hmac.new(secret.encode(), f"{timestamp}\n{secret}".encode(), hashlib.sha256).digest()
    # parse_qs has already url-decoded the sign.
    return hmac.compare_digest(base64.b64encode(digest).decode(), request.query["sign"][0])


async def test_dingtalk_robot_receives_a_signed_markdown_message(client: httpx.AsyncClient) -> None:
    secret = "SECd41d8cd98f00b204e9800998ecf8427e"
    async with Receiver(Reply.json({"errcode": 0, "errmsg": "ok"})) as receiver:
        url = receiver.url("/robot/send?access_token=tok123")
        channel = DingTalkChannel(client, clock=fixed_clock)
        result = await channel.send(notification(language="en"), ChannelTarget(url, secret=secret))
    assert (result.status, result.response_code) == ("sent", 200)
    [request] = receiver.requests
    assert request.path == "/robot/send"
    assert request.query["access_token"] == ["tok123"]
    assert request.query["timestamp"] == ["1795665605000"]
    assert dingtalk_verifies(request, secret, now_ms=1_795_665_605_000)
    assert not dingtalk_verifies(request, secret + "0", now_ms=1_795_665_605_000)
    assert not dingtalk_verifies(request, secret, now_ms=1_795_665_605_000 + 3_600_001)
    # The base64 sign is sent url-encoded: '+', '/' and '=' never appear raw in the query.
    raw_sign = request.raw_query.split("sign=")[1]
    assert not any(c in raw_sign for c in "+/=")
    body = orjson.loads(request.body)
    assert body == {
        "msgtype": "markdown",
        "markdown": {
            "title": dingtalk_title(notification(language="en")),
            "text": dingtalk_text(notification(language="en")),
        },
    }
    assert (
        body["markdown"]["title"] == "[EnvLink][Critical] ALERT: PM2.5 above threshold at Huangpu"
    )


@pytest.mark.parametrize(
    ("answer", "status"),
    [
        ({"errcode": 130101, "errmsg": "send too fast, exceed 20 times per minute"}, "retry"),
        ({"errcode": 310000, "errmsg": "sign not match"}, "failed"),
        ({"errcode": 300001, "errmsg": "token is not exist"}, "failed"),
    ],
)
async def test_dingtalk_errcodes_are_classified(
    client: httpx.AsyncClient, answer: dict[str, object], status: str
) -> None:
    async with Receiver(Reply.json(answer)) as receiver:
        result = await DingTalkChannel(client, clock=fixed_clock).send(
            notification(), ChannelTarget(receiver.url("/robot/send?access_token=t"), secret="S")
        )
    assert result.status == status
    assert result.error == f"errcode {answer['errcode']}: {answer['errmsg']}"


class Mailbox:
    """An aiosmtpd handler keeping every accepted message; some addresses refuse."""

    def __init__(self, refuse: dict[str, str] | None = None) -> None:
        self.refuse = refuse or {}
        self.messages: list[tuple[str, list[str], bytes]] = []

    async def handle_RCPT(
        self,
        server: SmtpServer,
        session: Session,
        envelope: Envelope,
        address: str,
        options: list[str],
    ) -> str:
        if address in self.refuse:
            return self.refuse[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SmtpServer, session: Session, envelope: Envelope) -> str:
        assert envelope.mail_from is not None and isinstance(envelope.content, bytes)
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
        return "250 Message accepted for delivery"


@dataclass
class SmtpService:
    mailbox: Mailbox
    port: int
    logins: list[tuple[bytes, bytes]]


async def start_smtp(
    mailbox: Mailbox,
    *,
    tls: ssl.SSLContext | None = None,
    auth: tuple[str, str] | None = None,
    mechanisms_off: tuple[str, ...] = (),
) -> tuple[asyncio.AbstractServer, SmtpService]:
    """A real aiosmtpd SMTP server on a loopback port, served by this test's event loop."""
    logins: list[tuple[bytes, bytes]] = []

    def authenticator(
        server: SmtpServer, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        assert isinstance(data, LoginPassword)
        logins.append((data.login, data.password))
        ok = auth is not None and (data.login, data.password) == (
            auth[0].encode(),
            auth[1].encode(),
        )
        # handled=False: aiosmtpd then answers a refusal with 535 itself.
        return AuthResult(success=ok, handled=False)

    loop = asyncio.get_running_loop()

    def protocol() -> SmtpServer:
        return SmtpServer(
            mailbox,
            hostname="localhost",
            tls_context=tls,
            require_starttls=tls is not None,
            authenticator=authenticator if auth else None,
            auth_required=auth is not None,
            auth_exclude_mechanism=mechanisms_off,
            loop=loop,
        )

    server = await loop.create_server(protocol, "127.0.0.1", 0)
    return server, SmtpService(mailbox, server.sockets[0].getsockname()[1], logins)


@pytest.fixture
async def smtp() -> AsyncIterator[Callable[..., Any]]:
    servers: list[asyncio.AbstractServer] = []

    async def start(mailbox: Mailbox, **options: Any) -> SmtpService:
        server, service = await start_smtp(mailbox, **options)
        servers.append(server)
        return service

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()


def mail_config(port: int, **changes: Any) -> SmtpConfig:
    config = SmtpConfig(
        host="127.0.0.1",
        port=port,
        from_address="EnvLink 告警 <alerts@envlink.example.cn>",
        timeout_s=5.0,
    )
    return replace(config, **changes)


def parse(raw: bytes) -> email.message.EmailMessage:
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(message, email.message.EmailMessage)
    return message


async def test_email_in_chinese_reaches_the_smtp_server_exactly(smtp: Callable[..., Any]) -> None:
    service = await smtp(Mailbox())
    target = ChannelTarget("duty@gz.example.cn, Ops Desk <ops@dg.example.cn>")
    result = await EmailChannel(mail_config(service.port)).send(notification(), target)
    assert (result.status, result.response_code, result.error) == ("sent", 250, None)
    [(mail_from, rcpt_tos, raw)] = service.mailbox.messages
    assert mail_from == "alerts@envlink.example.cn"
    assert rcpt_tos == ["duty@gz.example.cn", "ops@dg.example.cn"]
    headers = raw.split(b"\r\n\r\n", 1)[0]
    assert headers.isascii()
    assert b"Subject: =?utf-8?" in headers
    message = parse(raw)
    assert message["Subject"] == "[EnvLink][严重] 告警：黄埔 细颗粒物超过阈值"
    assert message["From"] == "EnvLink 告警 <alerts@envlink.example.cn>"
    assert message["To"] == "duty@gz.example.cn, ops@dg.example.cn"
    assert message["Message-ID"] == "<envlink.ntf-1001@envlink.example.cn>"
    assert message["Date"] == "Thu, 26 Nov 2026 04:00:06 +0000"
    assert message["Auto-Submitted"] == "auto-generated"
    assert message["X-EnvLink-Notification-Id"] == "ntf-1001"
    assert message["Content-Language"] == "zh-CN"
    assert message.get_content_type() == "text/plain"
    assert message.get_content_charset() == "utf-8"
    assert message.get_content().replace("\r\n", "\n") == render_text(notification(), "zh")


async def test_email_in_both_languages_carries_both_parts(smtp: Callable[..., Any]) -> None:
    service = await smtp(Mailbox())
    message_in = notification(language="both")
    result = await EmailChannel(mail_config(service.port)).send(
        message_in, ChannelTarget("duty@gz.example.cn")
    )
    assert result.status == "sent"
    message = parse(service.mailbox.messages[0][2])
    assert message["Subject"] == full_subject(message_in)
    assert message["Subject"] == (
        "[EnvLink][严重] 告警：黄埔 细颗粒物超过阈值 / "
        "[EnvLink][Critical] ALERT: PM2.5 above threshold at Huangpu"
    )
    assert message.get_content_type() == "multipart/mixed"
    parts = list(message.iter_parts())
    assert [p["Content-Language"] for p in parts] == ["zh-CN", "en-US"]
    bodies = [p.get_content().replace("\r\n", "\n") for p in parts]
    assert bodies == [render_text(message_in, "zh"), render_text(message_in, "en")]


async def test_a_resent_email_has_the_same_message_id(smtp: Callable[..., Any]) -> None:
    service = await smtp(Mailbox())
    channel = EmailChannel(mail_config(service.port))
    for _ in range(2):
        result = await channel.send(
            notification(language="en"), ChannelTarget("duty@gz.example.cn")
        )
        assert result.status == "sent"
    first, second = (parse(raw) for _, _, raw in service.mailbox.messages)
    assert first["Message-ID"] == second["Message-ID"] == "<envlink.ntf-1001@envlink.example.cn>"
    assert first["Date"] == second["Date"]


@pytest.mark.parametrize(
    ("reply", "status", "code"),
    [("550 5.1.1 No such user", "failed", 550), ("450 4.2.1 Mailbox busy", "retry", 450)],
)
async def test_a_refused_recipient_is_classified_by_its_reply(
    smtp: Callable[..., Any], reply: str, status: str, code: int
) -> None:
    service = await smtp(Mailbox(refuse={"gone@gz.example.cn": reply}))
    result = await EmailChannel(mail_config(service.port)).send(
        notification(), ChannelTarget("gone@gz.example.cn")
    )
    assert (result.status, result.response_code) == (status, code)
    assert result.error == f"recipients refused: gone@gz.example.cn: {reply}"
    assert service.mailbox.messages == []


async def test_one_refused_recipient_among_several_is_still_sent(smtp: Callable[..., Any]) -> None:
    service = await smtp(Mailbox(refuse={"gone@gz.example.cn": "550 5.1.1 No such user"}))
    result = await EmailChannel(mail_config(service.port)).send(
        notification(), ChannelTarget("duty@gz.example.cn, gone@gz.example.cn")
    )
    assert result.status == "sent"
    assert result.error == "some recipients refused: gone@gz.example.cn: 550 5.1.1 No such user"
    assert [rcpt for _, rcpt, _ in service.mailbox.messages] == [["duty@gz.example.cn"]]


async def test_an_smtp_server_that_is_down_is_retried() -> None:
    result = await EmailChannel(mail_config(free_port())).send(
        notification(), ChannelTarget("duty@gz.example.cn")
    )
    assert result.status == "retry"
    assert result.error is not None and result.error.startswith("cannot reach SMTP 127.0.0.1:")


async def test_a_bad_email_target_fails_at_once() -> None:
    result = await EmailChannel(mail_config(free_port())).send(
        notification(), ChannelTarget("duty@gz.example.cn; nobody")
    )
    assert result.status == "failed"
    assert result.error is not None and result.error.startswith("bad e-mail target: ")


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1/localhost and its key, written as PEM files."""
    x509 = pytest.importorskip("cryptography.x509", reason="STARTTLS needs `cryptography`")
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "smtp.crt", directory / "smtp.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@pytest.fixture
def tls_files(tmp_path: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """The server's TLS context and a client context that trusts its certificate."""
    cert, key = self_signed(tmp_path)
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert, key)
    client = ssl.create_default_context(cafile=str(cert))
    return server, client


async def test_email_over_starttls_with_login(
    smtp: Callable[..., Any], tls_files: tuple[ssl.SSLContext, ssl.SSLContext]
) -> None:
    server_tls, client_tls = tls_files
    service = await smtp(Mailbox(), tls=server_tls, auth=("envlink", "pa55-词"))
    config = mail_config(
        service.port, starttls=True, ssl_context=client_tls, username="envlink", password="pa55-词"
    )
    result = await EmailChannel(config).send(notification(), ChannelTarget("duty@gz.example.cn"))
    assert (result.status, result.error) == ("sent", None)
    assert service.logins == [(b"envlink", "pa55-词".encode())]
    assert (
        parse(service.mailbox.messages[0][2])["Message-ID"]
        == "<envlink.ntf-1001@envlink.example.cn>"
    )


async def test_starttls_problems_are_not_retried(
    smtp: Callable[..., Any], tls_files: tuple[ssl.SSLContext, ssl.SSLContext]
) -> None:
    server_tls, _ = tls_files
    service = await smtp(Mailbox(), tls=server_tls, auth=("envlink", "secret"))
    target = ChannelTarget("duty@gz.example.cn")
    # Plain text to a server that requires STARTTLS first.
    plain = await EmailChannel(mail_config(service.port)).send(notification(), target)
    assert (plain.status, plain.response_code) == ("failed", 530)
    # STARTTLS, but the certificate is not one the client trusts.
    untrusted = await EmailChannel(mail_config(service.port, starttls=True)).send(
        notification(), target
    )
    assert untrusted.status == "failed"
    assert untrusted.error is not None and untrusted.error.startswith(
        "STARTTLS certificate not trusted"
    )
    assert service.mailbox.messages == []


async def test_a_wrong_smtp_password_fails(
    smtp: Callable[..., Any], tls_files: tuple[ssl.SSLContext, ssl.SSLContext]
) -> None:
    server_tls, client_tls = tls_files
    service = await smtp(Mailbox(), tls=server_tls, auth=("envlink", "secret"))
    config = mail_config(
        service.port, starttls=True, ssl_context=client_tls, username="envlink", password="guess"
    )
    result = await EmailChannel(config).send(notification(), ChannelTarget("duty@gz.example.cn"))
    assert (result.status, result.response_code, result.error) == (
        "failed",
        535,
        "SMTP 535: 5.7.8 Authentication credentials invalid",
    )
    assert service.mailbox.messages == []


async def test_the_worker_builds_every_configured_channel(client: httpx.AsyncClient) -> None:
    without_smtp = build_channels(Settings(public_base_url="https://envlink.gz-dg.cn"), client)
    assert sorted(without_smtp) == ["cap", "dingtalk", "webhook", "wecom"]
    with_smtp = build_channels(
        Settings(smtp_host="127.0.0.1", smtp_port=2525, smtp_starttls=True), client
    )
    assert sorted(with_smtp) == ["cap", "dingtalk", "email", "webhook", "wecom"]
    assert {name: channel.name for name, channel in with_smtp.items()} == {
        "webhook": "webhook",
        "cap": "cap",
        "wecom": "wecom",
        "dingtalk": "dingtalk",
        "email": "email",
    }
    async with Receiver() as receiver:
        result = await without_smtp["cap"].send(notification(), ChannelTarget(receiver.url()))
    assert result.status == "sent"
    assert receiver.requests[0].headers["content-type"] == "application/cap+xml; charset=utf-8"
    assert b"<sender>envlink@envlink.gz-dg.cn</sender>" in receiver.requests[0].body


async def test_login_falls_back_to_smtplib_without_auth_plain(
    smtp: Callable[..., Any], tls_files: tuple[ssl.SSLContext, ssl.SSLContext]
) -> None:
    server_tls, client_tls = tls_files
    service = await smtp(
        Mailbox(), tls=server_tls, auth=("envlink", "secret"), mechanisms_off=("PLAIN",)
    )
    config = mail_config(
        service.port, starttls=True, ssl_context=client_tls, username="envlink", password="secret"
    )
    target = ChannelTarget("duty@gz.example.cn")
    assert (await EmailChannel(config).send(notification(), target)).status == "sent"
    assert service.logins == [(b"envlink", b"secret")]
    non_ascii = await EmailChannel(replace(config, password="密码")).send(notification(), target)
    assert non_ascii.status == "failed"
    assert non_ascii.error == (
        "SMTP server: the server offers no AUTH PLAIN, the only mechanism that carries "
        "non-ASCII credentials"
    )
    assert len(service.mailbox.messages) == 1
