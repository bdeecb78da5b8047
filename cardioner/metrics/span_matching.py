"""Span matching and P/R/F1 counting: the one implementation behind every span score in cardioner.

Standard library only, so that the `evaluate` metric module (``span_f1.py``) can ship it beside itself and
load without cardioner installed. ``cardioner.evaluation`` builds its public API on these functions.

A span here is a *key* ``(label, pieces)`` where ``pieces`` is a tuple of ``(start, end)`` character ranges
(one for a contiguous span, several for a discontinuous brat span). Offsets are 0-based, end-exclusive.

Matching rules (per document, per label — spans of different labels never interact, so overlapping
multi-label spans are scored independently per type):

- ``exact``: a prediction is a true positive if a gold span has the same label and the same pieces.
- ``overlap``: a prediction and a gold span of the same label match if they share at least one character.
  Matching is one-to-one and greedy: all (gold, prediction) pairs that overlap are taken in order of the
  number of shared characters, largest first (ties: gold in document order, then predictions in document
  order); a pair is accepted when neither side is matched yet. Greedy is not always the maximum matching, but
  it is deterministic and prefers the best-aligned pair, which is what a reader of the output expects.

Identical spans (same label and pieces) in one document are counted once, on both sides; how many were
removed is reported.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping

SpanKey = tuple[str, tuple[tuple[int, int], ...]]
MATCH_MODES = ("exact", "overlap")
UNKNOWN_DOCUMENT_RULES = ("count", "ignore")


def span_key(label: str, start: int, end: int, fragments: Iterable[tuple[int, int]] = ()) -> SpanKey:
    """The matching key of a span: its label and its (start, end) pieces."""
    pieces = tuple((int(s), int(e)) for s, e in fragments) or ((int(start), int(end)),)
    return str(label), pieces


def shared_characters(a: SpanKey, b: SpanKey) -> int:
    """How many characters two spans share (summed over their pieces)."""
    return sum(max(0, min(ae, be) - max(as_, bs)) for as_, ae in a[1] for bs, be in b[1])


def count_matches(
    gold: Iterable[SpanKey], pred: Iterable[SpanKey], match: str = "exact"
) -> dict[str, list[int]]:
    """Match the spans of one document.

    Args:
        gold: the document's gold span keys (duplicates are counted once).
        pred: the document's predicted span keys (duplicates are counted once).
        match: ``"exact"`` or ``"overlap"`` (rules in the module docstring).

    Returns:
        ``{label: [tp, fp, fn]}`` for every label among the gold and predicted spans.
    """
    if match not in MATCH_MODES:
        raise ValueError(f"match must be one of {MATCH_MODES}, got {match!r}")
    gold_set, pred_set = set(gold), set(pred)
    counts: dict[str, list[int]] = {}
    for label in sorted({key[0] for key in gold_set | pred_set}):
        gold_spans = sorted(k for k in gold_set if k[0] == label)
        pred_spans = sorted(k for k in pred_set if k[0] == label)
        if match == "exact":
            tp = len(set(gold_spans) & set(pred_spans))
        else:
            tp = len(greedy_overlap_pairs(gold_spans, pred_spans))
        counts[label] = [tp, len(pred_spans) - tp, len(gold_spans) - tp]
    return counts


def greedy_overlap_pairs(gold: list[SpanKey], pred: list[SpanKey]) -> list[tuple[int, int]]:
    """One-to-one (gold index, prediction index) pairs, greedy by largest shared-character count."""
    candidates = []
    for g, gold_span in enumerate(gold):
        for p, pred_span in enumerate(pred):
            shared = shared_characters(gold_span, pred_span)
            if shared > 0:
                candidates.append((-shared, g, p))
    candidates.sort()
    used_gold: set[int] = set()
    used_pred: set[int] = set()
    pairs = []
    for _, g, p in candidates:
        if g not in used_gold and p not in used_pred:
            used_gold.add(g)
            used_pred.add(p)
            pairs.append((g, p))
    return pairs


def prf(tp: int, fp: int, fn: int) -> dict:
    """Precision, recall, F1 (0.0 where undefined) with the counts and the support (tp + fn)."""
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "support": tp + fn,
    }


def summarise(per_type_counts: Mapping[str, Iterable[int]]) -> dict:
    """Per-type, micro and macro scores from ``{label: (tp, fp, fn)}``.

    Micro sums the counts over types. Macro is the unweighted mean of the per-type precision, recall and F1
    over every type seen in the gold or the predictions (the seqeval / scikit-learn convention).
    """
    per_type = {label: prf(*counts) for label, counts in sorted(per_type_counts.items())}
    totals = [sum(col) for col in zip(*per_type_counts.values(), strict=True)] or [0, 0, 0]
    num_types = len(per_type)
    macro = {
        name: (sum(s[name] for s in per_type.values()) / num_types if num_types else 0.0)
        for name in ("precision", "recall", "f1")
    }
    macro["support"] = sum(s["support"] for s in per_type.values())
    return {"per_type": per_type, "micro": prf(*totals), "macro": macro}


def score_documents(
    gold: Mapping[str, Iterable[SpanKey]],
    pred: Mapping[str, Iterable[SpanKey]],
    match: str = "exact",
    unknown_documents: str = "count",
) -> dict:
    """Score predicted spans against gold spans, document by document.

    Args:
        gold: ``{doc_id: span keys}``; a document with no entities is an empty list.
        pred: ``{doc_id: span keys}``; documents missing here have no predictions (all their gold is FN).
        match: ``"exact"`` or ``"overlap"``.
        unknown_documents: what to do with predictions for documents absent from ``gold``: ``"count"`` them
            as false positives, or ``"ignore"`` them (the shared-task rule, where a gold file cannot list
            documents without entities).

    Returns:
        ``{"match", "per_type", "micro", "macro", "num_documents", "unknown_documents", "duplicates_removed",
        "per_document": {doc_id: {"tp", "fp", "fn"}}}``; ``unknown_documents`` holds the number of such
        documents, of their spans and the rule applied.
    """
    if match not in MATCH_MODES:
        raise ValueError(f"match must be one of {MATCH_MODES}, got {match!r}")
    if unknown_documents not in UNKNOWN_DOCUMENT_RULES:
        raise ValueError(
            f"unknown_documents must be one of {UNKNOWN_DOCUMENT_RULES}, got {unknown_documents!r}"
        )
    unknown = [doc_id for doc_id in pred if doc_id not in gold]
    scored = list(gold) + (unknown if unknown_documents == "count" else [])
    per_type: dict[str, list[int]] = {}
    per_document: dict[str, dict[str, int]] = {}
    duplicates = Counter()
    for doc_id in scored:
        gold_spans, pred_spans = list(gold.get(doc_id, ())), list(pred.get(doc_id, ()))
        duplicates["gold"] += len(gold_spans) - len(set(gold_spans))
        duplicates["pred"] += len(pred_spans) - len(set(pred_spans))
        doc_counts = [0, 0, 0]
        for label, counts in count_matches(gold_spans, pred_spans, match).items():
            type_counts = per_type.setdefault(label, [0, 0, 0])
            for i in range(3):
                type_counts[i] += counts[i]
                doc_counts[i] += counts[i]
        per_document[str(doc_id)] = dict(zip(("tp", "fp", "fn"), doc_counts, strict=True))
    return {
        "match": match,
        **summarise(per_type),
        "num_documents": len(scored),
        "unknown_documents": {
            "documents": len(unknown),
            "spans": sum(len(set(pred[doc_id])) for doc_id in unknown),
            "rule": unknown_documents,
        },
        "duplicates_removed": {"gold": duplicates["gold"], "pred": duplicates["pred"]},
        "per_document": per_document,
    }
