"""Decision thresholds of the multi-label sigmoid model: tuned per entity type on dev, averaged across folds.

The model decides each word and type by ``O`` unless the most probable entity tag of the type reaches the
type's threshold (``MultiLabelTokenClassificationModel``); with constrained decoding (the default) each type's
words are decoded jointly, O scoring the threshold's logit, by the model's own ``scheme_viterbi`` (here over each
whole document; ``predict`` decodes windows and keeps each word's most central one, which can differ at seams).
The types never interact — in decoding, in spans and in scoring — so each type's threshold is chosen on its
own: the one in ``grid`` that maximises the type's span F1 (exact match) on the dev documents, ties going to the
one nearest 0.5. 0.5 is always a candidate, so no type scores lower on dev than with 0.5. The model runs once;
each candidate only re-decodes its scores.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from cardioner.data.document import Document
from cardioner.modeling import scheme_viterbi

DEFAULT_GRID = tuple(round(0.05 * step, 2) for step in range(1, 20))  # 0.05, 0.10, ..., 0.95 (0.5 included)


def tune_thresholds(task, model, docs: list[Document], split: str = "dev",
                    grid: Sequence[float] = DEFAULT_GRID) -> tuple[list[float], dict]:
    """Each type's threshold maximising its span F1 on ``docs`` (the dev set; never the test set).

    Args:
        task: the Task (multi-label) that encodes and decodes.
        model: a MultiLabelTokenClassificationModel (sigmoid channels).
        docs: annotated documents to tune on.
        split: the Task's encoding cache key for ``docs``.
        grid: candidate thresholds in (0, 1); 0.5 is added when missing.

    Returns:
        (thresholds in channel order, {type: {"threshold", "f1", "f1_at_0.5"}}).
    """
    from cardioner.evaluation import score_spans

    if getattr(model.config, "channel_types", None) is None or getattr(model, "learns_outside_score", True):
        raise ValueError(f"thresholds are tuned for the multi-label sigmoid model, not {type(model).__name__}")
    candidates = sorted(set(grid) | {0.5}, key=lambda t: (abs(t - 0.5), t))  # nearest 0.5 first wins ties
    if not all(0.0 < t < 1.0 for t in candidates):
        raise ValueError(f"thresholds must lie in (0, 1), got {sorted(candidates)}")
    task.encode(docs, split)
    encoded = task.encoded[split]
    scores: list = []
    task.predict_encoded(model, encoded, desc=f"thresholds on {split}", scores=scores)  # raw logits, undecoded
    constraints = model.decoding_constraints
    # One (num_words, channels, tags) tensor per document: every word from its most central window.
    merged = [torch.tensor(task.encoder.merge_predictions(enc, [s.tolist() for s in doc_scores]))
              for enc, doc_scores in zip(encoded, scores, strict=True)]
    thresholds, report = [], {}
    for channel, entity_type in enumerate(model.config.channel_types):
        gold = [Document(d.id, d.text, [s for s in d.spans if s.label == entity_type]) for d in docs]
        f1_by_threshold = {}
        for threshold in candidates:
            predicted = []
            for doc, enc, words in zip(docs, encoded, merged, strict=True):
                tag_ids = decide(words[:, channel] if len(words) else words, threshold, constraints)
                predicted.append(Document(doc.id, doc.text, task.encoder.channel_spans(enc.word_offsets, tag_ids, channel)))
            f1_by_threshold[threshold] = score_spans(gold, predicted)["micro"]["f1"]
        best = max(candidates, key=lambda t: f1_by_threshold[t])  # first maximum: the one nearest 0.5
        thresholds.append(best)
        report[entity_type] = {"threshold": best, "f1": f1_by_threshold[best], "f1_at_0.5": f1_by_threshold[0.5]}
    return thresholds, report


def decide(scores: torch.Tensor, threshold: float, constraints=None) -> list[int]:
    """The sigmoid model's rule on one channel: tag ids from scores (words, tags) whose column 0 is O's.

    Without ``constraints``: O unless the best entity tag's logit reaches ``logit(threshold)``; then that tag.
    With the channel's tag-scheme constraints (``model.decoding_constraints``): the valid path with the highest
    sum of scores, O scoring ``logit(threshold)`` — what the model does with ``constrained_decoding``.
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
    """The mean threshold of each type over folds (each fold: one threshold per channel, same channel order)."""
    if not per_fold:
        raise ValueError("average_thresholds needs the thresholds of at least one fold")
    sizes = {len(fold) for fold in per_fold}
    if len(sizes) != 1:
        raise ValueError(f"folds give different numbers of thresholds: {[len(fold) for fold in per_fold]}")
    return [round(sum(values) / len(values), 6) for values in zip(*per_fold, strict=True)]
