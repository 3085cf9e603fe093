"""README.md stays true: it names every setting and every API path."""

from __future__ import annotations

import re

from api.app import create_app
from core.settings import Settings
from tests.conftest import ROOT

README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_every_setting_is_documented() -> None:
    missing = [
        f"ENVLINK_{name.upper()}"
        for name in Settings.model_fields
        if f"ENVLINK_{name.upper()}" not in README
    ]
    assert missing == []


def _shape(path: str) -> str:
    return re.sub(r"\{[^}]*\}", "{}", path)


def test_every_api_path_is_documented() -> None:
    spec = create_app(Settings(database_url="postgresql://unused@localhost/none")).openapi()
    documented = {
        _shape(path) for path in re.findall(r"/v1/[\w/{}.-]+|/healthz|/readyz|/metrics", README)
    }
    assert [path for path in spec["paths"] if _shape(path) not in documented] == []
