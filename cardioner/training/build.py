"""What a training run starts from: its label set, the encoder of
its backbone, its corpora encoded once, and a fresh model.

``prepare_corpora`` checks the corpora against each other and the task (without changing the caller's
documents) and encodes them; ``build_model`` makes the model for a label set from the config's head settings,
with class weights and the tag priors that start its output biases computed from the training tags;
``fresh_predictor`` does both.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from cardioner.backbone import backbone_config, load_tokenizer, resolve_backbone, window_length, window_stride
from cardioner.config import Config, ConfigError
from cardioner.data.document import CorpusError, Document, check_flat, resolve_overlaps
from cardioner.data.encoding import IGNORE_INDEX, EncodedCorpus, Encoder
from cardioner.labels import LabelSet
from cardioner.modeling import HEAD_SETTINGS, TokenClassificationModel
from cardioner.predictor import Predictor
from cardioner.thresholds import initial_thresholds
from cardioner.values import counted

logger = logging.getLogger("cardioner")

Documents = Sequence[Document]


@dataclass
class Corpora:
    """The corpora of one run, each encoded once: train to learn
    from, dev to select on, test to score once."""

    labels: LabelSet
    train: EncodedCorpus
    dev: EncodedCorpus | None
    test: EncodedCorpus | None

    def sizes(self) -> dict[str, int]:
        """Documents per corpus (the model card counts them)."""
        return {corpus.name: len(corpus.documents) for corpus in (self.train, self.dev, self.test) if corpus}


def label_set(config: Config, train_docs: Documents, dev_docs: Documents | None = None,
              test_docs: Documents | None = None) -> tuple[list[Document], LabelSet]:
    """The training documents as the task takes them, and the label set they define.

    A flat task refuses overlapping training spans (``data.overlaps: error``) or keeps the longest of them
    (``longest``, counted in the log); the caller's list and documents are not changed. Dev and test may only
    hold labels the training set has.

    Returns:
        (training documents, LabelSet).
    """
    data = config.data
    train_docs = list(train_docs)
    if not data.multilabel:
        for index, doc in enumerate(train_docs):
            if data.overlaps == "error":
                check_flat(doc, doc.meta.get("path"))
            else:
                train_docs[index], dropped = resolve_overlaps(doc)
                if dropped:
                    logger.info("%s: %s dropped (longest kept)", doc.id, counted(dropped, "overlapping span"))
    labels = LabelSet.from_documents(train_docs, multilabel=data.multilabel, scheme=data.scheme)
    if not labels.types:
        raise CorpusError("the training corpus has no annotated spans: nothing to learn", data.train)
    for name, docs in (("dev", dev_docs), ("test", test_docs)):
        unseen = Counter(s.label for d in docs or [] for s in d.spans if s.label not in labels.types)
        if unseen:
            listed = ", ".join(f"{label} ({n})" for label, n in unseen.most_common())
            raise CorpusError(
                f"the {name} set has labels the training set lacks: {listed}; a model cannot learn them "
                f"(remove them from {name}, or add training examples)", getattr(data, name)
            )
    return train_docs, labels


def build_encoder(config: Config, labels: LabelSet) -> Encoder:
    """The encoder of the config's backbone (its fast tokenizer) with the config's window settings."""
    backbone = resolve_backbone(config.model.model)
    tokenizer = load_tokenizer(backbone)
    max_length = window_length(config.data.max_length, tokenizer, backbone_config(backbone), backbone)
    return Encoder(
        tokenizer,
        labels,
        max_length=max_length,
        stride=window_stride(config.data.stride, max_length),
        label_all_subwords=config.data.label_all_subwords,
        context=config.data.context,
    )


def prepare_corpora(config: Config, train_docs: Documents, dev_docs: Documents | None = None,
                    test_docs: Documents | None = None) -> tuple[Encoder, Corpora]:
    """Check the corpora (``label_set``), build the encoder and encode each corpus once."""
    train_docs, labels = label_set(config, train_docs, dev_docs, test_docs)
    encoder = build_encoder(config, labels)
    corpora = Corpora(labels, encoder.encode_corpus(train_docs, "train"),
                      encoder.encode_corpus(dev_docs, "dev") if dev_docs else None,
                      encoder.encode_corpus(test_docs, "test") if test_docs else None)
    return encoder, corpora


def fresh_predictor(config: Config, train_docs: Documents, dev_docs: Documents | None = None,
                    test_docs: Documents | None = None) -> tuple[Predictor, Corpora]:
    """The corpora checked and encoded (``prepare_corpora``), and a predictor with a fresh model for them
    (``build_model``) that evaluates ``training.eval_batch_size`` windows at a time."""
    encoder, corpora = prepare_corpora(config, train_docs, dev_docs, test_docs)
    model = build_model(config, corpora.labels, encoder, corpora.train.windows)
    return Predictor(model, encoder, batch_size=config.training.eval_batch_size), corpora


def build_model(config: Config, labels: LabelSet, encoder: Encoder, train_windows: Sequence[dict]):
    """A fresh model on the pretrained backbone, with ``labels`` and the config's head settings.

    Class weights (``model.class_weighting``) and the tag priors that start the head's output biases
    (``model.prior_init``) come from the tags of ``train_windows``; a multi-label sigmoid model starts with
    ``initial_thresholds``. The model's config records the label set and the window settings, so that an
    export predicts as it was trained.
    """
    settings = config.model
    channels = range(labels.num_channels)
    num_tags = len(labels.id2label)  # the tags of each channel
    weights = [class_weights(train_windows, num_tags, settings.class_weighting, c) for c in channels]
    priors = None
    if settings.prior_init:
        priors = [[round(float(p), 8) for p in tag_frequencies(train_windows, num_tags, c)] for c in channels]
    model = TokenClassificationModel.from_backbone(
        resolve_backbone(settings.model), encoder.tokenizer, labels.model_id2label,
        **{name: getattr(settings, name) for name in HEAD_SETTINGS},  # the model's own settings, as they are
        channel_types=labels.channel_types,
        # the CRF NLL of a multi-label model takes no class weights
        class_weights=None if weights[0] is None or (settings.use_crf and labels.channel_types)
        else labels.model_rows(weights),
        tag_priors=labels.model_rows(priors) if priors else None,
        thresholds=initial_thresholds(settings, labels),
        label_all_subwords=config.data.label_all_subwords,
    )
    model.config.cardioner_labels = labels.to_config()
    model.config.cardioner_windows = {"max_length": encoder.max_length, "stride": encoder.stride,
                                      "label_all_subwords": encoder.label_all_subwords,
                                      "context": encoder.context}
    return model


def tag_frequencies(windows: Sequence[dict], num_tags: int, channel: int | None = None) -> torch.Tensor:
    """The frequency of each tag id over the labelled positions of ``windows`` (float64, sums to 1).

    Counts are taken over labelled positions: of one channel when ``channel`` is given, else of all channels
    together. A tag never seen counts once, so that no frequency is zero.
    """
    counts = Counter()
    for window in windows:
        for row in window["labels"]:  # one tag id per channel
            for value in row if channel is None else row[channel : channel + 1]:
                if value != IGNORE_INDEX:
                    counts[value] += 1
    seen = torch.tensor([max(counts[i], 1) for i in range(num_tags)], dtype=torch.float64)
    return seen / seen.sum()


def class_weights(windows: Sequence[dict], num_tags: int, strategy: str,
                  channel: int | None = None) -> list[float] | None:
    """Per-tag loss weights from the training tags (``tag_frequencies``): none | inverse | inverse_sqrt |
    normalised.

    ``normalised`` is ``inverse`` rescaled so that the weights average 1 over the tag distribution.
    """
    if strategy == "none":
        return None
    freq = tag_frequencies(windows, num_tags, channel)
    if strategy == "inverse":
        weights = 1.0 / freq
        weights = weights / weights.min()
    elif strategy == "inverse_sqrt":
        weights = freq.rsqrt()
        weights = weights / weights.min()
    elif strategy == "normalised":
        weights = 1.0 / freq
        weights = weights / (weights * freq).sum()
    else:
        raise ConfigError(f"model.class_weighting must be none, inverse, inverse_sqrt or normalised, "
                          f"got {strategy!r}")
    return [round(float(w), 6) for w in weights]
