"""Decision thresholds of the multi-label sigmoid model: tuned per entity type on dev, averaged across folds.

The model decides each word and type by ``O`` unless the most probable entity tag of the type reaches the
type's threshold (``MultiLabelTokenClassificationModel``); with constrained decoding (the default) each type's
words are decoded jointly, O scoring the threshold's logit, by the model's own ``scheme_viterbi`` (here over
each whole document; ``predict`` decodes windows and keeps each word's most central one, which can differ at
seams). The types never interact — in decoding, in spans and in scoring — so each type's threshold is chosen
on its own: the one in ``grid`` that maximises the type's span F1 (exact match) on the dev documents, ties
going to the one nearest 0.5. 0.5 is always a candidate, so no type scores lower on dev than with 0.5. The
model runs once; each candidate only re-decodes its scores.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import torch

from cardioner.config import ConfigError, ModelConfig
from cardioner.data.document import Document
from cardioner.data.encoding import EncodedCorpus
from cardioner.evaluation import score_spans
from cardioner.labels import LabelSet
from cardioner.modeling import scheme_viterbi
from cardioner.predictor import Predictor

logger = logging.getLogger("cardioner")

DEFAULT_GRID = tuple(round(0.05 * step, 2) for step in range(1, 20))  # 0.05, 0.10, ..., 0.95 (0.5 included)


def uses_thresholds(model_config) -> bool:
    """Whether a model decides by thresholds: the multi-label sigmoid model (channels, no CRF)."""
    return getattr(model_config, "channel_types", None) is not None and not model_config.use_crf


def initial_thresholds(settings: ModelConfig, labels: LabelSet) -> list[float] | None:
    """Each channel's threshold before any tuning: ``model.type_thresholds`` for its type, else
    ``model.threshold``; None for a model that decides without thresholds (flat, or a CRF per channel)."""
    if labels.channel_types is None or settings.use_crf:
        return None
    given = dict(settings.type_thresholds or {})
    unknown = sorted(set(given) - set(labels.types))
    if unknown:
        raise ConfigError(f"model.type_thresholds names types the training data does not have: {unknown}; "
                          f"the types are {list(labels.types)}")
    return [given.get(channel.types[0], settings.threshold) for channel in labels.channels]


def select_thresholds(predictor: Predictor, settings: ModelConfig, dev: EncodedCorpus | None) -> dict | None:
    """Tune a multi-label sigmoid model's per-type thresholds on the dev corpus (``model.threshold_selection``
    "dev") and store them in its config, where prediction, evaluation and the exported model read them.

    Returns:
        {type: {"threshold", "f1", "f1_at_0.5"}} (dev span F1), or None when nothing was tuned.
    """
    model = predictor.model
    if dev is None or settings.threshold_selection != "dev" or not uses_thresholds(model.config):
        return None
    thresholds, report = tune_thresholds(predictor, dev)
    model.config.thresholds = thresholds
    logger.info("thresholds tuned on dev: %s", ", ".join(f"{t} {r['threshold']} (F1 {r['f1_at_0.5']:.4f} -> "
                                                         f"{r['f1']:.4f})" for t, r in report.items()))
    return report


def tune_thresholds(predictor: Predictor, corpus: EncodedCorpus,
                    grid: Sequence[float] = DEFAULT_GRID) -> tuple[list[float], dict]:
    """Each type's threshold maximising its span F1 on ``corpus`` (the dev set; never the test set).

    Args:
        predictor: the Predictor of a MultiLabelTokenClassificationModel (sigmoid channels).
        corpus: the annotated documents to tune on, encoded by the predictor's encoder.
        grid: candidate thresholds in (0, 1); 0.5 is added when missing.

    Returns:
        (thresholds in channel order, {type: {"threshold", "f1", "f1_at_0.5"}}).
    """
    model = predictor.model
    if not uses_thresholds(model.config):
        raise ValueError(
            f"thresholds are tuned for the multi-label sigmoid model, not {type(model).__name__}"
        )
    candidates = sorted(set(grid) | {0.5}, key=lambda t: (abs(t - 0.5), t))  # nearest 0.5 first wins ties
    if not all(0.0 < t < 1.0 for t in candidates):
        raise ValueError(f"thresholds must lie in (0, 1), got {sorted(candidates)}")
    predictions = predictor.predict_windows(
        corpus.encoded, desc=f"thresholds on {corpus.name}", keep_scores=True
    )
    constraints = model.decoding_constraints
    encoder = predictor.encoder
    # One (num_words, channels, tags) tensor per document: every word from its most central window.
    merged = [torch.tensor(encoder.merge_scores(enc, [s.tolist() for s in doc_scores]))
              for enc, doc_scores in zip(corpus.encoded, predictions.scores, strict=True)]
    thresholds, report = [], {}
    for channel, entity_type in enumerate(model.config.channel_types):
        gold = [
            Document(d.id, d.text, [s for s in d.spans if s.label == entity_type]) for d in corpus.documents
        ]
        f1_by_threshold = {}
        for threshold in candidates:
            predicted = []
            for doc, enc, words in zip(corpus.documents, corpus.encoded, merged, strict=True):
                tag_ids = decide(words[:, channel] if len(words) else words, threshold, constraints)
                spans = encoder.channel_spans(enc.word_offsets, tag_ids, channel)
                predicted.append(Document(doc.id, doc.text, spans))
            f1_by_threshold[threshold] = score_spans(gold, predicted)["micro"]["f1"]
        best = max(candidates, key=lambda t: f1_by_threshold[t])  # first maximum: the one nearest 0.5
        thresholds.append(best)
        report[entity_type] = {
            "threshold": best,
            "f1": f1_by_threshold[best],
            "f1_at_0.5": f1_by_threshold[0.5],
        }
    return thresholds, report


def decide(scores: torch.Tensor, threshold: float, constraints=None) -> list[int]:
    """The sigmoid model's rule on one channel: tag ids from scores (words, tags) whose column 0 is O's.

    Without ``constraints``: O unless the best entity tag's logit reaches ``logit(threshold)``; then that tag.
    With the channel's tag-scheme constraints (``model.decoding_constraints``): the valid path with the
    highest sum of scores, O scoring ``logit(threshold)`` — what the model does with ``constrained_decoding``.
    """
    if scores.numel() == 0:
        return []
    outside = math.log(threshold / (1 - threshold))
    if constraints is not None:
        scores = torch.cat([torch.full_like(scores[:, :1], outside), scores[:, 1:]], dim=-1)
        mask = torch.ones(1, scores.shape[0], dtype=torch.bool)
        return scheme_viterbi(scores[None], mask, constraints)[0].tolist()
    entity_scores = scores[:, 1:]  # shape: (words, tags - 1)
    best, best_tag = entity_scores.max(-1)  # shape: (words,)
    return torch.where(best >= outside, best_tag + 1, 0).tolist()


def average_thresholds(per_fold: Sequence[Sequence[float]]) -> list[float]:
    """The mean threshold of each type over folds (each fold: one
    threshold per channel, same channel order)."""
    if not per_fold:
        raise ValueError("average_thresholds needs the thresholds of at least one fold")
    sizes = {len(fold) for fold in per_fold}
    if len(sizes) != 1:
        raise ValueError(f"folds give different numbers of thresholds: {[len(fold) for fold in per_fold]}")
    return [round(sum(values) / len(values), 6) for values in zip(*per_fold, strict=True)]
