"""Entities on a page: one self-contained HTML file (inline CSS and JS, nothing fetched) to look at.

- ``prediction_page(docs)``: each document with its entities highlighted by type, a legend that filters by
  type, and each entity's type and confidence (when spans carry a ``score``) on hover.
- ``evaluation_page(gold, predicted, scores)``: gold against predicted, each span marked correct, missed,
  spurious or wrong-type, with the per-type table on top and filters by type and by outcome.

Overlapping (multi-label) entities stay readable: the text is cut at every span edge and each piece is wrapped
in one element per span covering it; each span keeps a lane (an underline at its own depth, the lanes of
nested or crossing spans never shared) and its label chip at its start. The chips are drawn by CSS from a data
attribute, so a document's text content in the page is exactly its text. Everything from a document (text,
ids, labels) is escaped: document text is untrusted.
"""

from __future__ import annotations

import html
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cardioner.data.document import Document, Span
from cardioner.values import counted

#: distinct colours for the first types (Okabe–Ito and Tableau, readable on white); more types cycle hues
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#8C564B", "#7F7F7F",
           "#BCBD22", "#17BECF", "#9467BD", "#2CA02C")
#: evaluation outcomes: (key, what the legend says, colour)
OUTCOMES = (("correct", "correct", "#1B9E45"), ("wrong-type", "wrong type", "#7B3FBF"),
            ("missed", "missed (gold, not predicted)", "#D62728"),
            ("spurious", "spurious (predicted, not gold)", "#E67E00"))
MAX_LANES = 8  # deeper nesting shares the last lane
#: marks a page as ours, so that writing a page again may replace it (``is_view_page``)
GENERATOR = '<meta name="generator" content="cardioner">'


def is_view_page(path: str | Path) -> bool:
    """Whether ``path`` is a page this module wrote (which ``predict``/``evaluate`` may replace)."""
    try:
        with open(path, encoding="utf-8") as f:
            return GENERATOR in f.read(4096)
    except (OSError, UnicodeDecodeError):
        return False


def type_colour(index: int) -> str:
    """The colour of the ``index``-th entity type."""
    if index < len(PALETTE):
        return PALETTE[index]
    return f"hsl({(index * 137) % 360}, 60%, 42%)"


@dataclass(frozen=True)
class Mark:
    """A span to draw.

    Args:
        key: unique in the page (the DOM's ``data-span``).
        span: the span (its pieces are drawn; a discontinuous span keeps one key).
        type_index: index of its label in the page's types (colour and filter).
        outcome: "" on a prediction page; else one of OUTCOMES' keys.
        note: extra hover text (e.g. the gold type of a wrong-type prediction).
    """

    key: str
    span: Span
    type_index: int
    outcome: str = ""
    note: str = ""


def _lanes(marks: Sequence[Mark]) -> dict[str, int]:
    """A lane per mark so that no two overlapping marks share one (longest first, then by start)."""
    lane_ends: list[int] = []
    lanes: dict[str, int] = {}
    for mark in sorted(marks, key=lambda m: (m.span.start, -(m.span.end - m.span.start), m.key)):
        lane = next((i for i, end in enumerate(lane_ends) if end <= mark.span.start), len(lane_ends))
        if lane == len(lane_ends):
            lane_ends.append(mark.span.end)
        lane_ends[lane] = mark.span.end
        lanes[mark.key] = min(lane, MAX_LANES - 1)
    return lanes


def _text_html(text: str, marks: Sequence[Mark], labels: Sequence[str]) -> tuple[str, int]:
    """The document's text as HTML with every mark drawn; returns (html, lanes used)."""
    lanes = _lanes(marks)
    pieces = [(start, end, mark) for mark in marks for start, end in mark.span.pieces() if end > start]
    bounds = sorted({0, len(text), *(p[0] for p in pieces), *(p[1] for p in pieces)})
    first_piece = {mark.key: min(mark.span.pieces()) for mark in marks}
    out = []
    for start, end in zip(bounds, bounds[1:], strict=False):
        segment = html.escape(text[start:end], quote=False)
        covering = sorted((mark for s, e, mark in pieces if s <= start and end <= e),
                          key=lambda m: lanes[m.key])
        for mark in covering:  # innermost element = lowest lane
            score = getattr(mark.span, "score", None)
            attrs = {
                "class": f"ent t{mark.type_index} lane{lanes[mark.key]}"
                         + (f" o-{mark.outcome}" if mark.outcome else "")
                         + (" first" if first_piece[mark.key][0] == start else ""),
                "data-span": mark.key,
                "data-label": labels[mark.type_index],
                "data-start": str(mark.span.start),
                "data-end": str(mark.span.end),
            }
            if score is not None:
                attrs["data-score"] = f"{float(score):.3f}"
            if mark.outcome:
                attrs["data-outcome"] = mark.outcome
            if mark.note:
                attrs["data-note"] = mark.note
            if attrs["class"].endswith(" first"):
                attrs["data-chip"] = _chip(labels[mark.type_index], mark)
            opened = " ".join(f'{name}="{html.escape(value, quote=True)}"' for name, value in attrs.items())
            segment = f"<span {opened}>{segment}</span>"
        out.append(segment)
    return "".join(out), (max(lanes.values()) + 1 if lanes else 0)


def _chip(label: str, mark: Mark) -> str:
    """The label drawn at a span's start: its type, and on an evaluation page its outcome."""
    if mark.outcome == "wrong-type":
        return f"{label} \u2260 {mark.note.removeprefix('gold: ')}"
    return label + (f" \u00b7 {mark.outcome}" if mark.outcome else "")


def _document_html(doc_id: str, text: str, marks: Sequence[Mark], labels: Sequence[str], summary: str) -> str:
    body, lanes = _text_html(text, marks, labels)
    types = " ".join(sorted({f"t{m.type_index}" for m in marks}))
    return (f'<section class="doc" data-doc="{html.escape(doc_id, quote=True)}" data-types="{types}">'
            f'<h2><span class="doc-id">{html.escape(doc_id)}</span> '
            f'<small>{html.escape(summary)}</small></h2>'
            f'<div class="text" style="--lanes:{max(lanes, 1)}">{body}</div></section>')


def _legend(labels: Sequence[str], counts: Counter, kind: str = "type") -> str:
    items = []
    for index, label in enumerate(labels):
        items.append(f'<label class="key t{index}"><input type="checkbox" checked data-filter="{kind}" '
                     f'data-value="t{index}"><span class="swatch"></span>{html.escape(label)} '
                     f'<small>{counts.get(label, 0)}</small></label>')
    return "".join(items)


def _outcome_legend(counts: Counter) -> str:
    return "".join(f'<label class="key o-{key}"><input type="checkbox" checked data-filter="outcome" '
                   f'data-value="o-{key}"><span class="swatch"></span>{html.escape(text)} '
                   f'<small>{counts.get(key, 0)}</small></label>' for key, text, _ in OUTCOMES)


def _style(labels: Sequence[str]) -> str:
    """The page's CSS: the fixed rules and one colour rule (and filter rule) per type and outcome."""
    rules = [_BASE_CSS]
    for index in range(len(labels)):
        colour = type_colour(index)
        rules.append(f".t{index}{{--c:{colour}}} body.hide-t{index} .ent.t{index}"
                     "{--c:transparent;--o:transparent;background:none} "
                     f"body.hide-t{index} .ent.t{index}.first::before{{display:none}}")
    for key, _, colour in OUTCOMES:
        rules.append(f".o-{key}{{--o:{colour}}} body.hide-o-{key} .ent.o-{key}"
                     "{--o:transparent;--c:transparent;background:none} "
                     f"body.hide-o-{key} .ent.o-{key}.first::before{{display:none}}")
    return "\n".join(rules)


def _page(title: str, subtitle: str, legends: str, documents: list[str], labels: Sequence[str],
          table: str = "") -> str:
    return (
        f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">{GENERATOR}"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        "<meta http-equiv=\"Content-Security-Policy\" "
        "content=\"default-src 'none'; style-src 'unsafe-inline'; "
        "script-src 'unsafe-inline'\">"
        f"<title>{html.escape(title)}</title><style>{_style(labels)}</style></head>"
        f'<body><header><h1>{html.escape(title)}</h1>'
        f'<p class="sub">{html.escape(subtitle)}</p>{table}</header>'
        f'<nav class="bar">{legends}<label class="opt"><input type="checkbox" checked data-toggle="labels"> '
        f'labels</label></nav><main>{"".join(documents)}</main><div id="tip" role="tooltip" hidden></div>'
        f"<script>{_SCRIPT}</script></body></html>\n"
    )


def _type_labels(*corpora: Sequence[Document]) -> list[str]:
    return sorted({span.label for docs in corpora for doc in docs for span in doc.spans})


def prediction_page(docs: Sequence[Document], title: str = "cardioner predictions",
                    subtitle: str = "") -> str:
    """A self-contained HTML page of predicted entities, highlighted by type, with a legend that filters.

    Args:
        docs: documents with their (predicted) spans; a span's ``score``, when it has one, shows on hover.
        title: the page title.
        subtitle: a line under the title (e.g. the model and the input).
    """
    labels = _type_labels(docs)
    index = {label: i for i, label in enumerate(labels)}
    counts = Counter(span.label for doc in docs for span in doc.spans)
    sections = []
    for d, doc in enumerate(docs):
        marks = [Mark(f"d{d}s{k}", span, index[span.label]) for k, span in enumerate(doc.sorted_spans())]
        summary = f"{counted(len(marks), 'entity')}, {counted(len(doc.text), 'character')}"
        sections.append(_document_html(doc.id, doc.text, marks, labels, summary))
    total = sum(counts.values())
    subtitle = subtitle or f"{counted(len(docs), 'document')}, {counted(total, 'entity')}"
    legends = f'<div class="legend" aria-label="entity types">{_legend(labels, counts)}</div>'
    return _page(title, subtitle, legends, sections, labels)


def compare_spans(gold: Sequence[Span], predicted: Sequence[Span]) -> list[tuple[Span, str, str]]:
    """Each gold and predicted span with its outcome under exact matching (the MultiCardioNER rule).

    Returns:
        (span, outcome, note) triples: predictions are "correct" (same offsets and type), "wrong-type" (same
        offsets, another type; the note names the gold type) or "spurious"; gold spans no prediction found,
        exactly or with another type, are "missed". A spurious or missed span that overlaps a span of the
        other side notes it, so boundary errors can be told from inventions.
    """
    gold_keys = {(s.pieces(), s.label) for s in gold}
    gold_by_offsets: dict[tuple, list[str]] = {}
    for span in gold:
        gold_by_offsets.setdefault(span.pieces(), []).append(span.label)
    pred_keys = {(s.pieces(), s.label) for s in predicted}
    pred_offsets = {s.pieces() for s in predicted}
    result = []
    for span in predicted:
        if (span.pieces(), span.label) in gold_keys:
            result.append((span, "correct", ""))
        elif span.pieces() in gold_by_offsets:
            result.append((span, "wrong-type", "gold: " + ", ".join(gold_by_offsets[span.pieces()])))
        else:
            result.append((span, "spurious", _overlap_note(span, gold, "gold")))
    for span in gold:
        if (span.pieces(), span.label) not in pred_keys and span.pieces() not in pred_offsets:
            result.append((span, "missed", _overlap_note(span, predicted, "predicted")))
    return result


def _overlap_note(span: Span, others: Sequence[Span], side: str) -> str:
    hits = [o for o in others if o.overlaps(span)]
    if not hits:
        return ""
    return f"overlaps {side} " + ", ".join(f"{o.label} {o.start}-{o.end}" for o in hits[:3])


def evaluation_page(gold: Sequence[Document], predicted: Sequence[Document], scores: dict,
                    title: str = "cardioner evaluation", subtitle: str = "") -> str:
    """A self-contained HTML page of gold against predicted spans, with the per-type table on top.

    Args:
        gold: the annotated documents.
        predicted: the same documents (same ids) with predicted spans.
        scores: ``score_spans`` output (exact match; ``overlap`` inside when present).
        title: the page title.
        subtitle: a line under the title.
    """
    by_id = {doc.id: doc for doc in predicted}
    labels = _type_labels(gold, predicted)
    index = {label: i for i, label in enumerate(labels)}
    outcomes: Counter = Counter()
    sections = []
    for d, doc in enumerate(gold):
        pred = by_id.get(doc.id)
        compared = compare_spans(doc.spans, pred.spans if pred is not None else [])
        in_order = sorted(compared, key=lambda c: (c[0].start, -c[0].end))
        marks = [Mark(f"d{d}s{k}", span, index[span.label], outcome, note)
                 for k, (span, outcome, note) in enumerate(in_order)]
        here = Counter(m.outcome for m in marks)
        outcomes.update(here)
        summary = ", ".join(f"{here[key]} {text.split(' (')[0]}" for key, text, _ in OUTCOMES if here[key])
        sections.append(_document_html(doc.id, doc.text, marks, labels, summary or "no entities"))
    counts = Counter(span.label for doc in gold for span in doc.spans)
    micro = scores.get("micro", {})
    subtitle = subtitle or (f"{counted(len(gold), 'document')}; exact match: precision "
                            f"{micro.get('precision', 0):.4f}, recall {micro.get('recall', 0):.4f}, "
                            f"F1 {micro.get('f1', 0):.4f}")
    legends = (f'<div class="legend" aria-label="outcomes">{_outcome_legend(outcomes)}</div>'
               f'<div class="legend" aria-label="entity types">{_legend(labels, counts)}</div>')
    return _page(title, subtitle, legends, sections, labels, table=_score_table(scores))


def _score_table(scores: dict) -> str:
    """The per-type table (exact match; overlap F1 beside it when scored), then micro and macro."""
    overlap = scores.get("overlap", {})
    rows = [*scores.get("per_type", {}).items(), ("micro", scores.get("micro", {})),
            ("macro", scores.get("macro", {}))]
    head = ("<tr><th>type</th><th>precision</th><th>recall</th><th>F1</th><th>F1 overlap</th><th>TP</th>"
            "<th>FP</th><th>FN</th><th>support</th></tr>")
    body = []
    for name, row in rows:
        if not row:
            continue
        over = overlap.get("per_type", {}).get(name) if name not in ("micro", "macro") else overlap.get(name)
        cells = [f"{row.get(k, 0):.4f}" for k in ("precision", "recall", "f1")]
        cells.append(f"{over['f1']:.4f}" if over else "")
        cells += [str(row[k]) if k in row else "" for k in ("tp", "fp", "fn", "support")]
        cls = ' class="total"' if name in ("micro", "macro") else ""
        body.append(f"<tr{cls}><th>{html.escape(name)}</th>" + "".join(f"<td>{c}</td>" for c in cells)
                    + "</tr>")
    return f'<table class="scores"><thead>{head}</thead><tbody>{"".join(body)}</tbody></table>'


_BASE_CSS = """
:root{color-scheme:light;
 font-family:system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
body{margin:0;background:#f6f7f9;color:#1d2330}
header{background:#fff;padding:14px 24px 4px}
nav.bar{position:sticky;top:0;z-index:2;background:#fff;border-bottom:1px solid #d9dde5;padding:4px 24px 8px;
 box-shadow:0 1px 4px rgba(0,0,0,.06);display:flex;flex-wrap:wrap;align-items:center;gap:2px 22px}
h1{font-size:20px;margin:0 0 2px}
.sub{margin:0 0 8px;color:#5b6475;font-size:13px}
.legend{display:flex;flex-wrap:wrap;gap:6px 14px;margin:4px 0;font-size:13px}
.key{display:inline-flex;align-items:center;gap:5px;cursor:pointer;user-select:none}
.key small{color:#5b6475}
.key .swatch{width:14px;height:10px;border-radius:2px;background:var(--c,var(--o));display:inline-block}
.key.o-missed .swatch{background:repeating-linear-gradient(90deg,var(--o) 0 4px,transparent 4px 6px)}
.opt{font-size:13px;color:#5b6475;cursor:pointer}
main{max-width:980px;margin:18px auto;padding:0 16px}
.doc{background:#fff;border:1px solid #d9dde5;border-radius:8px;margin:0 0 16px;padding:14px 18px}
.doc h2{font-size:14px;margin:0 0 8px;color:#3a4252;font-weight:600}
.doc h2 small{font-weight:400;color:#5b6475;margin-left:6px}
.text{white-space:pre-wrap;overflow-wrap:anywhere;font-size:15px;
 line-height:calc(1.75em + var(--lanes,0) * 6px)}
.ent{--c:#888;border-bottom:3px solid var(--o,var(--c));padding-bottom:1px;cursor:default;
 background:color-mix(in srgb,var(--c) 11%,transparent);background-clip:content-box}
.ent.o-missed{border-bottom-style:dashed;background:none}
.ent.o-spurious{border-bottom-style:solid}
.ent.o-wrong-type{border-bottom-style:double;border-bottom-width:4px}
.ent.o-missed.first::before{background:none;color:var(--c);box-shadow:inset 0 0 0 1.5px var(--c)}
.lane1{padding-bottom:7px}.lane2{padding-bottom:13px}.lane3{padding-bottom:19px}.lane4{padding-bottom:25px}
.lane5{padding-bottom:31px}.lane6{padding-bottom:37px}.lane7{padding-bottom:43px}
.ent.first::before{content:attr(data-chip);font-size:10px;font-weight:600;letter-spacing:.02em;color:#fff;
 background:var(--c);border-radius:3px;padding:0 4px;margin-right:3px;vertical-align:2px;line-height:1.5;
 display:inline-block;white-space:nowrap}
body.hide-labels .ent.first::before{display:none}
.ent.hover{background:color-mix(in srgb,var(--c) 30%,transparent)}
.ent.o-missed.hover{background:color-mix(in srgb,var(--o) 18%,transparent)}
#tip{position:fixed;z-index:5;max-width:360px;background:#1d2330;color:#fff;font-size:12px;line-height:1.45;
 padding:6px 9px;border-radius:5px;pointer-events:none;box-shadow:0 2px 8px rgba(0,0,0,.25)}
#tip b{font-weight:600}
table.scores{border-collapse:collapse;font-size:13px;margin:6px 0 8px;font-variant-numeric:tabular-nums}
table.scores th,table.scores td{padding:3px 10px;border-bottom:1px solid #e6e9ef;text-align:right}
table.scores th:first-child{text-align:left}
table.scores thead th{color:#5b6475;font-weight:600;border-bottom:1px solid #c9ced8}
table.scores tr.total th,table.scores tr.total td{font-weight:600}
"""

_SCRIPT = """
(function(){
  var tip=document.getElementById('tip');
  function describe(el){
    var s=el.getAttribute('data-label');
    var score=el.getAttribute('data-score');if(score!==null){s+=' \\u00b7 confidence '+score;}
    var o=el.getAttribute('data-outcome');if(o){s+=' \\u00b7 '+o;}
    var n=el.getAttribute('data-note');if(n){s+=' ('+n+')';}
    return s+' \\u00b7 '+el.getAttribute('data-start')+'\\u2013'+el.getAttribute('data-end');
  }
  function spanText(key){
    var parts=document.querySelectorAll('.ent[data-span="'+key+'"]'),t='';
    for(var i=0;i<parts.length;i++){
      if(!parts[i].parentElement.closest('[data-span="'+key+'"]')){t+=parts[i].textContent;}}
    return t;
  }
  function mark(key,on){
    var parts=document.querySelectorAll('.ent[data-span="'+key+'"]');
    for(var i=0;i<parts.length;i++){parts[i].classList.toggle('hover',on);}
  }
  var current=[];
  document.addEventListener('mouseover',function(e){
    var el=e.target.closest?e.target.closest('.ent'):null;
    current.forEach(function(k){mark(k,false);});current=[];
    if(!el){tip.hidden=true;return;}
    var lines=[];
    for(var x=el;x&&x.classList&&x.classList.contains('ent');x=x.parentElement.closest('.ent')){
      var key=x.getAttribute('data-span');current.push(key);mark(key,true);
      var b=document.createElement('b');b.textContent=describe(x);
      var q=document.createElement('div');q.textContent='\\u201c'+spanText(key)+'\\u201d';
      lines.push(b,q);
    }
    tip.replaceChildren.apply(tip,lines);tip.hidden=false;
  });
  document.addEventListener('mousemove',function(e){
    if(tip.hidden)return;
    var x=Math.min(e.clientX+14,window.innerWidth-tip.offsetWidth-8);
    tip.style.left=x+'px';tip.style.top=(e.clientY+18)+'px';
  });
  document.addEventListener('change',function(e){
    var box=e.target;
    if(box.getAttribute('data-filter')){document.body.classList.toggle('hide-'+box.getAttribute('data-value'),!box.checked);}
    if(box.getAttribute('data-toggle')==='labels'){document.body.classList.toggle('hide-labels',!box.checked);}
  });
  document.body.setAttribute('data-ready','1');
})();
"""
