"""Documents and spans: the only things a cardioner user touches.

Offsets are 0-based, end-exclusive character (code point) offsets into ``Document.text`` exactly as stored
on disk (read with ``newline=""``; a BOM is kept as character 0 when the annotations count it).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path


class CorpusError(ValueError):
    """Bad input: names the file, the line (or record) and the problem.

    Args:
        message: what is wrong, including the bad value.
        path: the file (or folder) being read.
        line: 1-based line (or JSONL record) number, when there is one.
    """

    def __init__(self, message: str, path: str | Path | None = None, line: int | None = None):
        self.problem = message
        self.path = str(path) if path is not None else None
        self.line = line
        where = ""
        if self.path is not None:
            where = self.path + (f":{line}" if line is not None else "") + ": "
        elif line is not None:
            where = f"line {line}: "
        super().__init__(where + message)


@dataclass(frozen=True, order=True)
class Span:
    """An annotated stretch of text.

    ``fragments`` holds the pieces of a discontinuous brat span as ``((start, end), ...)``; for a
    contiguous span it is empty and ``(start, end)`` is the whole span. For a discontinuous one,
    ``start``/``end`` are the first fragment's start and the last fragment's end.
    """

    start: int
    end: int
    label: str
    fragments: tuple[tuple[int, int], ...] = ()

    def pieces(self) -> tuple[tuple[int, int], ...]:
        """The (start, end) pieces: the fragments of a discontinuous span, else the span itself."""
        return self.fragments or ((self.start, self.end),)

    def overlaps(self, other: Span) -> bool:
        return self.start < other.end and other.start < self.end

    def text_in(self, text: str, joiner: str = " ") -> str:
        """The covered string; fragments joined by ``joiner`` (brat writes a space)."""
        return joiner.join(text[s:e] for s, e in self.pieces())


@dataclass
class Document:
    """A text with its spans. ``meta`` carries what a reader kept aside (brat notes, relations, source path)."""

    id: str
    text: str
    spans: list[Span] = field(default_factory=list)
    meta: dict = field(default_factory=dict)

    def sorted_spans(self) -> list[Span]:
        return sorted(self.spans, key=lambda s: (s.start, -s.end, s.label))

    def check_spans(self, path: str | Path | None = None) -> None:
        """Raise CorpusError for a span that is negative, reversed or past the end of the text."""
        n = len(self.text)
        for span in self.spans:
            for s, e in span.pieces():
                if s < 0 or e < 0:
                    raise CorpusError(f"document {self.id!r}: negative offset in span {s}-{e} ({span.label})", path)
                if e < s:
                    raise CorpusError(f"document {self.id!r}: reversed span {s}-{e} ({span.label})", path)
                if e > n:
                    raise CorpusError(
                        f"document {self.id!r}: span {s}-{e} ({span.label}) ends past the end of the text "
                        f"({n} characters)",
                        path,
                    )


def find_overlap(spans: list[Span]) -> tuple[Span, Span] | None:
    """The first pair of overlapping spans (by start), or None."""
    ordered = sorted(spans, key=lambda s: (s.start, s.end))
    furthest: Span | None = None
    for span in ordered:
        if furthest is not None and span.start < furthest.end:
            return furthest, span
        if furthest is None or span.end > furthest.end:
            furthest = span
    return None


def check_flat(doc: Document, path: str | Path | None = None) -> None:
    """Raise CorpusError naming the two spans if ``doc`` has overlapping spans (a flat task forbids them)."""
    pair = find_overlap(doc.spans)
    if pair is not None:
        a, b = pair
        raise CorpusError(
            f"document {doc.id!r}: overlapping spans {a.start}-{a.end} {a.label} {doc.text[a.start:a.end]!r} and "
            f"{b.start}-{b.end} {b.label} {doc.text[b.start:b.end]!r}; a flat (multi-class) task forbids overlaps "
            "(train with --multilabel, or resolve them with resolve_overlaps)",
            path,
        )


def resolve_overlaps(doc: Document) -> tuple[Document, int]:
    """Keep the longest of overlapping spans (then the earliest); returns the flat document and how many were dropped."""
    kept: list[Span] = []
    for span in sorted(doc.spans, key=lambda s: (-(s.end - s.start), s.start, s.label)):
        if not any(span.overlaps(k) for k in kept):
            kept.append(span)
    dropped = len(doc.spans) - len(kept)
    return Document(doc.id, doc.text, sorted(kept, key=lambda s: (s.start, s.end)), dict(doc.meta)), dropped


@dataclass
class ReadReport:
    """What a reader read, kept aside, repaired and skipped, with reasons. Nothing is dropped silently."""

    documents: int = 0
    spans: int = 0
    kept_aside: Counter = field(default_factory=Counter)  # e.g. {"brat R lines": 12}
    repaired: Counter = field(default_factory=Counter)  # e.g. {"I- after O repaired to B- (IOB2 rule)": 3}
    skipped: Counter = field(default_factory=Counter)  # e.g. {"file without .ann": 1}
    examples: dict = field(default_factory=dict)  # reason -> first few examples (strings)

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
        return self

    def summary(self) -> str:
        lines = [f"read {self.documents} documents, {self.spans} spans"]
        for title, counter in (("kept aside", self.kept_aside), ("repaired", self.repaired), ("skipped", self.skipped)):
            for reason, count in sorted(counter.items()):
                example = self.examples.get(reason)
                tail = f" (e.g. {example[0]})" if example else ""
                lines.append(f"  {title}: {count} {reason}{tail}")
        return "\n".join(lines)
