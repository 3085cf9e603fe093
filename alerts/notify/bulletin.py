"""A stored monthly bulletin as a message: what e-mail, webhooks and robots send of it.

E-mail carries the bulletin itself: a short text body, the HTML page and the zip of CSV tables
attached, byte for byte as stored. Webhooks, WeCom and DingTalk carry links instead, signed so
that they work without an API key for 30 days (core/signing.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, parseaddr
from typing import Any

from core.timeutil import rfc3339


@dataclass(frozen=True, slots=True)
class BulletinLinks:
    """Signed links to the stored version's page and zip, and when they expire."""

    html: str
    csv: str
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class BulletinMessage:
    """One bulletin version for one subscription; `id` is the idempotency key."""

    id: str
    month: str
    version: int
    language: str
    created_at: datetime
    html: str
    csv_zip: bytes
    links: BulletinLinks | None

    @property
    def file_stem(self) -> str:
        return f"envlink-bulletin-{self.month}-v{self.version}"


def subject(message: BulletinMessage) -> str:
    """The subject (or title) in the subscription's language."""
    zh = f"广州—东莞环境质量联合月报 {message.month}（第 {message.version} 版）"
    en = f"Guangzhou–Dongguan joint bulletin {message.month} (version {message.version})"
    return {"zh": zh, "en": en}.get(message.language, f"{zh} / {en}")


def email_message(message: BulletinMessage, *, from_address: str, to: list[str]) -> EmailMessage:
    """The e-mail: a short text, the HTML page and the CSV zip attached as stored."""
    mail = EmailMessage(policy=SMTP)
    domain = parseaddr(from_address)[1].rpartition("@")[2] or "envlink.local"
    mail["Subject"] = subject(message)
    mail["From"] = from_address
    mail["To"] = ", ".join(to)
    mail["Date"] = format_datetime(message.created_at)
    mail["Message-ID"] = f"<envlink.{message.id}@{domain}>"
    mail["Auto-Submitted"] = "auto-generated"
    mail["X-EnvLink-Notification-Id"] = message.id
    mail["X-EnvLink-Notification-Kind"] = "bulletin"
    text = (
        f"{subject(message)}\n\n"
        "附件为月报网页（可打印）和 CSV 数据表（zip）。\n"
        "Attached: the printable bulletin page and its CSV tables (zip).\n"
    )
    mail.set_content(text, charset="utf-8")
    mail.add_attachment(
        message.html.encode(),
        maintype="text",
        subtype="html",
        filename=f"{message.file_stem}.html",
    )
    mail.add_attachment(
        message.csv_zip, maintype="application", subtype="zip", filename=f"{message.file_stem}.zip"
    )
    return mail


def webhook_body(message: BulletinMessage) -> dict[str, Any]:
    """The webhook's JSON document of a bulletin: what it is and its signed links."""
    links = message.links
    return {
        "notification": {
            "id": message.id,
            "kind": "bulletin",
            "language": message.language,
            "created_at": rfc3339(message.created_at),
        },
        "bulletin": {
            "month": message.month,
            "version": message.version,
            "title": subject(message),
            "links": None
            if links is None
            else {"html": links.html, "csv": links.csv, "expires_at": rfc3339(links.expires_at)},
        },
    }


def markdown(message: BulletinMessage) -> str:
    """The robots' markdown: the title and the two links, with their expiry."""
    lines = [f"### {subject(message)}", ""]
    if message.links is not None:
        expires = rfc3339(message.links.expires_at)
        lines += [
            f"[网页 / Page]({message.links.html})",
            f"[CSV 数据表 / CSV tables (zip)]({message.links.csv})",
            "",
            f"链接有效期至 / Links work until {expires}",
        ]
    return "\n".join(lines)
