"""Which span score means what it says, and what a temperature fitted on dev does to it; prints JSON.

For one export and its annotated dev corpus, one forward pass keeps every window's word scores and tags
(cached in ``--cache``: the forward is the cost; everything after it reads the cache). Then:

- span score definitions, each from the same span-confidence pieces of a span's words (SPAN_OPEN of its first
  word, SPAN_CONTINUE of the others, SPAN_CLOSE of its last: ``modeling.span_confidence``): ``product`` (the
  probability of exactly this entity under the model's factorisation: what cardioner ships; for a CRF the
  posterior of the span, for softmax heads also the per-span marginal, the words being independent),
  ``geometric_mean`` and ``min`` of those pieces, and ``word_mean`` (the mean of the words' own tag
  probabilities, the stock pipeline's kind of score; softmax and sigmoid heads only: a CRF's SPAN_CONTINUE is
  a conditional);
- ECE / MCE / Brier of each, at T = 1 and at the temperature fitted on the whole of dev
  (``calibration.fit_temperature``: NLL of the gold word tags) — optimistic: fitted and measured on the same
  documents;
- a held-out check: T fitted on the even-numbered dev documents and measured on the odd ones, and the other
  way round; with ``--test``, T fitted on the whole of dev and measured on the test corpus (a second forward
  pass, cached in ``--test-cache``).

    python benchmarks/calibration.py --model EXPORT --data DEV [--test TEST] [--cache scores.pt]
        [--test-cache test-scores.pt] [--output result.json]
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

from cardioner.calibration import (
    WindowScores,
    calibration,
    fit_temperature,
    span_outcomes,
    window_confidences,
    window_scores,
)
from cardioner.data.document import Document, Span
from cardioner.data.encoding import EncodedCorpus
from cardioner.data.io import read_corpus
from cardioner.inference import load_predictor
from cardioner.modeling import SPAN_CLOSE, SPAN_CONTINUE, SPAN_OPEN, tags_to_entities
from cardioner.plots import plot_reliability

DEFINITIONS = ("product", "geometric_mean", "min", "word_mean")


def span_pieces(rows: list, first: int, last: int) -> list[float]:
    """The log-probability pieces whose sum is the span's ``product`` score."""
    return [rows[first][SPAN_OPEN], *(rows[k][SPAN_CONTINUE] for k in range(first + 1, last + 1)),
            rows[last][SPAN_CLOSE]]


def definition_score(definition: str, rows: list, first: int, last: int) -> float:
    pieces = span_pieces(rows, first, last)
    if definition == "product":
        return min(1.0, math.exp(sum(pieces)))
    if definition == "geometric_mean":
        return min(1.0, math.exp(sum(pieces) / len(pieces)))
    if definition == "min":
        return min(1.0, math.exp(min(pieces)))
    words = [rows[k][SPAN_CONTINUE] for k in range(first, last + 1)]  # softmax: each word's own probability
    return min(1.0, sum(math.exp(p) for p in words) / len(words))


def documents_by_definition(predictor, corpus, windows: WindowScores, temperature: float) -> dict:
    """{definition: predicted documents whose span scores follow it}, confidences at ``temperature``."""
    decoder, encoder = predictor.model.decoder, predictor.encoder
    result = {name: [] for name in DEFINITIONS}
    for doc, enc, doc_tags, doc_scores in zip(corpus.documents, corpus.encoded, windows.tags, windows.scores,
                                              strict=True):
        pieces = window_confidences(decoder, doc_tags, doc_scores, temperature)
        merged = encoder.merge_predictions(enc, doc_tags)
        merged_pieces = encoder.merge_scores(enc, pieces)
        spans = {name: [] for name in DEFINITIONS}
        for c, channel in enumerate(encoder.labels.channels):
            tags = [channel.typed_tag(row[c]) for row in merged]
            rows = [torch.as_tensor(piece[c]).tolist() for piece in merged_pieces]
            for first, last, label in tags_to_entities(tags):
                scores = {name: definition_score(name, rows, first, last) for name in DEFINITIONS}
                offsets = enc.word_offsets
                while first <= last and offsets[first][0] >= offsets[first][1]:
                    first += 1  # blank words never start or end a span (encoding.word_tags_to_spans)
                while last >= first and offsets[last][0] >= offsets[last][1]:
                    last -= 1
                if first <= last:
                    for name in DEFINITIONS:
                        span = Span(offsets[first][0], offsets[last][1], label, score=scores[name])
                        spans[name].append(span)
        for name in DEFINITIONS:
            result[name].append(Document(doc.id, doc.text, spans[name]))
    return result


def summary(figures: dict) -> dict:
    keys = ("ece", "mce", "brier", "spans", "accuracy", "mean_confidence")
    return {key: round(figures[key], 4) if isinstance(figures[key], float) else figures[key] for key in keys}


def measure(predictor, corpus, windows: WindowScores, temperature: float) -> dict:
    by_definition = documents_by_definition(predictor, corpus, windows, temperature)
    return {name: summary(calibration(span_outcomes(corpus.documents, docs)))
            for name, docs in by_definition.items()}


def subset(corpus, indices: list[int]):
    """The corpus restricted to some documents (same encoding)."""
    return EncodedCorpus(f"{corpus.name}[{len(indices)}]", [corpus.documents[i] for i in indices],
                         [corpus.encoded[i] for i in indices], corpus.report)


def kept_scores(predictor, corpus, cache: str | None) -> WindowScores:
    """The corpus's window tags and raw word scores: read from ``cache`` when it exists, else one forward pass
    (saved there)."""
    if cache and Path(cache).is_file():
        kept = torch.load(cache)
    else:
        predictions = predictor.predict_windows(corpus.encoded, keep_scores=True)
        kept = {"tags": predictions.tags, "scores": predictions.scores}
        if cache:
            torch.save(kept, cache)
    return window_scores(corpus, kept["tags"], kept["scores"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="an export folder")
    parser.add_argument("--data", required=True, help="its annotated dev corpus")
    parser.add_argument("--cache", help="where the forward pass's word scores are kept (read if present)")
    parser.add_argument("--test", help="a held-out test corpus: T fitted on dev, measured here")
    parser.add_argument("--test-cache", help="where the test pass's word scores are kept (read if present)")
    parser.add_argument("--plot", help="also draw the reliability diagram of the model's own span score "
                                       "at T = 1 here (PNG; `cardioner evaluate --reliability` on the "
                                       "calibrated export draws the one after)")
    parser.add_argument("--output", help="also write the JSON here")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    started = time.perf_counter()
    predictor = load_predictor(args.model)
    predictor.model.config.confidence_temperature = 1.0  # measured from the model's own scores first
    docs, _ = read_corpus(args.data, span_errors="skip")
    corpus = predictor.encoder.encode_corpus(docs, "dev")
    windows = kept_scores(predictor, corpus, args.cache)
    decoder = predictor.model.decoder
    fit = fit_temperature(decoder, windows)
    result = {"model": args.model, "data": args.data, "documents": len(docs),
              "decoder": type(decoder).__name__, "span_score": decoder.span_score,
              "fit_on_all_of_dev": fit.as_dict(),
              "before": measure(predictor, corpus, windows, 1.0),
              "after": measure(predictor, corpus, windows, fit.temperature)}
    if args.plot:
        own = documents_by_definition(predictor, corpus, windows, 1.0)[decoder.span_score]
        plot_reliability(calibration(span_outcomes(corpus.documents, own)), args.plot,
                         title=f"{Path(args.model).name} on {Path(args.data).name}: before calibration")
    halves = {"even": list(range(0, len(docs), 2)), "odd": list(range(1, len(docs), 2))}
    held_out = {}
    for fit_half, test_half in (("even", "odd"), ("odd", "even")):
        half_fit = fit_temperature(decoder, windows.select(halves[fit_half]))
        test_corpus, test_windows = subset(corpus, halves[test_half]), windows.select(halves[test_half])
        held_out[f"fit_{fit_half}_measure_{test_half}"] = {
            "temperature": round(half_fit.temperature, 4),
            "before": measure(predictor, test_corpus, test_windows, 1.0),
            "after": measure(predictor, test_corpus, test_windows, half_fit.temperature),
        }
    result["held_out"] = held_out
    if args.test:
        test_docs, _ = read_corpus(args.test, span_errors="skip")
        test_corpus = predictor.encoder.encode_corpus(test_docs, "test")
        test_windows = kept_scores(predictor, test_corpus, args.test_cache)
        result["test"] = {"data": args.test, "documents": len(test_docs), "temperature": fit.temperature,
                          "before": measure(predictor, test_corpus, test_windows, 1.0),
                          "after": measure(predictor, test_corpus, test_windows, fit.temperature)}
    result["seconds"] = round(time.perf_counter() - started, 1)
    text = json.dumps(result, indent=2)
    print(text)
    if args.output:
        Path(args.output).write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
