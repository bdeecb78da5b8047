"""The Predictor: a model with the encoder that feeds it — documents in, spans out, in batches.

Four steps, each its own method, so that a caller can run any of them alone:

- ``forward``: one batch of windows through the model (in the predictor's compute dtype) -> each window's
  word tag ids (a row per word, one tag per channel), the words' span-confidence pieces, the batch's loss when
  the windows carry labels, and on request the head's raw scores at the words (for re-decoding them another
  way: threshold tuning);
- ``predict_windows``: ``forward`` over every window of some encoded documents, shortest windows first;
- ``predict``: documents, read lazily from any iterable, encoded and predicted chunk by chunk and yielded in
  input order with their spans, each with its confidence (``Span.score``);
- ``evaluate``: an encoded corpus predicted and scored against its gold spans (``evaluation.corpus_scores``),
  and the calibration of its span confidences (``calibration``).

Nothing is cached here: callers that evaluate one corpus again and again (the trainer, each epoch) encode it
once (``Encoder.encode_corpus``) and pass the ``EncodedCorpus``.

What each step takes and returns is plain data (window dicts in; tag ids per window and word out), so that the
steps can be spread: ``predict_windows`` is the unit shared out across processes under a launcher (each
process runs every n-th batch of the one-process batching, and the per-batch results are gathered into every
process, so tags, scores and the loss are the one-process ones bit for bit), and confidences or another
decoding read the raw scores ``forward`` keeps, apart from the tags. Every process must call it (it gathers).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from cardioner import processes
from cardioner.backbone import window_length, window_stride
from cardioner.calibration import calibration, span_outcomes
from cardioner.data.document import Document
from cardioner.data.encoding import NO_WORD, EncodedCorpus, EncodedDocument, Encoder, collate
from cardioner.errors import ConfigError
from cardioner.evaluation import corpus_scores
from cardioner.labels import LabelSet
from cardioner.precision import compute_dtype

DEFAULT_BATCH_SIZE = 32  # windows per forward pass
DEFAULT_CHUNK_DOCUMENTS = 1024  # documents encoded and predicted together by ``predict``


@dataclass
class BatchOutput:
    """What ``forward`` returns for one batch of windows (in the batch's order)."""

    tags: list[list[list[int]]]  # per window: a row of tag ids (one per channel) for each of its words
    loss: torch.Tensor | None  # the model's loss over the batch, when the windows carry labels
    scores: list[torch.Tensor] | None  # per window, on request: the head's raw scores (words, channels, tags)
    # per window: the words' SPAN_OPEN, SPAN_CONTINUE, SPAN_CLOSE log-probabilities (words, channels, 3); None
    # for a model that does not give them (``word_confidences``)
    confidences: list[torch.Tensor] | None = None


@dataclass
class WindowPredictions:
    """What the model said of some encoded documents, per document and window."""

    tags: list[list[list[list[int]]]]  # tags[d][k]: rows of tag ids of the words of window k of document d
    loss: float | None  # the mean of the batches' losses (windows with labels), else None
    scores: list[list[torch.Tensor]] | None  # scores[d][k]: raw scores (words, channels, tags), when kept
    confidences: list[list[torch.Tensor]] | None = None  # confidences[d][k]: (words, channels, 3)


@dataclass
class Evaluation:
    """An encoded corpus predicted and scored."""

    loss: float | None  # the mean batch loss on the corpus
    # exact-match span scores, with "overlap" and "seqeval" inside (``evaluation.corpus_scores``), and
    # "calibration" (the ECE of the span confidences and its table: ``calibration.calibration``)
    scores: dict
    documents: list[Document]  # the predicted documents, in the corpus's order


class Predictor:
    """A model and the encoder that cuts documents into its windows and turns its tags back into spans.

    Args:
        model: a cardioner model (``modeling.py``); put in eval mode when it predicts.
        encoder: the Encoder of the model's tokenizer, labels and window settings.
        batch_size: windows per forward pass.
        dtype: the compute dtype of the forward pass (bf16 through autocast: ``precision.compute_dtype``).
    """

    def __init__(self, model: torch.nn.Module, encoder: Encoder, batch_size: int = DEFAULT_BATCH_SIZE,
                 dtype: torch.dtype = torch.float32) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model = model
        self.encoder = encoder
        self.batch_size = batch_size
        self.dtype = dtype

    @classmethod
    def from_model(cls, model: torch.nn.Module, tokenizer, max_length: int | None = None,
                   stride: int | None = None, batch_size: int = DEFAULT_BATCH_SIZE,
                   dtype: torch.dtype = torch.float32) -> Predictor:
        """The predictor of an exported model: its labels, and its windows as it was trained unless
        ``max_length`` / ``stride`` say otherwise (``data.max_length`` / ``data.stride`` semantics)."""
        config = model.config
        windows = getattr(config, "cardioner_windows", None) or {}
        max_length = window_length(max_length or windows.get("max_length"), tokenizer,
                                   config.backbone_config or {}, "of this model")
        stride = window_stride(stride if stride is not None else windows.get("stride"), max_length)
        context = int(windows.get("context", 0))
        try:
            encoder = Encoder(tokenizer, model_labels(config), max_length=max_length, stride=stride,
                              label_all_subwords=bool(windows.get("label_all_subwords", False)),
                              context=context)
        except ValueError as error:
            if not context:
                raise
            raise ConfigError(f"this model reads {context} subwords of context on each side of a window's "
                              f"own words (its data.context); data.max_length {max_length} leaves no room "
                              f"for them ({error})") from error
        return cls(model, encoder, batch_size, dtype)

    def with_batch_size(self, batch_size: int) -> Predictor:
        """This predictor with another number of windows per forward pass."""
        return Predictor(self.model, self.encoder, batch_size, self.dtype)

    @property
    def labels(self) -> LabelSet:
        return self.encoder.labels

    @property
    def tokenizer(self):
        return self.encoder.tokenizer

    # -- one batch ------------------------------------------------------------------------------------------

    def collate(self, windows: Sequence[dict]) -> dict[str, torch.Tensor]:
        """A padded batch as the model takes it (word_ids left out: the model finds words itself)."""
        batch = collate(windows, self.encoder.pad_token_id)
        batch.pop("word_ids", None)  # labels stay (batch, seq_len, channels): every model takes them so
        return batch

    @torch.no_grad()
    def forward(self, windows: Sequence[dict], keep_scores: bool = False) -> BatchOutput:
        """Run one batch of windows through the model (eval mode) and read its decisions at the words.

        Args:
            windows: window dicts from the encoder (with ``labels``, the loss is computed too).
            keep_scores: also return the head's raw scores (``emissions``) at the words, undecoded.

        Returns:
            BatchOutput: per window, the tag ids of its words (words, channels) — the model's decoded tags
            (Viterbi for a CRF, thresholds for sigmoid channels) — their span-confidence pieces, and the loss
            and raw scores.
        """
        self.model.eval()
        device = next(self.model.parameters()).device
        batch = {key: value.to(device) for key, value in self.collate(windows).items()}
        with compute_dtype(self.dtype, device):
            output = self.model(**batch)
        # Eval-mode logits are consistent with the model's decoding (their argmax at a word start is its tag).
        logits = output.logits if output.channel_logits is None else output.channel_logits
        tags = [rows.argmax(-1).tolist() for rows in word_rows(channel_view(logits).float().cpu(), windows)]
        scores = word_rows(channel_view(output.emissions).float().cpu(), windows) if keep_scores else None
        pieces = getattr(output, "word_confidences", None)  # shape: (batch, seq_len[, channels], 3)
        confidences = None if pieces is None else word_rows(channel_view(pieces).float().cpu(), windows)
        return BatchOutput(tags, output.loss, scores, confidences)

    # -- many batches ---------------------------------------------------------------------------------------

    def predict_windows(self, encoded: Sequence[EncodedDocument], desc: str = "predicting",
                        keep_scores: bool = False) -> WindowPredictions:
        """``forward`` over every window of ``encoded``, in batches of windows of similar length (under
        several processes: each its share of the batches, the results gathered into every process).

        Returns:
            WindowPredictions: tags[d][k] (and scores[d][k]) for window k of document d; the mean batch loss
            when the windows carry labels.
        """
        windows = [(d, k, window) for d, doc in enumerate(encoded) for k, window in enumerate(doc.windows)]
        order = sorted(range(len(windows)), key=lambda i: len(windows[i][2]["input_ids"]))
        batches = [order[start : start + self.batch_size] for start in range(0, len(order), self.batch_size)]
        mine = []
        for b in tqdm(processes.shard(len(batches)), desc=desc, leave=False, disable=not processes.is_main()):
            output = self.forward([windows[i][2] for i in batches[b]], keep_scores)
            loss = None if output.loss is None else float(output.loss)
            mine.append((b, (output.tags, output.scores, output.confidences, loss)))
        tags: list[list] = [[None] * len(doc.windows) for doc in encoded]
        scores: list[list] | None = [[None] * len(doc.windows) for doc in encoded] if keep_scores else None
        confidences: list[list] | None = [[None] * len(doc.windows) for doc in encoded]
        losses = []
        gathered = processes.gather_in_order(mine)
        for batch, (batch_tags, batch_scores, batch_confidences, loss) in zip(batches, gathered, strict=True):
            if loss is not None:
                losses.append(loss)
            if batch_confidences is None:
                confidences = None
            for position, i in enumerate(batch):
                d, k, _ = windows[i]
                tags[d][k] = batch_tags[position]
                if scores is not None:
                    scores[d][k] = batch_scores[position]
                if confidences is not None:
                    confidences[d][k] = batch_confidences[position]
        return WindowPredictions(tags, sum(losses) / len(losses) if losses else None, scores, confidences)

    def predict(self, documents: Iterable[Document], chunk_size: int = DEFAULT_CHUNK_DOCUMENTS,
                min_confidence: float = 0.0) -> Iterator[Document]:
        """Documents with predicted spans, in input order (windows merged: each word from its most central
        window), each span with its confidence (``Span.score``). ``documents`` is read lazily,
        ``chunk_size`` documents at a time: memory holds one chunk, whatever the number of documents. With
        context (``data.context``) a chunk ends with a whole group (consecutive documents of one
        ``meta["document"]``), so that a document reads the same context however the input is chunked.

        Args:
            documents: the documents (their spans are ignored).
            chunk_size: documents encoded and predicted together (their windows batched by length).
            min_confidence: leave out spans whose confidence is below this (0: keep every span).

        Yields:
            Document(id, text, predicted spans, {"source": the input's meta "path"}) per input document.
        """
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        if not 0.0 <= min_confidence <= 1.0:
            raise ValueError(f"min_confidence must be in [0, 1], got {min_confidence}")
        for chunk in _chunks(documents, chunk_size, whole_groups=self.encoder.context > 0):
            encoded, _ = self.encoder.encode(chunk)
            predictions = self.predict_windows(encoded)
            confidences = predictions.confidences or [None] * len(chunk)
            for doc, enc, tags, pieces in zip(chunk, encoded, predictions.tags, confidences, strict=True):
                spans = self.encoder.decode_document(enc, tags, pieces, self.model.span_score)
                if min_confidence > 0:
                    spans = [span for span in spans if span.score is None or span.score >= min_confidence]
                yield Document(doc.id, doc.text, spans, {"source": doc.meta.get("path")})

    def evaluate(self, corpus: EncodedCorpus) -> Evaluation:
        """Predict an encoded corpus and score it against its gold spans (exact and overlap; seqeval on each
        channel's word tags)."""
        predictions = self.predict_windows(corpus.encoded, desc=f"evaluating {corpus.name}")
        predicted, gold_tags, predicted_tags = [], [], []
        confidences = predictions.confidences or [None] * len(corpus.documents)
        for doc, enc, tags, pieces in zip(corpus.documents, corpus.encoded, predictions.tags, confidences,
                                          strict=True):
            merged = self.encoder.merge_predictions(enc, tags)
            merged_pieces = None if pieces is None else self.encoder.merge_scores(enc, pieces)
            spans = self.encoder.word_labels_to_spans(enc.word_offsets, merged, merged_pieces,
                                                      self.model.span_score)
            predicted.append(Document(doc.id, doc.text, spans))
            for c, channel in enumerate(self.labels.channels):  # one tag sequence per document and channel
                gold_tags.append([channel.typed_tag(row[c]) for row in enc.word_labels])
                predicted_tags.append([channel.typed_tag(row[c]) for row in merged])
        use_tags = self.labels.scheme == "BIO"  # seqeval's strict IOB2 view
        scores = corpus_scores(corpus.documents, predicted, gold_tags if use_tags else None,
                               predicted_tags if use_tags else None)
        scores["calibration"] = calibration(span_outcomes(corpus.documents, predicted))
        return Evaluation(predictions.loss, scores, predicted)


def _chunks(documents: Iterable[Document], size: int, whole_groups: bool) -> Iterator[list[Document]]:
    """``documents`` in lists of ``size``; with ``whole_groups``, each list runs on to the end of the group
    (same ``meta["document"]``) of its last document."""
    documents = iter(documents)
    held: list[Document] = []  # the first document of the next chunk, read while finishing a group
    while chunk := held + list(itertools.islice(documents, size - len(held))):
        held = []
        group = chunk[-1].meta.get("document") if whole_groups else None
        while group is not None and (following := next(documents, None)) is not None:
            if following.meta.get("document") != group:
                held = [following]
                break
            chunk.append(following)
        yield chunk


def model_labels(config) -> LabelSet:
    """The label set a model's config records (exports without ``cardioner_labels``: flat, from id2label)."""
    saved = getattr(config, "cardioner_labels", None)
    if saved:
        return LabelSet.from_config(saved)
    return LabelSet.flat(sorted({tag.split("-", 1)[1] for tag in config.id2label.values() if tag != "O"}))


def channel_view(scores: torch.Tensor) -> torch.Tensor:
    """Model scores as (batch, seq_len, channels, tags): a flat
    model's (batch, seq_len, tags) is one channel."""
    return scores if scores.dim() == 4 else scores.unsqueeze(2)


def word_rows(scores: torch.Tensor, windows: Sequence[dict]) -> list[torch.Tensor]:
    """The scores at each window's word starts, in word order: one (num_words, channels, tags) tensor each.

    Args:
        scores: (batch, seq_len, channels, tags), the batch of ``windows``.
        windows: the window dicts (``word_ids``).
    """
    result = []
    for row, window in zip(scores, windows, strict=True):  # row shape: (seq_len, channels, tags)
        word_ids = window["word_ids"]
        starts = [p for p, w in enumerate(word_ids) if w != NO_WORD and (p == 0 or word_ids[p - 1] != w)]
        result.append(row[starts])  # shape: (num_words, channels, tags)
    return result
