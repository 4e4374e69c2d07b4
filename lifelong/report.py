"""The report as one self-contained HTML file: the tables and figures of report_data.py, styles inline.

``lifelong report RUN_DIR...`` calls write_report, which also writes every figure as PNG and SVG and the summary
table as Markdown and CSV beside the page.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

from lifelong import compare, inside, store
from lifelong.report_data import Collection, Variant, collect, figure_specs, group, summary_rows
from lifelong.version import __version__

STYLE = """body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;max-width:1150px;margin:2em auto;padding:0 1em;
color:#111;line-height:1.45}table{border-collapse:collapse;font-variant-numeric:tabular-nums;margin:.5em 0}
th,td{border:1px solid #888;padding:.25em .6em;text-align:left;vertical-align:top}.numbers td{text-align:right}
.numbers td:first-child{text-align:left}.runs td{white-space:pre-line}
th{background:#eee}figure{margin:2em 0;break-inside:avoid}img{max-width:100%;height:auto}
figcaption{font-size:.95em;margin-top:.4em}code{font-size:.9em}@media print{body{max-width:none;margin:0}}"""


def _table(header: list[str], rows: list[list[str]], css_class: str = "numbers") -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table class="{css_class}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _figures(sections: list[tuple[str, str, bytes]]) -> str:
    return "".join(
        f'<figure><h3>{html.escape(title)}</h3><img alt="{html.escape(title)}" '
        f'src="data:image/svg+xml;base64,{base64.b64encode(svg).decode()}"><figcaption>{html.escape(caption)}'
        "</figcaption></figure>" for title, caption, svg in sections)


def to_html(found: Collection, variants: list[Variant], rows: list[dict[str, Any]],
            sections: list[tuple[str, str, bytes]], inside: list[tuple[str, str, bytes]] = ()) -> str:
    """One HTML page with no external resources: styles inline, figures as base64 SVG data URIs."""
    first = found.runs[0].results
    columns = [c for c in compare.COLUMNS if any(row[c] is not None for row in rows)]
    table = _table([compare.HEADERS[c] for c in columns],
                   [[compare.fmt(row[c], digits=1 if c == "train_seconds" else 3) for c in columns] for row in rows])
    figures = _figures(sections)
    if inside:  # issue 21: what the first run of each variant recorded about its model (docs/inspect.md)
        figures += ("<h2>Inside the model</h2><p>From each variant's first run's diagnostics (saved after each task) "
                    f"and linear probe; <code>lifelong inspect RUN_DIR</code> prints them as tables.</p>{_figures(inside)}")
    runs = _table(["variant", "seeds", "run directories"],
                  [[v.label, ", ".join(str(r.results["seed"]) for r in v.runs), "\n".join(str(r.path) for r in v.runs)]
                   for v in variants], css_class="runs")
    skipped = (f"<p>Left out (unfinished, no results.json): {html.escape(', '.join(map(str, found.skipped)))}</p>"
               if found.skipped else "")
    title = f"lifelong report: {first['benchmark']}"
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>"
            f"<p>{len(found.runs)} runs in {len(variants)} variants, {first['scenario']}-incremental, "
            f"{len(first['tasks'])} tasks; made by lifelong {__version__}.</p>"
            f"<h2>Summary</h2>{table}<p>Mean ± sample standard deviation over the runs (seeds) of each variant. ACC: "
            "final accuracy averaged over tasks; BWT, FWT: backward and forward transfer; F: forgetting (Chaudhry); "
            "(ref): forgetting against single-task reference runs, when the report holds them.</p>"
            f"<h2>Figures</h2>{figures}<h2>Runs</h2>{runs}{skipped}</body></html>\n")


def write_report(paths: list[str | Path], out: str | Path) -> tuple[Path, list[dict[str, Any]], Collection]:
    """Write ``out`` (HTML) and, in ``<out stem>_figures/`` beside it, every figure as PNG and SVG plus the summary
    table as summary.md and summary.csv; returns the figure folder, the table rows and the runs found."""
    from lifelong.figures import render

    out = Path(out)
    found = collect(paths)
    variants, sweeps = group(found)
    rows = summary_rows(variants)
    folder = out.parent / f"{out.stem}_figures"
    compare.write_tables(folder, rows, None)
    sections, inside_sections = [], []
    inside_specs = [spec for i, v in enumerate(variants)  # issue 21: the "Inside the model" section
                    for spec in inside.figure_specs(inside.read(v.runs[0].path), v.label, f"inside{i + 1}_")]
    written = set()
    for specs, target in ((figure_specs(variants, sweeps), sections), (inside_specs, inside_sections)):
        for name, title, caption, draw, args in specs:
            png, svg = render(draw, *args)
            store.atomic_write_bytes(folder / f"{name}.png", png)
            store.atomic_write_bytes(folder / f"{name}.svg", svg)
            written |= {f"{name}.png", f"{name}.svg"}
            target.append((title, caption, svg))
    for old in [*folder.glob("*.png"), *folder.glob("*.svg")]:  # an earlier report's figures this one lacks
        if old.name not in written:
            old.unlink(missing_ok=True)
    store.atomic_write_bytes(out, to_html(found, variants, rows, sections, inside_sections).encode())
    return folder, rows, found
