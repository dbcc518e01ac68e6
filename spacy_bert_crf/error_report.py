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
    parts = [_HTML_HEAD, "<h1>NER error report</h1>", summary]
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
</style></head><body>"""
