"""Span-level precision, recall and F1 for named-entity recognition, as an `evaluate` metric module.

Load it offline from its path (it does not need cardioner installed; ``span_matching.py`` beside it is
copied along by `evaluate`)::

    import evaluate
    from cardioner.evaluation import metric_path
    span_f1 = evaluate.load(metric_path())          # or the path of this file
    span_f1.compute(predictions=[[{"start": 0, "end": 4, "label": "DISO"}]],
                    references=[[{"start": 0, "end": 4, "label": "DISO"}]], match="overlap")

The matching rules are those of ``cardioner.evaluation.score_spans`` (one implementation, in
``span_matching.py``).
"""

import datasets
import evaluate

from .span_matching import score_documents, span_key

_DESCRIPTION = """
Span-level NER scores per entity type, micro and macro. Each example is one document: a list of spans
{"start", "end", "label"} with character offsets (0-based, end-exclusive). `match="exact"` (default) needs the
same label, start and end (the MultiCardioNER rule); `match="overlap"` needs the same label and at least one
shared character, matched one-to-one greedily by the largest overlap. Each entity type is scored on its own,
so overlapping spans of different types are fine. Identical spans in a document are counted once.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: one list of span dicts {"start": int, "end": int, "label": str} per document.
    references: the gold spans, same shape and document order as `predictions`.
    match: "exact" (default) or "overlap".
Returns:
    {"match", "per_type": {label: {"precision", "recall", "f1", "tp", "fp", "fn", "support"}},
     "micro": {... same keys ...}, "macro": {"precision", "recall", "f1", "support"},
     "num_documents", "unknown_documents", "duplicates_removed", "per_document"}
"""

_CITATION = """
@software{cardioner,
  title = {cardioner: named-entity recognisers on any Hugging Face encoder},
}
"""

_SPANS = [
    {"start": datasets.Value("int64"), "end": datasets.Value("int64"), "label": datasets.Value("string")}
]


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class SpanF1(evaluate.Metric):
    """Span-level P/R/F1 (exact or overlap match) per type, micro and macro."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": _SPANS, "references": _SPANS}),
        )

    def _compute(self, predictions: list, references: list, match: str = "exact") -> dict:
        def as_keys(documents: list) -> dict:
            return {
                str(i): [span_key(s["label"], s["start"], s["end"]) for s in spans]
                for i, spans in enumerate(documents)
            }

        return score_documents(as_keys(references), as_keys(predictions), match=match)
