"""Calibration of span confidences: does a span scored 0.8 turn out right eight times in ten?

Each predicted span with a ``score`` is an outcome: right when it matches a gold span exactly (same document,
label, start and end: the MultiCardioNER rule ``evaluation.score_spans`` uses), wrong otherwise. From the
outcomes, ``calibration`` computes

- the expected calibration error (ECE; Naeini et al. 2015, Guo et al. 2017): spans binned by confidence in
  ``num_bins`` equal-width bins over [0, 1], ECE = sum over bins of (spans in bin / all spans) * |accuracy -
  mean confidence|: 0 for perfect calibration, the average gap otherwise;
- the maximum calibration error (the worst bin's gap) and the Brier score (mean squared error of the scores
  against the outcomes);
- the table behind a reliability diagram (``plots.plot_reliability``): per bin, its range, span count, mean
  confidence and accuracy.

Spans of recall (gold spans the model missed) have no confidence and are not outcomes: calibration says what a
predicted span's score means, F1 says how many spans there are to predict.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from cardioner.data.document import Document
from cardioner.metrics.span_matching import span_key

DEFAULT_BINS = 10


def span_outcomes(gold: Iterable[Document], predicted: Iterable[Document]) -> list[tuple[float, bool]]:
    """(confidence, correct) of every predicted span that carries a score.

    Args:
        gold: the annotated documents.
        predicted: the predicted documents (by id; a document missing from ``gold`` has only wrong spans).
    """
    gold_keys = {doc.id: {span_key(s.label, s.start, s.end, s.fragments) for s in doc.spans} for doc in gold}
    outcomes = []
    for doc in predicted:
        keys = gold_keys.get(doc.id, set())
        for span in doc.spans:
            if span.score is not None:
                outcomes.append((float(span.score), span_key(span.label, span.start, span.end, span.fragments)
                                 in keys))
    return outcomes


def calibration(outcomes: Sequence[tuple[float, bool]], num_bins: int = DEFAULT_BINS) -> dict:
    """ECE, MCE, Brier score and the reliability table of ``outcomes`` (see the module docstring).

    Args:
        outcomes: (confidence in [0, 1], correct) per predicted span (``span_outcomes``).
        num_bins: equal-width confidence bins over [0, 1]; a confidence of exactly 1 falls in the last.

    Returns:
        {"ece", "mce", "brier", "spans", "accuracy", "mean_confidence", "num_bins", "bins": [{"low", "high",
        "spans", "confidence", "accuracy"}]}; the error figures are None when there is no outcome, a bin's
        confidence and accuracy None when it is empty.
    """
    if num_bins < 1:
        raise ValueError(f"num_bins must be >= 1, got {num_bins}")
    for confidence, _ in outcomes:
        if not 0.0 <= confidence <= 1.0:
            raise ValueError(f"a span confidence must lie in [0, 1], got {confidence}")
    members: list[list[tuple[float, bool]]] = [[] for _ in range(num_bins)]
    for confidence, correct in outcomes:
        members[min(int(confidence * num_bins), num_bins - 1)].append((confidence, correct))
    total = len(outcomes)
    bins, ece, mce = [], 0.0, 0.0
    for index, items in enumerate(members):
        row = {"low": index / num_bins, "high": (index + 1) / num_bins, "spans": len(items),
               "confidence": None, "accuracy": None}
        if items:
            row["confidence"] = sum(c for c, _ in items) / len(items)
            row["accuracy"] = sum(ok for _, ok in items) / len(items)
            gap = abs(row["accuracy"] - row["confidence"])
            ece += len(items) / total * gap
            mce = max(mce, gap)
        bins.append(row)
    if not total:
        return {"ece": None, "mce": None, "brier": None, "spans": 0, "accuracy": None,
                "mean_confidence": None, "num_bins": num_bins, "bins": bins}
    return {
        "ece": ece,
        "mce": mce,
        "brier": sum((c - ok) ** 2 for c, ok in outcomes) / total,
        "spans": total,
        "accuracy": sum(ok for _, ok in outcomes) / total,
        "mean_confidence": sum(c for c, _ in outcomes) / total,
        "num_bins": num_bins,
        "bins": bins,
    }
