"""The `flag` of a pushed, MQTT or CSV reading: an HJ 212 data flag letter or a QC state name."""

from __future__ import annotations

from ingest.sources.hj212.protocol import qc_for_flag
from schemas.common import QC
from schemas.push import DEVICE_FLAGS, QC_NAMES


def qc_of_flag(flag: str | None) -> QC:
    """The QC state a flag names; letters map as on the HJ 212 path (2017 meanings).

    Case is ignored ("n", "Valid"); a missing or empty flag is valid. ValueError names the
    accepted flags otherwise.
    """
    text = (flag or "").strip()
    if not text:
        return QC.VALID
    if text.upper() in DEVICE_FLAGS:
        return qc_for_flag(text, 2017)
    if text.lower() in QC_NAMES:
        return QC(text.lower())
    raise ValueError(
        f"flag {flag!r} is not an HJ 212 flag ({', '.join(DEVICE_FLAGS)})"
        f" or a QC state ({', '.join(QC_NAMES)})"
    )
