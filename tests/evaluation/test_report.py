"""The quality report: one self-contained HTML file (table, embedded PNGs, nothing fetched), and the
figures the API serves. The CLI's `evaluate --report` is tested in tests/cli/test_cli.py."""
from __future__ import annotations

import base64
import io
import re

import pytest
from PIL import Image
from lookalike.evaluation.report import FIGURES, figure_png


def embedded_pngs(text: str) -> list[Image.Image]:
    return [Image.open(io.BytesIO(base64.b64decode(data)))
            for data in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)]


def assert_self_contained(text: str) -> None:
    # no script, stylesheet, font, frame or image from anywhere else: every src/href is a data: URI
    assert "<script" not in text and "<link" not in text and "@import" not in text and "url(" not in text
    for attribute in re.findall(r'(?:src|href)="([^"]*)"', text):
        assert attribute.startswith("data:"), attribute
    assert "http://" not in text and "https://" not in text


def test_report_holds_the_table_worst_first_and_its_pngs_embedded(shapes_catalog, tmp_path):
    out = shapes_catalog.quality_report(tmp_path / "reports" / "quality.html", k=5, worst=2)
    text = out.read_text()
    assert_self_contained(text)
    report = shapes_catalog.quality("label", k=5, worst=2)
    rows = re.findall(r"<tr><td>([^<]+)</td><td>(\d+)</td>", text)
    assert [label for label, _ in rows] == [r.label for r in report.labels]     # worst first
    assert {int(n) for _, n in rows} == {r.n for r in report.labels}
    assert f"{report.labels[0].p_at_1:.3f}" in text and "mAP@5" in text
    images = embedded_pngs(text)
    # the bar chart, the confusion image, one strip per worst label that has failed queries
    strips = sum(1 for failed in report.failures.values() if failed)
    assert len(images) == 2 + strips and strips >= 1
    assert all(image.format == "PNG" and image.width > 100 for image in images)


def test_figures_are_pngs_and_unknown_names_are_refused(shapes_catalog):
    report = shapes_catalog.quality("label")
    for name in FIGURES:
        image = Image.open(io.BytesIO(figure_png(report, name)))
        assert image.format == "PNG" and image.height > 100
    with pytest.raises(ValueError, match="unknown figure"):
        figure_png(report, "pie")
