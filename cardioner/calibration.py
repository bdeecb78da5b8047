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

import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import torch

from cardioner.data.document import Document
from cardioner.data.encoding import EncodedCorpus, Encoder, window_word_labels
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


# -- temperature scaling -------------------------------------------------------------------------------------
#
# A model's confidences come from its word scores (softmax, sigmoids, the CRF's posteriors). Temperature
# scaling (Guo et al. 2017) divides those scores by one number T fitted on dev: T minimises the negative
# log-likelihood of the gold tags of the dev words (the CRF: of the gold paths, every CRF score divided by
# T). T > 1 softens over-confident scores, T < 1 sharpens under-confident ones; T never moves a decision
# (``modeling.CardioNERConfig.confidence_temperature``). The NLL is convex in 1/T (a log-sum-exp of scores
# linear in 1/T, minus a linear term), so a golden-section search over log T finds its minimum.

TEMPERATURE_RANGE = (0.05, 20.0)  # the search bounds of T; a fit at a bound is reported as such


@dataclass
class WindowScores:
    """What one forward pass over an annotated, encoded corpus keeps: per document and window, the words'
    decoded tag ids (words, channels), raw scores (words, channels, tags) and gold tag ids (words,
    channels)."""

    tags: list[list[list[list[int]]]]
    scores: list[list[torch.Tensor]]
    gold: list[list[torch.Tensor]]

    def select(self, documents: Sequence[int]) -> WindowScores:
        """The windows of some documents (by index), e.g. half of dev for a held-out check."""
        return WindowScores([self.tags[d] for d in documents], [self.scores[d] for d in documents],
                            [self.gold[d] for d in documents])


@dataclass
class TemperatureFit:
    """A fitted temperature and the dev NLL per word-channel (per word for a flat model) it gives."""

    temperature: float
    nll_before: float  # at T = 1
    nll_after: float  # at ``temperature``
    words: int  # the words (word-channels) the NLL is a mean over
    at_bound: bool  # the minimum lies at an end of TEMPERATURE_RANGE (scores far from calibrated)

    def as_dict(self) -> dict:
        return {"temperature": self.temperature, "nll_before": self.nll_before, "nll_after": self.nll_after,
                "words": self.words, "at_bound": self.at_bound}

    def record(self, data: str | None, documents: int) -> dict:
        """The fit as an export's metrics.json keeps it (``confidence_temperature``, written by training and
        by ``cardioner calibrate``): ``as_dict`` and what it was fitted on, the data by its name (never a
        path: ``hub.data_name``; None for documents given in memory) and its number of documents."""
        return {**self.as_dict(), "data": data, "documents": documents}


def window_scores(corpus: EncodedCorpus, tags: Sequence, scores: Sequence) -> WindowScores:
    """``WindowScores`` of an encoded corpus from a forward pass kept with its raw scores
    (``Predictor.predict_windows(..., keep_scores=True)``: ``tags``, ``scores``)."""
    gold = [[torch.tensor(window_word_labels(window), dtype=torch.long) for window in doc.windows]
            for doc in corpus.encoded]  # each (words, channels)
    return WindowScores(list(tags), list(scores), gold)


def _batches(windows: WindowScores, batch_size: int = 64) -> Iterator[tuple[torch.Tensor, ...]]:
    """(scores (batch, words, channels, tags), tags, gold (batch, words, channels), word_mask (batch, words))
    over every window with at least one word, padded to the batch's longest window."""
    rows = [(scores, tags, gold) for doc_scores, doc_tags, doc_gold in zip(windows.scores, windows.tags,
                                                                            windows.gold, strict=True)
            for scores, tags, gold in zip(doc_scores, doc_tags, doc_gold, strict=True) if len(scores)]
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        length = max(len(scores) for scores, _, _ in chunk)
        _, channels, num_tags = chunk[0][0].shape
        scores = torch.zeros(len(chunk), length, channels, num_tags)  # shape: (batch, words, C, tags)
        tags = torch.zeros(len(chunk), length, channels, dtype=torch.long)  # shape: (batch, words, C)
        gold = torch.zeros(len(chunk), length, channels, dtype=torch.long)  # shape: (batch, words, C)
        mask = torch.zeros(len(chunk), length, dtype=torch.bool)  # shape: (batch, words)
        for b, (window_scores_, window_tags, window_gold) in enumerate(chunk):
            n = len(window_scores_)
            scores[b, :n] = window_scores_
            tags[b, :n] = torch.as_tensor(window_tags, dtype=torch.long).view(n, channels)
            gold[b, :n] = window_gold.view(n, channels)
            mask[b, :n] = True
        yield scores, tags, gold, mask


@torch.no_grad()
def temperature_nll(decoder, windows: WindowScores, temperature: float) -> tuple[float, int]:
    """(summed NLL of the gold tags of every word, the number of word-channels: words for a flat model)
    with the scores divided by ``temperature`` (``decoder.word_nll``: softmax, sigmoids or the CRF)."""
    total, count = 0.0, 0
    for scores, _, gold, mask in _batches(windows):
        total += float(decoder.word_nll(scores, gold, mask, temperature))
        count += int(mask.sum()) * gold.shape[-1]  # word-channels (a flat model: words)
    return total, count


def fit_temperature(decoder, windows: WindowScores, bounds: tuple[float, float] = TEMPERATURE_RANGE,
                    tolerance: float = 1e-3) -> TemperatureFit:
    """The temperature that minimises the dev NLL of the gold tags (golden-section search over log T).

    Args:
        decoder: the model's decoder (``model.decoder``: softmax, sigmoid channels or CRF).
        windows: the dev corpus's ``WindowScores``.
        bounds: the range of T searched.
        tolerance: the search stops when the bracket of log T is narrower than this.

    Returns:
        TemperatureFit (NLLs per word).
    """
    if not any(len(scores) for doc in windows.scores for scores in doc):
        raise ValueError("no word to fit a temperature on")
    low, high = math.log(bounds[0]), math.log(bounds[1])
    values: dict[float, float] = {}

    def nll(log_t: float) -> float:
        if log_t not in values:
            values[log_t] = temperature_nll(decoder, windows, math.exp(log_t))[0]
        return values[log_t]

    ratio = (math.sqrt(5) - 1) / 2
    a, b = high - ratio * (high - low), low + ratio * (high - low)
    while high - low > tolerance:
        if nll(a) <= nll(b):
            high, b = b, a
            a = high - ratio * (high - low)
        else:
            low, a = a, b
            b = low + ratio * (high - low)
    best = min((low, a, b, high), key=nll)
    before, count = temperature_nll(decoder, windows, 1.0)
    temperature = math.exp(best)
    at_bound = min(abs(best - math.log(bounds[0])), abs(best - math.log(bounds[1]))) < 2 * tolerance
    return TemperatureFit(temperature, before / count, nll(best) / count, count, at_bound)


def fit_on_corpus(predictor, corpus: EncodedCorpus, desc: str = "calibrating") -> tuple[TemperatureFit,
                                                                                       WindowScores]:
    """One forward pass of ``predictor`` (a ``predictor.Predictor``) over the annotated ``corpus`` with the
    raw scores kept, and the temperature fitted on it (``fit_temperature``); every process must call it under
    a launcher (the pass is shared out and gathered)."""
    predictions = predictor.predict_windows(corpus.encoded, desc=desc, keep_scores=True)
    windows = window_scores(corpus, predictions.tags, predictions.scores)
    return fit_temperature(predictor.model.decoder, windows), windows


def window_confidences(decoder, tags: Sequence, scores: Sequence[torch.Tensor],
                       temperature: float) -> list[torch.Tensor]:
    """Each window's span-confidence pieces (words, channels, 3) at ``temperature``, from its kept tags and
    scores (``decoder.confidences``)."""
    pieces = []
    for window_tags, window_scores_ in zip(tags, scores, strict=True):
        n, channels = window_scores_.shape[0], window_scores_.shape[1]
        if not n:
            pieces.append(torch.zeros(0, channels, 3))
            continue
        tag_ids = torch.as_tensor(window_tags, dtype=torch.long).view(1, n, channels)  # (1, words, channels)
        mask = torch.ones(1, n, dtype=torch.bool)
        pieces.append(decoder.confidences(window_scores_[None].float(), tag_ids, mask, temperature)[0])
    return pieces


def scored_documents(decoder, encoder: Encoder, corpus: EncodedCorpus, windows: WindowScores,
                     temperature: float) -> list[Document]:
    """The corpus's predicted documents with span confidences computed at ``temperature`` from the kept
    scores (the tags, hence the spans, are the forward pass's: a temperature never moves them)."""
    documents = []
    for doc, enc, doc_tags, doc_scores in zip(corpus.documents, corpus.encoded, windows.tags, windows.scores,
                                              strict=True):
        pieces = window_confidences(decoder, doc_tags, doc_scores, temperature)
        spans = encoder.decode_document(enc, doc_tags, pieces, decoder.span_score)
        documents.append(Document(doc.id, doc.text, spans))
    return documents
