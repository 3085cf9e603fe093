"""Delivery channels behind one protocol (base.Channel), and the set a worker runs with."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx

from alerts.notify.channels.base import Channel
from alerts.notify.channels.cap import cap_sender
from alerts.notify.channels.dingtalk import DingTalkChannel
from alerts.notify.channels.email import EmailChannel, SmtpConfig
from alerts.notify.channels.webhook import WebhookChannel
from alerts.notify.channels.wecom import WeComChannel
from core.settings import Settings

CHANNEL_NAMES = ("webhook", "cap", "wecom", "dingtalk", "email")


def build_channels(
    settings: Settings, client: httpx.AsyncClient, *, clock: Callable[[], float] = time.time
) -> dict[str, Channel]:
    """Every configured channel by its subscription code; e-mail only when SMTP is set."""
    sender = cap_sender(settings.public_base_url)
    channels: dict[str, Channel] = {
        "webhook": WebhookChannel(client, cap_sender=sender, clock=clock),
        "cap": WebhookChannel(
            client, cap_sender=sender, clock=clock, force_format="cap", name="cap"
        ),
        "wecom": WeComChannel(client),
        "dingtalk": DingTalkChannel(client, clock=clock),
    }
    smtp = SmtpConfig.from_settings(settings)
    if smtp is not None:
        channels["email"] = EmailChannel(smtp)
    return channels
