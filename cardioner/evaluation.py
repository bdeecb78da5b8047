"""Evaluation: span-level P/R/F1 (exact and overlap), seqeval on word tags, the MultiCardioNER scorer.

No model code. Every score is a plain dict that ``json.dumps`` writes as is. The layout of ``score_spans``
and ``seqeval_scores``::

    {
      "per_type": {label: {"precision", "recall", "f1", "tp", "fp", "fn", "support"}},
      "micro":    {"precision", "recall", "f1", "tp", "fp", "fn", "support"},
      "macro":    {"precision", "recall", "f1", "support"},   # unweighted mean over types
      ...         # extra keys per function, see their docstrings
    }

The matching rules (exact, overlap with greedy one-to-one matching, duplicates counted once, each entity
type scored on its own) live in ``cardioner/metrics/span_matching.py``, shared with the ``evaluate`` metric
module ``cardioner/metrics/span_f1.py`` (see ``metric_path()``).
"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
from seqeval.scheme import IOB2, Entities

from cardioner.data.document import CorpusError, Document, Span
from cardioner.metrics.span_matching import SpanKey, prf, score_documents, span_key

SpanLike = Span | Mapping
Corpus = Mapping[str, Iterable[SpanLike]] | Iterable[Document]

MULTICARDIONER_COLUMNS = ("filename", "label", "start_span", "end_span", "text")


def score_spans(gold: Corpus, pred: Corpus, match: str = "exact", unknown_documents: str = "count") -> dict:
    """Span-level precision, recall and F1 per type, micro and macro.

    ``exact``: same document, label, start and end (the MultiCardioNER rule; a discontinuous span must also
    have the same fragments). ``overlap``: same document and label, at least one shared character; matching
    is one-to-one, greedy by the largest number of shared characters (each gold span and each prediction is
    matched at most once). Spans of different types never interact, so overlapping multi-label spans are
    scored independently per type. Identical spans in one document are counted once (gold and predictions).

    Args:
        gold: ``{doc_id: [Span | {"start", "end", "label"}]}`` or a list of ``Document``. Every gold
            document is scored, including those without entities.
        pred: the predictions, in the same forms. A gold document missing here has no predictions.
        match: ``"exact"`` or ``"overlap"``.
        unknown_documents: predictions for documents absent from ``gold``: ``"count"`` (default) scores them
            as false positives — a prediction is either right or wrong, and a gold corpus given as documents
            lists its entity-free documents; ``"ignore"`` leaves them out, as the MultiCardioNER scorer does
            (its TSV gold cannot list documents without entities).
            Either way, how many there were is reported.

    Returns:
        The layout in the module docstring plus ``"match"``, ``"num_documents"`` (scored),
        ``"unknown_documents": {"documents", "spans", "rule"}``, ``"duplicates_removed": {"gold", "pred"}``
        and ``"per_document": {doc_id: {"tp", "fp", "fn"}}`` (micro counts, the input of ``bootstrap_ci``).
    """
    return score_documents(_as_keys(gold, "gold"), _as_keys(pred, "pred"), match, unknown_documents)


def _as_keys(corpus: Corpus, side: str) -> dict[str, list[SpanKey]]:
    """``{doc_id: [span key]}`` from a mapping of spans or a list of Documents; validates every span."""
    if isinstance(corpus, Mapping):
        items = list(corpus.items())
    else:
        items = []
        for doc in corpus:
            if not isinstance(doc, Document):
                raise TypeError(
                    f"{side}: expected a dict {{doc_id: spans}} or Documents, got {type(doc).__name__}:"
                    f" {doc!r:.80}"
                )
            items.append((doc.id, doc.spans))
    keys: dict[str, list[SpanKey]] = {}
    for doc_id, spans in items:
        if doc_id in keys:
            raise ValueError(f"{side}: document id {doc_id!r} appears twice")
        keys[doc_id] = [_span_to_key(span, side, doc_id) for span in spans]
    return keys


def _span_to_key(span: SpanLike, side: str, doc_id: str) -> SpanKey:
    if isinstance(span, Span):
        key = span_key(span.label, span.start, span.end, span.fragments)
    elif isinstance(span, Mapping) and {"start", "end", "label"} <= span.keys():
        key = span_key(span["label"], span["start"], span["end"], span.get("fragments", ()))
    else:
        raise TypeError(
            f"{side} document {doc_id!r}: expected a Span or a dict with start/end/label, got {span!r}"
        )
    for start, end in key[1]:
        if start < 0 or end < start:
            raise ValueError(f"{side} document {doc_id!r}: bad offsets {start}-{end} in span {span!r}")
    return key


def seqeval_scores(gold_tags: Sequence[Sequence[str]], pred_tags: Sequence[Sequence[str]]) -> dict:
    """seqeval's strict IOB2 view on word tags: entities are seqeval's, matched exactly per type.

    Same numbers as ``seqeval.metrics.classification_report(mode="strict", scheme=IOB2)`` (tested), in the
    layout of ``score_spans`` so that ``format_table`` and ``plots.plot_per_type`` take both.

    Args:
        gold_tags: one list of IOB2 tags per sentence (or document).
        pred_tags: the predicted tags, same shape as ``gold_tags``.

    Returns:
        The layout in the module docstring plus ``"scheme":
        "IOB2"``, ``"mode": "strict"``, ``"num_sequences"``.
    """
    if len(gold_tags) != len(pred_tags):
        raise ValueError(f"gold has {len(gold_tags)} sequences, predictions {len(pred_tags)}")
    for i, (gold_seq, pred_seq) in enumerate(zip(gold_tags, pred_tags, strict=True)):
        if len(gold_seq) != len(pred_seq):
            raise ValueError(
                f"sequence {i}: {len(gold_seq)} gold tags but {len(pred_tags[i])} predicted tags"
            )
    keys = {}
    for side, tags in (("gold", gold_tags), ("pred", pred_tags)):
        entities = Entities([list(seq) for seq in tags], scheme=IOB2).entities
        keys[side] = {
            str(i): [span_key(e.tag, e.start, e.end) for e in sent] for i, sent in enumerate(entities)
        }
    scores = score_documents(keys["gold"], keys["pred"], match="exact")
    return {
        "scheme": "IOB2",
        "mode": "strict",
        "per_type": scores["per_type"],
        "micro": scores["micro"],
        "macro": scores["macro"],
        "num_sequences": len(gold_tags),
    }


def corpus_scores(gold: Sequence[Document], predicted: Sequence[Document],
                  gold_tags: Sequence[Sequence[str]] | None = None,
                  predicted_tags: Sequence[Sequence[str]] | None = None) -> dict:
    """What an evaluation reports of predicted documents: exact-match span scores, with the overlap-match
    scores under "overlap" and, given IOB2 word tag sequences, seqeval's view under "seqeval".

    Args:
        gold, predicted: the gold and the predicted documents.
        gold_tags, predicted_tags: one IOB2 tag sequence per document and channel, or None (no seqeval view).

    Returns:
        ``score_spans`` (exact) without its per-document counts, plus "overlap" and "seqeval".
    """
    scores = score_spans(gold, predicted, match="exact")
    scores["overlap"] = score_spans(gold, predicted, match="overlap")
    scores.pop("per_document", None)
    scores["overlap"].pop("per_document", None)
    if gold_tags:
        scores["seqeval"] = seqeval_scores(gold_tags, predicted_tags)
    return scores


SELECTION_METRICS = ("f1", "precision", "recall", "overlap_f1", "macro_f1")  # training.metric


def selection_score(scores: dict, metric: str) -> float:
    """The number ``training.metric`` reads from a ``corpus_scores`` dict (model selection, early stopping,
    tuning): micro f1 / precision / recall (exact match), micro F1 of overlap matching, or macro F1."""
    if metric == "macro_f1":
        return scores["macro"]["f1"]
    if metric == "overlap_f1":
        return scores.get("overlap", {}).get("micro", {}).get("f1", scores["micro"]["f1"])
    return scores["micro"][metric]


def multicardioner_score(
    gold_tsv: str | Path, pred_tsv: str | Path, mapping: str | Path | Mapping[str, str] | None = None
) -> dict:
    """The official MultiCardioNER scorer's rules, reproduced (micro P/R/F over the gold documents).

    Rules (from the official library): prediction file names go through ``mapping`` (rows whose name is not
    mapped are dropped); predictions are de-duplicated on (filename, label, start_span, end_span), keeping the
    first row; a prediction is a true positive when its (filename, start, end, text, label) equal a gold row's
    — compared as a set of the five values, as the official scorer does — each gold row matched once; only
    documents present in the gold file are scored (predictions for other documents are ignored, not FP).
    Values are rounded to 4 decimals, and the F-score is the integer 0 when precision or recall is 0.

    Args:
        gold_tsv: gold TSV (TAB-separated, header ``filename label start_span end_span text``).
        pred_tsv: prediction TSV, same columns.
        mapping: masked name -> real name: a dict, or the official 2-column mapping TSV (second column ->
            first column). None: names are used as they are.

    Returns:
        ``{"precision", "recall", "f_score", "tp", "fp", "fn", "per_document": {filename: {"precision",
        "recall", "f_score"}}, "ignored_predictions", "duplicates_removed", "unmapped_predictions"}``.
    """
    gold_rows = _read_multicardioner_tsv(gold_tsv)
    pred_rows = _read_multicardioner_tsv(pred_tsv)
    if mapping is not None:
        names = mapping if isinstance(mapping, Mapping) else _read_mapping(mapping)
        mapped = [{**row, "filename": names.get(row["filename"])} for row in pred_rows]
        unmapped = sum(row["filename"] is None for row in mapped)
        pred_rows = [row for row in mapped if row["filename"] is not None]
    else:
        unmapped = 0
    seen: set[tuple] = set()
    unique_preds = []
    for row in pred_rows:
        dedupe_key = (row["filename"], row["label"], row["start_span"], row["end_span"])
        if dedupe_key not in seen:
            seen.add(dedupe_key)
            unique_preds.append(row)

    def as_set(row: dict) -> frozenset:
        return frozenset(row[c] for c in ("filename", "start_span", "end_span", "text", "label"))

    gold_by_doc: dict[str, Counter] = {}
    for row in gold_rows:
        gold_by_doc.setdefault(row["filename"], Counter())[as_set(row)] += 1
    pred_by_doc: dict[str, Counter] = {}
    for row in unique_preds:
        pred_by_doc.setdefault(row["filename"], Counter())[as_set(row)] += 1

    totals = [0, 0, 0]
    per_document = {}
    for filename in sorted(gold_by_doc):
        gold, pred = gold_by_doc[filename], pred_by_doc.get(filename, Counter())
        tp = sum(
            (gold & pred).values()
        )  # set-equality is an equivalence, so greedy matching = multiset overlap
        counts = (tp, sum(pred.values()) - tp, sum(gold.values()) - tp)
        per_document[filename] = _official_prf(*counts)
        totals = [t + c for t, c in zip(totals, counts, strict=True)]
    return {
        **_official_prf(*totals),
        "tp": totals[0],
        "fp": totals[1],
        "fn": totals[2],
        "per_document": per_document,
        "ignored_predictions": sum(
            sum(c.values()) for name, c in pred_by_doc.items() if name not in gold_by_doc
        ),
        "duplicates_removed": len(pred_rows) - len(unique_preds),
        "unmapped_predictions": unmapped,
    }


def _official_prf(tp: int, fp: int, fn: int) -> dict:
    """P/R/F as the official scorer prints them: rounded to 4 decimals, F the integer 0 if P or R is 0."""
    scores = prf(tp, fp, fn)
    precision, recall = scores["precision"], scores["recall"]
    f_score = 0 if precision == 0 or recall == 0 else round(scores["f1"], 4)
    return {"precision": round(precision, 4), "recall": round(recall, 4), "f_score": f_score}


def _read_multicardioner_tsv(path: str | Path) -> list[dict]:
    """Rows of a MultiCardioNER TSV (header required, columns by name; offsets as int, text as str)."""
    path = Path(path)
    if not path.is_file():
        raise CorpusError("no such TSV file", path)
    # -sig: a BOM is no part of the header (pandas agrees)
    with path.open(encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f, delimiter="\t")
        header = next(reader, None)
        if header is None:
            raise CorpusError("empty file (a header line is required)", path)
        missing = [c for c in MULTICARDIONER_COLUMNS if c not in header]
        if missing:
            raise CorpusError(f"missing column(s) {missing} in header {header}", path, 1)
        index = {c: header.index(c) for c in MULTICARDIONER_COLUMNS}
        rows = []
        for line_no, fields in enumerate(reader, start=2):
            if not fields:
                continue
            if len(fields) != len(header):
                raise CorpusError(
                    f"expected {len(header)} TAB-separated fields, got {len(fields)}: {fields}", path, line_no
                )
            row = {c: fields[i] for c, i in index.items()}
            try:
                row["start_span"], row["end_span"] = int(row["start_span"]), int(row["end_span"])
            except ValueError:
                raise CorpusError(
                    f"offsets must be integers, got {row['start_span']!r} {row['end_span']!r}", path, line_no
                ) from None
            rows.append(row)
    return rows


def _read_mapping(path: str | Path) -> dict[str, str]:
    """The official mapping TSV: ``real_name<TAB>masked_name`` per line -> {masked: real}."""
    with Path(path).open(encoding="utf-8", newline="") as f:
        return {fields[1]: fields[0] for fields in csv.reader(f, delimiter="\t") if len(fields) >= 2}


def bootstrap_ci(
    per_doc_counts: Mapping[str, Mapping[str, int] | Sequence[int]]
    | Sequence[Mapping[str, int] | Sequence[int]],
    n: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict:
    """Percentile bootstrap confidence intervals of micro precision, recall and F1, resampling documents.

    Args:
        per_doc_counts: per-document ``{"tp", "fp", "fn"}`` (``score_spans(...)["per_document"]``) or
            ``(tp, fp, fn)`` tuples, as a dict by document id or a list.
        n: number of bootstrap resamples (each draws as many documents as there are, with replacement).
        seed: seed of the resampling; the same seed gives the same interval.
        confidence: the interval's coverage, e.g. 0.95.

    Returns:
        ``{"precision" | "recall" | "f1": {"value", "low", "high"}, "confidence", "n", "seed",
        "num_documents"}``; ``value`` is the score on all documents.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    rows = list(per_doc_counts.values()) if isinstance(per_doc_counts, Mapping) else list(per_doc_counts)
    if not rows:
        raise ValueError("per_doc_counts is empty: no documents to resample")
    counts = np.array(
        [[r["tp"], r["fp"], r["fn"]] if isinstance(r, Mapping) else list(r) for r in rows], dtype=np.int64
    )
    if counts.ndim != 2 or counts.shape[1] != 3:
        raise ValueError(f"each document needs (tp, fp, fn), got {rows[0]!r}")
    num_docs = len(counts)
    rng = np.random.default_rng(seed)
    resampled = []
    for chunk_start in range(0, n, 100):  # chunks keep the (resamples, documents) weight matrix small
        size = min(100, n - chunk_start)
        weights = rng.multinomial(
            num_docs, np.full(num_docs, 1.0 / num_docs), size=size
        )  # shape: (size, docs)
        resampled.append(weights @ counts)  # shape: (size, 3)
    totals = np.concatenate(resampled)  # shape: (n, 3)
    tp, fp, fn = (totals[:, i].astype(float) for i in range(3))
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(tp + fp > 0, tp / (tp + fp), 0.0)
        recall = np.where(tp + fn > 0, tp / (tp + fn), 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    point = prf(*(int(x) for x in counts.sum(axis=0)))
    tail = (1 - confidence) / 2
    result = {}
    for name, values in (("precision", precision), ("recall", recall), ("f1", f1)):
        low, high = np.quantile(values, [tail, 1 - tail])
        result[name] = {"value": point[name], "low": float(low), "high": float(high)}
    return {**result, "confidence": confidence, "n": n, "seed": seed, "num_documents": num_docs}


def format_table(scores: dict, digits: int = 4) -> str:
    """A Markdown table (also readable as plain text) of per-type, micro and macro scores."""
    header = ["type", "precision", "recall", "F1", "TP", "FP", "FN", "support"]
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|",
    ]
    rows = [*scores["per_type"].items(), ("micro", scores["micro"]), ("macro", scores["macro"])]
    for name, s in rows:
        cells = [name] + [f"{s[k]:.{digits}f}" for k in ("precision", "recall", "f1")]
        cells += [str(s[k]) if k in s else "" for k in ("tp", "fp", "fn", "support")]
        if name == "micro":
            cells[0] = "**micro**"
        elif name == "macro":
            cells[0] = "**macro**"
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def metric_path() -> str:
    """Path of the `evaluate` metric module: ``evaluate.load(metric_path())`` works offline."""
    return str(Path(__file__).resolve().parent / "metrics" / "span_f1.py")
