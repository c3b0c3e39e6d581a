"""The quality report as one self-contained HTML file, and its figures as PNG bytes.

``quality_html(report, image_path)`` draws the figures of a
:class:`~lookalike.evaluation.quality.QualityReport` with :mod:`lookalike.viz.quality` (per-label
bars, top-1 confusion, one strip of failed queries per worst label) and embeds them as base64
``data:`` URIs beside the per-label table: no script, stylesheet, font or image is fetched, so the
file opens anywhere (mail it, attach it to a ticket). ``figure_png(report, name)`` gives one
figure's PNG bytes (the web app's quality page shows them through the API).
"""
from __future__ import annotations

import base64
import html
import tempfile
from pathlib import Path
from typing import Callable

from lookalike.data.artifacts import atomic_file
from lookalike.evaluation.quality import QualityReport
from lookalike.viz.quality import failure_strips_png, label_bars_png, top1_confusion_png

FIGURES = ("labels", "confusion")

_CSS = """body{font:14px/1.45 system-ui,sans-serif;margin:24px auto;max-width:1100px;color:#1f2937;padding:0 16px}
h1{font-size:22px}h2{font-size:17px;margin-top:28px}table{border-collapse:collapse;margin:8px 0}
th,td{padding:4px 10px;border-bottom:1px solid #e5e7eb;text-align:right}th:first-child,td:first-child{text-align:left}
td.bad{color:#b91c1c;font-weight:600}.muted{color:#6b7280}img{max-width:100%;height:auto;display:block;margin:8px 0}
.figs{display:flex;flex-wrap:wrap;gap:16px;align-items:flex-start}.figs img{max-width:540px}"""


def figure_png(report: QualityReport, name: str, title: str = "") -> bytes:
    """PNG bytes of one figure: ``labels`` (P@1 / mAP@k bars, worst first) or ``confusion``
    (query label x top-1 neighbour label). ValueError for another name."""
    if name not in FIGURES:
        raise ValueError(f"unknown figure {name!r}; expected one of {', '.join(FIGURES)}")
    with tempfile.TemporaryDirectory(prefix="lookalike-quality-") as folder:
        path = Path(folder) / f"{name}.png"
        if name == "labels":
            label_bars_png([r.label for r in report.labels], [r.p_at_1 for r in report.labels],
                           [r.map_at_k for r in report.labels], path, k=report.k, title=title)
        else:
            top1_confusion_png(report.confusion_labels, report.confusion, path, title=title)
        return path.read_bytes()


def failures_png(report: QualityReport, label: str, image_path: Callable[[int], object]) -> bytes:
    """PNG bytes of the failed queries of ``label`` (query, then its top hits): ``image_path(position)``
    gives an item's image (path or PIL image). KeyError when ``label`` has no failures listed."""
    rows = [((image_path(f.query), f.label), [(image_path(r), lab) for r, lab in zip(f.returned, f.returned_labels)])
            for f in report.failures[label]]
    with tempfile.TemporaryDirectory(prefix="lookalike-quality-") as folder:
        path = Path(folder) / "failures.png"
        failure_strips_png(rows, path, title=f"{label}: queries whose nearest neighbour has another label")
        return path.read_bytes()


def _img(data: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(data).decode("ascii")}">'


def quality_html(report: QualityReport, image_path: Callable[[int], object], title: str = "Retrieval quality",
                 subtitle: str = "") -> str:
    """The report as one HTML document (str): overall P@1 / mAP@k, the per-label table worst first,
    the bar chart, the confusion image and the failed-query strips, every PNG embedded in base64."""
    k = report.k
    esc = html.escape
    rows = "".join(
        f"<tr><td>{esc(r.label)}</td><td>{r.n}</td><td{' class=bad' if r.p_at_1 < report.overall['P@1'] else ''}>"
        f"{r.p_at_1:.3f}</td><td{' class=bad' if r.map_at_k < report.overall[f'mAP@{k}'] else ''}>{r.map_at_k:.3f}</td>"
        f"<td>{esc(r.confused_with or '–')}</td><td>{r.confused_share:.0%}</td></tr>" for r in report.labels)
    strips = "".join(
        f"<h3>{esc(label)}</h3>" + (_img(failures_png(report, label, image_path), f"failed {label} queries")
                                    if queries else "<p class=muted>no failed query</p>")
        for label, queries in report.failures.items())
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title><style>{_CSS}</style></head>
<body><h1>{esc(title)}</h1>
<p class="muted">{esc(subtitle)}</p>
<p><b>{report.n_queries}</b> queries, leave-one-out ({esc(report.metric)}): relevant = same label.
P@1 <b>{report.overall['P@1']:.3f}</b> · mAP@{k} <b>{report.overall[f'mAP@{k}']:.3f}</b>.
Red: below the catalog's overall value.</p>
<h2>Per label, worst first</h2>
<table><thead><tr><th>label</th><th>n</th><th>P@1</th><th>mAP@{k}</th><th>top-1 confused with</th><th>share</th></tr></thead>
<tbody>{rows}</tbody></table>
<div class="figs">{_img(figure_png(report, 'labels'), 'P@1 and mAP per label')}
{_img(figure_png(report, 'confusion'), 'top-1 confusion')}</div>
<h2>Failed queries of the worst labels</h2>
<p class="muted">Each strip: the query (blue frame), then its nearest neighbours; captions in red have another label.</p>
{strips}
</body></html>
"""


def write_quality_html(report: QualityReport, out: str | Path, image_path: Callable[[int], object],
                       title: str = "Retrieval quality", subtitle: str = "") -> Path:
    """Write :func:`quality_html` to ``out`` atomically (parent folders created); returns ``out``."""
    out = Path(out)
    with atomic_file(out, "w") as f:
        f.write(quality_html(report, image_path, title, subtitle))
    return out
