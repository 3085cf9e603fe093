"""The screen loads nothing from outside EnvLink: no URL to another host in its files."""

from __future__ import annotations

import re

from api.app import WEB_DIR

# XML namespace names identify SVG and HTML elements for createElementNS; nothing is fetched.
NAMESPACES = {"http://www.w3.org/2000/svg", "http://www.w3.org/1999/xhtml"}


def test_the_screens_files_name_no_outside_url() -> None:
    files = sorted(p for p in WEB_DIR.rglob("*") if p.is_file())
    assert {p.name for p in files} >= {"index.html", "app.js", "app.css", "i18n.js"}
    found = {
        f"{p.name}: {url}"
        for p in files
        for url in re.findall(r"(?:https?:)?//[\w.-]+\.[a-z]{2,}[^\s\"'`)]*", p.read_text())
        if url not in NAMESPACES
    }
    assert found == set()
