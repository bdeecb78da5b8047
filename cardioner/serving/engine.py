"""The export behind the server: loaded once, called with documents, answering documents with spans.

This is the only serving module that knows how cardioner predicts; everything else sees ``Engine.predict``
(documents in, the same documents with predicted spans out), so spans are exactly those of ``cardioner
predict``: the same windows, merged the same way.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import metadata_load

from cardioner.data.document import Document, Span
from cardioner.inference import check_batch_size, load_predictor
from cardioner.modeling import CRFDecoder, SigmoidDecoder

logger = logging.getLogger("cardioner")

#: what ``/info`` calls a model's decoder (a softmax decoder: "constrained" or "argmax", as the config says)
DECODER_NAMES = {CRFDecoder: "crf", SigmoidDecoder: "sigmoid"}


def span_record(text: str, span: Span) -> dict:
    """A predicted span as JSON: start, end, label, the covered text and its confidence (None when unknown).

    The keys are those of the JSONL writer, plus ``text``;
    ``score`` is in [0, 1], the key the HF pipeline uses.
    """
    return {"start": span.start, "end": span.end, "label": span.label, "text": span.text_in(text),
            "score": getattr(span, "score", None)}


@dataclass(frozen=True)
class ModelInfo:
    """What ``GET /info`` says about the model.

    Args:
        name: the export folder's name.
        entity_types: the types the model predicts.
        tags: the tag of each output id.
        multilabel: one channel per type (overlapping entities) or one flat tag per word.
        decoder: "crf" (Viterbi), "constrained" (Viterbi under the tag scheme's rules), "argmax" or "sigmoid"
            (multi-label: a threshold per type).
        max_length: window size in subwords.
        stride: subwords shared by consecutive windows (without context).
        context: subwords of context on each side of a window's own words (``data.context``; 0: none).
        exported_with: the cardioner version that wrote the export.
        card: the model card's metadata (its YAML front matter), {} when it has none.
    """

    name: str
    entity_types: list[str]
    tags: list[str]
    multilabel: bool
    decoder: str
    max_length: int
    stride: int
    context: int
    exported_with: str | None
    card: dict


class Engine:
    """An export loaded with the installed cardioner classes (nothing from the folder is executed).

    Args:
        model_dir: the export folder.
        batch_size: windows per forward pass (as ``cardioner predict --batch-size``).
        max_length: window size in subwords (default: as trained).
        stride: window overlap in subwords (default: as trained).
    """

    def __init__(self, model_dir: str | Path, batch_size: int = 32, max_length: int | None = None,
                 stride: int | None = None):
        check_batch_size(batch_size)
        self.model_dir = Path(model_dir)
        self.batch_size = batch_size
        self.predictor = load_predictor(self.model_dir, max_length, stride, batch_size)
        self.info = self._model_info()

    def predict(self, docs: list[Document]) -> list[Document]:
        """The documents with their predicted spans (windows
        cut and merged exactly as ``cardioner predict``)."""
        if not docs:
            return []
        return list(self.predictor.predict(docs))

    def _model_info(self) -> ModelInfo:
        model, labels = self.predictor.model, self.predictor.labels
        config = model.config
        softmax = "constrained" if getattr(config, "constrained_decoding", False) else "argmax"
        decoder = DECODER_NAMES.get(type(model.decoder), softmax)  # the model's decoding rule, by name
        return ModelInfo(
            name=self.model_dir.resolve().name,
            entity_types=list(labels.types),
            tags=[config.id2label[i] for i in range(config.num_labels)],
            multilabel=labels.is_multilabel,
            decoder=decoder,
            max_length=self.predictor.encoder.max_length,
            stride=self.predictor.encoder.stride,
            context=self.predictor.encoder.context,
            exported_with=getattr(config, "cardioner_version", None),
            card=card_metadata(self.model_dir),
        )


def card_metadata(model_dir: str | Path) -> dict:
    """The metadata of the export's model card (README.md front matter), as huggingface_hub parses it."""
    readme = Path(model_dir) / "README.md"
    if not readme.is_file():
        return {}
    try:
        metadata = metadata_load(readme)
    except (ValueError, OSError) as error:  # a hand-edited card with broken YAML: serve anyway, say so
        logger.warning("%s: cannot read the model card's metadata (%s)", readme, error)
        return {}
    return json.loads(json.dumps(metadata or {}, default=str))  # YAML dates and the like as strings
