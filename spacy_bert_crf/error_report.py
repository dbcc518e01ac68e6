"""The HTML error report of an evaluation: gold above predicted entities (displaCy) for every doc
with an error, with the missed, spurious and wrong-label entities listed under it."""
import html
import zlib
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

from spacy import displacy
from spacy.tokens import Doc
from spacy.training import Example

from .evaluate import DocErrors, find_errors

# Pastel colours for labels displaCy has no colour for; assigned in sorted label order.
_PALETTE = (
    "#7aecec", "#bfeeb7", "#feca74", "#ff9561", "#aa9cfc", "#c887fb", "#9cc9cc", "#ffeb80",
    "#ff8197", "#f0d0ff", "#bfe1d9", "#e4e7d2", "#fdd8a4", "#b3d4ff", "#d9f2a0", "#f7b6d2",
)


def render_errors(
    examples: Sequence[Example],
    *,
    indices: Optional[Sequence[int]] = None,
    max_docs: int = 200,
    report: Optional[Dict[str, Any]] = None,
) -> str:
    """An HTML page showing gold above predicted entities (displaCy) for every doc with an error.

    examples (Sequence[Example]): Predicted Examples (see `predict`).
    indices (Optional[Sequence[int]]): Corpus index of each example (default: its position).
    max_docs (int): Show at most this many docs with errors; the page says how many were omitted.
    report (Optional[Dict[str, Any]]): The `score` report, summarized at the top when given.
    RETURNS (str): The page (text, labels and titles escaped).
    """
    if indices is None:
        indices = range(len(examples))
    flagged = []
    for idx, eg in zip(indices, examples):
        errors = find_errors(eg)
        if errors is not None and errors.n_errors:
            flagged.append((idx, eg, errors))
    labels = {e.label_ for eg in examples for doc in (eg.reference, eg.predicted) for e in doc.ents}
    colors = label_colors(labels)
    options = {"colors": {html.escape(label): color for label, color in colors.items()}}
    shown = flagged[: max(max_docs, 0)]
    omitted = len(flagged) - len(shown)
    summary = _summary_html(report, len(examples), len(flagged))
    parts = [_HTML_HEAD, "<h1>NER error report</h1>", summary, plots_html(report)]
    if omitted:
        parts.append(
            f'<p class="omitted">Showing the first {len(shown)} of {len(flagged)} docs with errors '
            f"({omitted} omitted, see --max-docs).</p>"
        )
    if not flagged:
        parts.append("<p>No errors: every predicted entity matches the gold entities.</p>")
    for idx, eg, errors in shown:
        counts = (
            f"{len(errors.missed)} missed, {len(errors.spurious)} spurious, "
            f"{len(errors.wrong_label)} wrong label"
        )
        gold, pred = (
            displacy.render(
                _manual(doc), style="ent", manual=True, page=False, jupyter=False, options=options
            )
            for doc in (eg.reference, eg.predicted)
        )
        parts.append(
            f'<section class="doc" id="doc-{idx}"><h2>Doc {idx} &mdash; {counts}</h2>'
            f'<div class="view"><h3>Gold</h3>{gold}</div>'
            f'<div class="view"><h3>Predicted</h3>{pred}</div>'
            f"{_error_list_html(eg.reference, errors)}</section>"
        )
    parts.append("</body></html>\n")
    return "\n".join(parts)


def label_colors(labels: Iterable[str]) -> Dict[str, str]:
    """A colour for every label: displaCy's own where it has one, else a palette colour no other
    label has (sorted order), else a hue derived from the label (stable across runs).

    RETURNS (Dict[str, str]): Label -> CSS colour.
    """
    from spacy.displacy.render import DEFAULT_LABEL_COLORS

    labels = sorted(set(labels))
    colors = {
        label: DEFAULT_LABEL_COLORS[label.upper()]
        for label in labels
        if label.upper() in DEFAULT_LABEL_COLORS
    }
    free = [c for c in _PALETTE if c not in colors.values()]
    for label in labels:
        if label in colors:
            continue
        elif free:
            colors[label] = free.pop(0)
        else:
            colors[label] = f"hsl({zlib.crc32(label.encode('utf8')) % 360}, 70%, 80%)"
    return colors


def _manual(doc: Doc) -> Dict[str, Any]:
    """displaCy's manual format, labels escaped (displaCy escapes the text, not the labels)."""
    ents = [
        {"start": e.start_char, "end": e.end_char, "label": html.escape(e.label_)} for e in doc.ents
    ]
    return {"text": doc.text, "ents": ents, "title": None}


def _error_list_html(gold: Doc, errors: DocErrors) -> str:
    def text(start: int, end: int) -> str:
        return html.escape(gold[start:end].text)

    items = [f'<li class="missed">missed {html.escape(label)}: &ldquo;{text(s, e)}&rdquo;</li>'
             for label, s, e in errors.missed]
    items += [f'<li class="spurious">spurious {html.escape(label)}: &ldquo;{text(s, e)}&rdquo;</li>'
              for label, s, e in errors.spurious]
    items += [
        f'<li class="wrong">wrong label: &ldquo;{text(s, e)}&rdquo; gold {html.escape(g)}, '
        f"predicted {html.escape(p)}</li>"
        for (g, s, e), (p, *_) in errors.wrong_label
    ]
    return f'<ul class="errors">{"".join(items)}</ul>'


def _summary_html(report: Optional[Dict[str, Any]], n_docs: int, n_flagged: int) -> str:
    rows: List[Tuple[str, Any]] = [("docs", n_docs), ("docs with errors", n_flagged)]
    if report is not None:
        pct = lambda v: "-" if v is None else f"{100 * v:.2f}"  # noqa: E731
        model = report.get("model") or {}
        errors = report.get("errors") or {}
        rows = [
            ("model", model.get("path") or model.get("name")),
            ("data", report.get("data_path")),
            ("P / R / F (%)", " / ".join(pct(report[k]) for k in ("ents_p", "ents_r", "ents_f"))),
            (
                "gold / predicted / correct",
                " / ".join(str(report[k]) for k in ("ents_gold", "ents_predicted", "ents_tp")),
            ),
            *rows,
            ("missed / spurious / wrong label",
             f"{errors.get('missed')} / {errors.get('spurious')} / {errors.get('wrong_label')}"),
        ]
    cells = "".join(
        f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows
    )
    return f'<table class="summary">{cells}</table>'


def plots_html(report: Optional[Dict[str, Any]]) -> str:
    """Inline SVG figures of a `score` report: the precision/recall curve over confidence
    thresholds, and the reliability diagram of the confidences (before and after the fitted
    temperature when the report has one). Empty when the report has neither."""
    if not report:
        return ""
    figures = []
    curve = report.get("pr_curve")
    if curve:
        points = [(c["r"], c["p"], c["threshold"]) for c in curve
                  if c["p"] is not None and c["r"] is not None]
        figures.append(_svg_figure(
            "Precision / recall over confidence thresholds", "recall", "precision",
            [("curve", "#1f77b4", [(r, p) for r, p, _ in points])],
            labels=[(r, p, f"{t:g}") for r, p, t in points[:: max(1, len(points) // 5)]],
        ))
    series = []
    fitted = report.get("temperature")
    if fitted and fitted.get("test"):
        pair = fitted.get("mention_temperatures")
        for name, color in (("before", "#d62728"), ("after_single", "#ff7f0e"),
                            ("after", "#2ca02c")):
            table = fitted["test"].get(name)
            if table:
                t = fitted["previous_temperature" if name == "before" else "temperature"]
                label = f"T={t:.2f}"
                if name == "after" and pair:  # entities seen in training / not seen
                    label = f"T={pair['seen']:.2f} seen, {pair['unseen']:.2f} unseen"
                series.append((f"{label} (ECE {table['ece']:.3f})", color, _reliability(table)))
    elif report.get("confidence"):
        conf = report["confidence"]
        series.append((f"ECE {conf['ece']:.3f}", "#1f77b4", _reliability(conf)))
    if series:
        series.insert(0, ("perfect", "#999999", [(0.0, 0.0), (1.0, 1.0)]))
        figures.append(_svg_figure(
            "Reliability: accuracy per confidence bin", "confidence", "accuracy", series
        ))
    return f'<div class="figures">{"".join(figures)}</div>' if figures else ""


def _reliability(table: Dict[str, Any]) -> List[Tuple[float, float]]:
    return [(b["mean_confidence"], b["accuracy"]) for b in table["bins"] if b["count"]]


def _svg_figure(title, x_label, y_label, series, labels=()) -> str:
    """A small line chart over [0, 1] x [0, 1] as inline SVG (no plotting library needed)."""
    size, pad = 260, 40

    def xy(x: float, y: float) -> str:
        return f"{pad + x * size:.1f},{pad + (1 - y) * size:.1f}"

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{size + 2 * pad + 150}" '
        f'height="{size + 2 * pad}" role="img"><title>{html.escape(title)}</title>',
        f'<rect x="{pad}" y="{pad}" width="{size}" height="{size}" fill="none" stroke="#333"/>',
        f'<text x="{pad}" y="{pad - 12}" font-size="13">{html.escape(title)}</text>',
        f'<text x="{pad + size / 2}" y="{size + pad + 30}" font-size="11" '
        f'text-anchor="middle">{html.escape(x_label)}</text>',
        f'<text x="12" y="{pad + size / 2}" font-size="11" text-anchor="middle" '
        f'transform="rotate(-90 12 {pad + size / 2})">{html.escape(y_label)}</text>',
    ]
    for tick in (0.0, 0.5, 1.0):
        parts.append(f'<text x="{pad + tick * size}" y="{size + pad + 14}" font-size="10" '
                     f'text-anchor="middle">{tick:g}</text>')
        parts.append(f'<text x="{pad - 6}" y="{pad + (1 - tick) * size + 4}" font-size="10" '
                     f'text-anchor="end">{tick:g}</text>')
    for i, (name, color, points) in enumerate(series):
        if points:
            dash = ' stroke-dasharray="4 3"' if name == "perfect" else ""
            line = " ".join(xy(x, y) for x, y in points)
            parts.append(f'<polyline points="{line}" fill="none" stroke="{color}" '
                         f'stroke-width="2"{dash}/>')
            parts.extend(f'<circle cx="{xy(x, y).split(",")[0]}" cy="{xy(x, y).split(",")[1]}" '
                         f'r="2.5" fill="{color}"/>' for x, y in points if name != "perfect")
        parts.append(f'<text x="{size + pad + 10}" y="{pad + 14 + 16 * i}" font-size="11" '
                     f'fill="{color}">{html.escape(name)}</text>')
    for x, y, text in labels:
        parts.append(f'<text x="{pad + x * size + 4}" y="{pad + (1 - y) * size - 4}" '
                     f'font-size="9" fill="#555">{html.escape(text)}</text>')
    parts.append("</svg>")
    return "".join(parts)


_HTML_HEAD = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>NER error report</title>
<style>
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em; }
table.summary th { text-align: left; padding-right: 1.5em; }
section.doc { border-top: 1px solid #ccc; margin-top: 1.5em; padding-top: 0.5em; }
section.doc h2 { font-size: 1.1em; }
div.view h3 { font-size: 0.9em; color: #666; margin: 0.6em 0 0; }
ul.errors li.missed { color: #b35900; }
ul.errors li.spurious { color: #a00; }
ul.errors li.wrong { color: #5a2ca0; }
p.omitted { color: #a00; }
div.figures svg { margin: 1em 2em 0 0; }
</style></head><body>"""
