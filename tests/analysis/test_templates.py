"""The report's page is filled from package-data templates in one safe step."""

from __future__ import annotations

import json
import re
from importlib import resources

import pytest

from hetsiren.analysis.report import build_report_html, fill_template


def test_the_templates_ship_as_package_data():
    folder = resources.files("hetsiren.analysis") / "templates"
    page = (folder / "report_page.html").read_text("utf-8")
    assert set(re.findall(r"%%([A-Z]+)%%", page)) == {"TITLE", "STYLE", "HEALTH", "CONFIG",
                                                        "DATA", "SCRIPT"}
    assert "report-data" in (folder / "report.js").read_text("utf-8")
    assert (folder / "report.css").read_text("utf-8").strip()


def test_fill_is_one_pass_and_complete():
    # a value holding a marker is put in as text, never filled again
    out = fill_template("<h1>%%A%%</h1><p>%%B%%</p>", {"A": "%%B%%", "B": "b"})
    assert out == "<h1>%%B%%</h1><p>b</p>"
    with pytest.raises(ValueError, match="do not match"):
        fill_template("%%A%% %%B%%", {"A": "a"})  # a marker left unfilled
    with pytest.raises(ValueError, match="do not match"):
        fill_template("%%A%%", {"A": "a", "C": "c"})  # a value with no place


def test_user_text_cannot_leave_the_data_element():
    hostile = "</script><script>alert(1)</script><!--%%SCRIPT%%"
    data = {"run": {"name": "x", "particles": hostile}, "health": None}
    page = build_report_html(data, {"config": {"particles": hostile}})
    payload = re.search(r'<script id="report-data" type="application/json">(.*?)</script>',
                        page, re.S).group(1)
    assert "<" not in payload  # "<" travels as \u003c
    assert json.loads(payload)["run"]["particles"] == hostile
    assert page.count("alert(1)") == 2  # once in the JSON, once escaped in the config text
    assert "<script>alert(1)" not in page
