"""Documents and spans: the only things a cardioner user touches.

Offsets are 0-based, end-exclusive character (code point) offsets into ``Document.text`` exactly as stored
on disk (read with ``newline=""``; a BOM is kept as character 0 when the annotations count it).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cardioner.errors import CorpusError
from cardioner.values import counted


@dataclass(frozen=True, order=True)
class Span:
    """An annotated stretch of text.

    ``fragments`` holds the pieces of a discontinuous brat span as ``((start, end), ...)``; for a
    contiguous span it is empty and ``(start, end)`` is the whole span. For a discontinuous one,
    ``start``/``end`` are the first fragment's start and the last fragment's end.

    ``score`` is a predicted span's confidence in [0, 1] (the key the HF pipeline uses): the probability the
    model gives to exactly this span (``modeling.span_confidence``); None when unknown (gold spans). Equality,
    hashing and ordering ignore it, so a predicted span equals the gold span it matches.
    """

    start: int
    end: int
    label: str
    fragments: tuple[tuple[int, int], ...] = ()
    score: float | None = field(default=None, compare=False)

    def pieces(self) -> tuple[tuple[int, int], ...]:
        """The (start, end) pieces: the fragments of a discontinuous span, else the span itself."""
        return self.fragments or ((self.start, self.end),)

    def overlaps(self, other: Span) -> bool:
        return self.start < other.end and other.start < self.end

    def text_in(self, text: str, joiner: str = " ") -> str:
        """The covered string; fragments joined by ``joiner`` (brat writes a space)."""
        return joiner.join(text[s:e] for s, e in self.pieces())


#: meta lists holding one item per span, kept in step with ``Document.spans`` when spans are dropped
PER_SPAN_META = ("brat_ids", "span_texts")


@dataclass
class Document:
    """A text with its spans. ``meta`` carries what a reader
    kept aside (brat notes, relations, source path)."""

    id: str
    text: str
    spans: list[Span] = field(default_factory=list)
    meta: dict = field(default_factory=dict)

    def sorted_spans(self) -> list[Span]:
        return sorted(self.spans, key=lambda s: (s.start, -s.end, s.label))

    def check_spans(self, path: str | Path | None = None) -> None:
        """Raise CorpusError for a span (or fragment) that is
        negative, reversed, empty or past the end of the text."""
        for span in self.spans:
            problem = span_problem(self.id, span, len(self.text))
            if problem is not None:
                raise CorpusError(problem, path)


def span_problem(doc_id: str, span: Span, length: int | None) -> str | None:
    """What is wrong with the offsets of ``span``: a negative, reversed or empty piece, or (when the text's
    ``length`` is known) one past its end; None when nothing is."""
    for s, e in span.pieces():
        if s < 0 or e < 0:
            return f"document {doc_id!r}: negative offset in span {s}-{e} ({span.label})"
        if e < s:
            return f"document {doc_id!r}: reversed span {s}-{e} ({span.label})"
        if e == s:
            return f"document {doc_id!r}: empty span {s}-{e} ({span.label}) covers no character"
    for s, e in span.pieces():
        if length is not None and e > length:
            return (f"document {doc_id!r}: span {s}-{e} ({span.label}) ends past the end of the text "
                    f"({length} characters)")
    return None


def overlapping_pair(spans: Sequence[Span]) -> tuple[int, int] | None:
    """Indices (i, j) of the first pair of overlapping spans
    (by start; ``spans[j]`` starts inside ``spans[i]``)."""
    ordered = sorted(range(len(spans)), key=lambda i: (spans[i].start, spans[i].end))
    furthest: int | None = None
    for i in ordered:
        if furthest is not None and spans[i].start < spans[furthest].end:
            return furthest, i
        if furthest is None or spans[i].end > spans[furthest].end:
            furthest = i
    return None


def find_overlap(spans: Sequence[Span]) -> tuple[Span, Span] | None:
    """The first pair of overlapping spans (by start), or None."""
    pair = overlapping_pair(spans)
    return None if pair is None else (spans[pair[0]], spans[pair[1]])


def check_flat(doc: Document, path: str | Path | None = None, line: int | None = None,
               span_lines: Sequence[int] | None = None) -> None:
    """Raise CorpusError naming the two spans if ``doc`` has overlapping spans (a flat task forbids them).

    Args:
        doc: the document.
        path: the file it was read from (for the message).
        line: the line (or record) the whole document was read from (JSONL, HF), if any.
        span_lines: the line of each span (brat ``T`` lines, TSV rows), if known; the error then names the
            line of the second span and the message both lines.
    """
    pair = overlapping_pair(doc.spans)
    if pair is not None:
        a, b = (doc.spans[i] for i in pair)
        lines = ""
        if span_lines is not None:
            line = span_lines[pair[1]]
            lines = f" (lines {span_lines[pair[0]]} and {line})"
        raise CorpusError(
            f"document {doc.id!r}: overlapping spans {a.start}-{a.end} {a.label} {doc.text[a.start:a.end]!r}"
            f" and {b.start}-{b.end} {b.label} {doc.text[b.start:b.end]!r}{lines}; a flat (multi-class) task"
            " forbids overlaps (set data.multilabel: a channel per type, or data.overlaps=longest: keep the"
            " longest)",
            path,
            line,
        )


#: an id a kept-aside brat line refers to, bare or after a role: ``T1``, ``Arg1:T1``, ``Theme:E2``
_BRAT_REFERENCE = re.compile(r"^(?:[^:\s]+:)?([TERAMN]\d+)$")
#: report reason for kept-aside brat lines dropped because an entity they refer to is gone
BRAT_LINES_DROPPED = "brat A/R/E/N/#/* lines dropped with the entities they refer to"


def brat_references(line: str) -> set[str]:
    """The annotation ids a kept-aside brat line refers to:
    ``#1<TAB>AnnotatorNotes T1<TAB>note`` -> {"T1"}."""
    fields = line.split("\t")
    if len(fields) < 2:
        return set()
    return {m.group(1) for m in map(_BRAT_REFERENCE.match, fields[1].split()) if m is not None}


def prune_brat_lines(other: list[list], defined: set[str]) -> tuple[list[list], list[str]]:
    """Split kept-aside brat lines into those whose references all exist and those that refer to a missing id.

    A dropped line takes with it the lines that refer to it (an ``A`` on a dropped ``E``), so that no written
    line points at an annotation that is not in the file.

    Args:
        other: ``[position, line]`` items (``doc.meta["brat_other"]``).
        defined: the ``T`` ids that will be written with their entities.

    Returns:
        (the items kept, in their order; the dropped lines).
    """
    ids = [line.split("\t", 1)[0] for _, line in other]
    refs = [brat_references(line) for _, line in other]
    alive = [True] * len(other)
    changed = True
    while changed:
        known = set(defined) | {ann_id for ann_id, ok in zip(ids, alive, strict=True) if ok}
        changed = False
        for i, ok in enumerate(alive):
            if ok and not refs[i] <= known:
                alive[i], changed = False, True
    kept = [item for item, ok in zip(other, alive, strict=True) if ok]
    return kept, [item[1] for item, ok in zip(other, alive, strict=True) if not ok]


def keep_spans(doc: Document, keep: Sequence[int]) -> tuple[Document, list[str]]:
    """``doc`` with only the spans at indices ``keep`` (ascending), and its meta kept in step with them.

    Per-span meta (``brat_ids``, ``span_texts``) is filtered alike, so every brat id stays on its entity; a
    kept-aside brat line keeps its place among the remaining ``T`` lines, and one that refers to a dropped
    entity is dropped with it.

    Returns:
        (the new document, the kept-aside brat lines dropped).
    """
    meta = dict(doc.meta)
    for key in PER_SPAN_META:
        values = meta.get(key)
        if isinstance(values, list) and len(values) == len(doc.spans):
            meta[key] = [values[i] for i in keep]
    dropped: list[str] = []
    if meta.get("brat_other"):
        kept_before = [0] * (len(doc.spans) + 1)  # position p (p T lines before) -> how many of them are kept
        kept_set = set(keep)
        for p in range(len(doc.spans)):
            kept_before[p + 1] = kept_before[p] + (p in kept_set)
        moved = [[kept_before[min(position, len(doc.spans))], line] for position, line in meta["brat_other"]]
        defined = set(meta["brat_ids"]) if isinstance(meta.get("brat_ids"), list) else set()
        meta["brat_other"], dropped = prune_brat_lines(moved, defined)
    return Document(doc.id, doc.text, [doc.spans[i] for i in keep], meta), dropped


def resolve_overlaps(doc: Document, report: ReadReport | None = None) -> tuple[Document, int]:
    """Keep the longest of overlapping spans (then the earliest);
    returns the flat document and how many were dropped.

    The kept spans stay in their order (so a brat document without overlaps is written back unchanged) and
    carry their brat ids; kept-aside brat lines that refer to a dropped span are dropped too and counted in
    ``report`` when one is given.
    """
    spans = doc.spans
    kept: list[int] = []
    for i in sorted(
        range(len(spans)), key=lambda i: (-(spans[i].end - spans[i].start), spans[i].start, spans[i].label)
    ):
        if not any(spans[i].overlaps(spans[k]) for k in kept):
            kept.append(i)
    flat, lines = keep_spans(doc, sorted(kept))
    if lines and report is not None:
        report.note("skipped", BRAT_LINES_DROPPED, f"{doc.id}: {lines[0]}", n=len(lines))
    return flat, len(spans) - len(kept)


@dataclass
class ReadReport:
    """What a reader read, kept aside, repaired and skipped, with reasons. Nothing is dropped silently."""

    documents: int = 0
    spans: int = 0
    kept_aside: Counter = field(default_factory=Counter)  # e.g. {"brat R lines": 12}
    repaired: Counter = field(default_factory=Counter)  # e.g. {"I- after O repaired to B- (IOB2 rule)": 3}
    skipped: Counter = field(default_factory=Counter)  # e.g. {"file without .ann": 1}
    examples: dict = field(default_factory=dict)  # reason -> first few examples (strings)
    moves: list = field(default_factory=list)  # every span
    #   moved by data.span_errors=realign: "file:line: ..."

    def note(self, kind: str, reason: str, example: str | None = None, n: int = 1) -> None:
        getattr(self, kind)[reason] += n
        if example is not None:
            bucket = self.examples.setdefault(reason, [])
            if len(bucket) < 3:
                bucket.append(example)

    def merge(self, other: ReadReport) -> ReadReport:
        self.documents += other.documents
        self.spans += other.spans
        for name in ("kept_aside", "repaired", "skipped"):
            getattr(self, name).update(getattr(other, name))
        for reason, items in other.examples.items():
            bucket = self.examples.setdefault(reason, [])
            bucket.extend(items[: max(0, 3 - len(bucket))])
        self.moves.extend(other.moves)
        return self

    def summary(self) -> str:
        lines = [f"read {counted(self.documents, 'document')}, {counted(self.spans, 'span')}"]
        for title, counter in (("kept aside", self.kept_aside), ("repaired", self.repaired),
                               ("skipped", self.skipped)):
            for reason, count in sorted(counter.items()):
                example = self.examples.get(reason)
                tail = f" (e.g. {example[0]})" if example else ""
                lines.append(f"  {title}: {count} {reason}{tail}")
        lines.extend(f"  moved: {move}" for move in self.moves)
        return "\n".join(lines)
