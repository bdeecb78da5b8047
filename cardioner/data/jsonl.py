"""JSON Lines: one document per line, in any of three forms.

- ``{"id", "text", "spans": [{"start", "end", "label"[, "fragments"][, "text"]}]}`` (what ``write_jsonl`` writes,
  plus ``"meta"`` when the document has one);
- the CardioNER form ``{"id", "text", "tags": [{"start", "end", "tag"[, "text"]}]}``;
- the Hugging Face form ``{"tokens": [...], "ner_tags": [...]}`` (tag strings, or ints with ``label_names``);
  its text is rebuilt as in CoNLL (tokens joined by spaces).

A record without ``"id"`` gets ``NAME#n`` (n = its line number). Errors name the file and the record (line) number.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cardioner.data.common import atomic_path, check_span, progress, read_text, span_strings, split_lines
from cardioner.data.conll import tokens_to_document
from cardioner.data.document import CorpusError, Document, ReadReport, Span


def _offset(item: dict, key: str, where: str | Path | None, record: int | None) -> int:
    """An integer offset ``item[key]``, or CorpusError showing the bad value."""
    value = item.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise CorpusError(f"span {item!r}: {key!r} must be an integer offset, got {value!r}", where, record)
    return value


def _span_from_item(item: Any, label_key: str, text: str, doc_id: str, where: str | Path | None,
                    record: int | None, text_missing: bool = False) -> Span:
    """One span from a ``{"start", "end", label_key[, "fragments"][, "text"]}`` object, checked against ``text``
    (only for sane offsets when the document text is missing, as for a bare MultiCardioNER TSV)."""
    if not isinstance(item, dict):
        raise CorpusError(f"span must be an object, got {item!r}", where, record)
    label = item.get(label_key)
    if not isinstance(label, str) or not label:
        raise CorpusError(f"span {item!r}: {label_key!r} must be a non-empty string", where, record)
    fragments: tuple[tuple[int, int], ...] = ()
    if item.get("fragments"):
        try:
            fragments = tuple((int(s), int(e)) for s, e in item["fragments"])
        except (TypeError, ValueError):
            raise CorpusError(f"span {item!r}: 'fragments' must be [[start, end], ...]", where, record) from None
        start, end = fragments[0][0], fragments[-1][1]
        fragments = fragments if len(fragments) > 1 else ()
    else:
        start, end = _offset(item, "start", where, record), _offset(item, "end", where, record)
    span = Span(start, end, label, fragments)
    check_span(span, None if text_missing else text, doc_id, where, record)
    if not text_missing and "text" in item and item["text"] != span.text_in(text):
        raise CorpusError(f"span {start}-{end} {label}: its \"text\" {item['text']!r} != text[{start}:{end}] "
                          f"{span.text_in(text)!r}", where, record)
    return span


def _tag_names(tags: Sequence[Any], label_names: Sequence[str] | None, where: str | Path | None,
               record: int | None) -> list[str]:
    """Tag strings from strings or ids (ids need ``label_names``)."""
    names = []
    for tag in tags:
        if isinstance(tag, str):
            names.append(tag)
        elif isinstance(tag, int) and not isinstance(tag, bool):
            if label_names is None:
                raise CorpusError(f"ner_tags holds integer {tag!r} but no label_names were given", where, record)
            if not 0 <= tag < len(label_names):
                raise CorpusError(f"ner_tags id {tag!r} is outside label_names (0..{len(label_names) - 1})",
                                  where, record)
            names.append(label_names[tag])
        else:
            raise CorpusError(f"ner_tags must hold strings or integers, got {tag!r}", where, record)
    return names


def record_to_document(
    record: Any, default_id: str, report: ReadReport, label_names: Sequence[str] | None = None,
    where: str | Path | None = None, record_no: int | None = None,
) -> Document:
    """Turn one JSON-like record (any of the three forms) into a document; shared by the JSONL and HF readers.

    Args:
        record: the parsed record.
        default_id: the id when the record has none.
        report: where repairs are counted.
        label_names: names for integer ``ner_tags``.
        where: the source (for messages).
        record_no: the record (line) number (for messages).

    Returns:
        The document.
    """
    if not isinstance(record, dict):
        raise CorpusError(f"record must be a JSON object, got {type(record).__name__} {str(record)[:80]!r}",
                          where, record_no)
    doc_id = record.get("id")
    doc_id = default_id if doc_id is None else str(doc_id)
    if "text" not in record and "tokens" in record:
        tokens, tags = record.get("tokens"), record.get("ner_tags", record.get("tags"))
        if not isinstance(tokens, list) or not isinstance(tags, list) or len(tokens) != len(tags):
            raise CorpusError(f"'tokens' and 'ner_tags' must be lists of equal length, got {len(tokens or [])} "
                              f"tokens and {tags!r:.80}", where, record_no)
        bad = [t for t in tokens if not isinstance(t, str) or not t]
        if bad:
            raise CorpusError(f"tokens must be non-empty strings, got {bad[0]!r}", where, record_no)
        doc = tokens_to_document(doc_id, [tokens], [_tag_names(tags, label_names, where, record_no)], report, where,
                                 [[record_no or 0] * len(tokens)])
        doc.meta["docstart"] = False
        return doc
    text = record.get("text")
    if not isinstance(text, str):
        problem = "lacks 'text'" if "text" not in record else f"has a non-string 'text' {text!r:.80}"
        raise CorpusError(f"record {problem} (keys: {sorted(record)})", where, record_no)
    if "spans" in record:
        items, label_key = record["spans"], "label"
    else:
        items, label_key = record.get("tags", []), "tag"
    if not isinstance(items, list):
        raise CorpusError(f"{'spans' if label_key == 'label' else 'tags'} must be a list, got {items!r:.80}",
                          where, record_no)
    meta = dict(record["meta"]) if isinstance(record.get("meta"), dict) else {}
    text_missing = bool(meta.get("text_missing"))
    spans = [_span_from_item(item, label_key, text, doc_id, where, record_no, text_missing) for item in items]
    if text_missing:
        meta["span_texts"] = [item.get("text", "") for item in items]
    return Document(doc_id, text, spans, meta)


def read_jsonl(path: str | Path, report: ReadReport | None = None, label_names: Sequence[str] | None = None,
               doc_prefix: str | None = None) -> list[Document]:
    """Read a JSONL file.

    Args:
        path: the file.
        report: counts (a new one if None).
        label_names: names for integer ``ner_tags``.
        doc_prefix: the prefix of default ids (default: the file name without extension).

    Returns:
        The documents, in file order.
    """
    path = Path(path)
    report = report if report is not None else ReadReport()
    prefix = doc_prefix if doc_prefix is not None else path.stem
    docs = []
    for line_no, line in enumerate(split_lines(read_text(path)), start=1):
        if not line.strip():
            report.note("skipped", "blank lines in JSONL", f"{path}:{line_no}")
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise CorpusError(f"not valid JSON ({err.msg} at column {err.colno}): {line[:80]!r}", path, line_no) from None
        doc = record_to_document(record, f"{prefix}#{line_no}", report, label_names, path, line_no)
        docs.append(doc)
        report.documents += 1
        report.spans += len(doc.spans)
    return docs


def document_to_record(doc: Document) -> dict:
    """The JSON object written for ``doc``: id, text, spans (with fragments when discontinuous), meta if any."""
    spans = []
    for span, string in zip(doc.spans, span_strings(doc), strict=True):
        item: dict = {"start": span.start, "end": span.end, "label": span.label}
        if span.fragments:
            item["fragments"] = [list(f) for f in span.fragments]
        if doc.meta.get("text_missing"):
            item["text"] = string
        spans.append(item)
    record: dict = {"id": doc.id, "text": doc.text, "spans": spans}
    if doc.meta:
        record["meta"] = doc.meta
    return record


def write_jsonl(docs: list[Document], path: str | Path) -> None:
    """Write documents as JSONL (atomically), one ``{"id", "text", "spans"[, "meta"]}`` object per line.

    Args:
        docs: the documents.
        path: the output file.
    """
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline="") as f:
        for doc in progress(docs, desc=f"writing {Path(path).name}"):
            f.write(json.dumps(document_to_record(doc), ensure_ascii=False, default=str) + "\n")
