"""INCEpTION's external-recommender protocol: a CAS in, the model's entities added to it, the CAS back.

INCEpTION posts ``{"metadata": {"layer", "feature", "projectId", "anchoringMode", "crossSentence"},
"document": {"xmi", "documentId", "userId"}, "typeSystem": XML}`` to ``<remote URL>/predict`` and reads
``{"document": XMI}`` back: the same CAS with one annotation of ``layer`` per predicted entity, the entity
type in ``feature``, ``inception_internal_predicted`` set (how INCEpTION tells suggestions from annotations)
and, where the type system has it and the span has a confidence, ``<feature>_score``.

Spans are anchored as the layer is: to whole tokens ("tokens"; one token for "singleToken"; whole sentences
for "sentences"; as predicted for "characters") using the CAS's own Token and Sentence annotations, and a
span across a sentence boundary is left out when the layer forbids it (``crossSentence`` false). cassis maps
UIMA's UTF-16 offsets to Python's code points, so offsets are those of ``cardioner predict`` on the same text.
"""

from __future__ import annotations

import bisect
import dataclasses
import logging
from dataclasses import dataclass

from cardioner.data.document import Span
from cardioner.values import counted

logger = logging.getLogger("cardioner.serve")

NAMED_ENTITY = "de.tudarmstadt.ukp.dkpro.core.api.ner.type.NamedEntity"
TOKEN = "de.tudarmstadt.ukp.dkpro.core.api.segmentation.type.Token"
SENTENCE = "de.tudarmstadt.ukp.dkpro.core.api.segmentation.type.Sentence"
IS_PREDICTION = "inception_internal_predicted"  # marks a suggestion (INCEpTION adds it to every layer)
SCORE_SUFFIX = "_score"  # <feature>_score: the suggestion's confidence, shown in INCEpTION
ANCHORING_MODES = ("characters", "singleToken", "tokens", "sentences")


class RecommenderRequestError(ValueError):
    """A request INCEpTION (or a client posing as it) sent that cannot be answered; the message says why."""


@dataclass
class RecommenderRequest:
    """A parsed prediction request.

    Args:
        cas: the document (cassis ``Cas``), annotations and all.
        layer: the type to create, e.g. NamedEntity.
        feature: the feature that takes the entity type, e.g. "value".
        anchoring: "characters", "singleToken", "tokens" or "sentences".
        cross_sentence: whether an annotation may cross a sentence boundary.
        document_id: INCEpTION's document id (for the log).
    """

    cas: object
    layer: str
    feature: str
    anchoring: str
    cross_sentence: bool
    document_id: str

    @property
    def text(self) -> str:
        return self.cas.sofa_string or ""


def parse_request(payload: dict, layer: str = NAMED_ENTITY, feature: str = "value") -> RecommenderRequest:
    """Read INCEpTION's prediction request: its type system and CAS XMI, with dkpro-cassis.

    Args:
        payload: the request's JSON object.
        layer: the layer this server predicts into; a request for another layer is refused.
        feature: the feature of ``layer`` that takes the entity type.

    Raises:
        RecommenderRequestError: a missing key, an XMI or type system cassis cannot read, another layer or
            feature, or a layer without the feature.
    """
    from cassis import load_cas_from_xmi, load_typesystem  # dkpro-cassis: the serve extra (optional)

    metadata = _field(payload, "metadata", dict)
    document = _field(payload, "document", dict)
    type_system_xml = _field(payload, "typeSystem", str)
    asked_layer = _field(metadata, "layer", str, "metadata.layer")
    asked_feature = _field(metadata, "feature", str, "metadata.feature")
    if (asked_layer, asked_feature) != (layer, feature):
        raise RecommenderRequestError(
            f"this recommender predicts {layer} / {feature}; INCEpTION asked for {asked_layer} /"
            f" {asked_feature} (configure the recommender on that layer and feature, or serve that layer and"
            " feature: the server's inception_layer and inception_feature settings)"
        )
    anchoring = metadata.get("anchoringMode", "tokens")
    if anchoring not in ANCHORING_MODES:
        raise RecommenderRequestError(f"metadata.anchoringMode must be one of {', '.join(ANCHORING_MODES)}, "
                                      f"got {anchoring!r}")
    xmi = _field(document, "xmi", str, "document.xmi")
    try:
        type_system = load_typesystem(type_system_xml)
    except Exception as error:  # cassis raises lxml, value and type errors alike
        raise RecommenderRequestError(f"typeSystem is not a UIMA type system cassis can read "
                                      f"({type(error).__name__}: {_first_line(error)})") from None
    if not type_system.contains_type(layer):
        raise RecommenderRequestError(f"the type system has no type {layer}")
    if type_system.get_type(layer).get_feature(feature) is None:
        raise RecommenderRequestError(f"the type {layer} has no feature {feature!r}")
    try:
        cas = load_cas_from_xmi(xmi, typesystem=type_system)
    except Exception as error:
        raise RecommenderRequestError(f"document.xmi is not a CAS XMI of the sent type system "
                                      f"({type(error).__name__}: {_first_line(error)})") from None
    return RecommenderRequest(cas, layer, feature, anchoring, bool(metadata.get("crossSentence", False)),
                              str(document.get("documentId", "?")))


def respond(request: RecommenderRequest, spans: list[Span]) -> tuple[str, int]:
    """Add the predicted ``spans`` to the request's CAS as suggestions and serialise it.

    Returns:
        (the CAS as XMI, the number of suggestions added).
    """
    cas, layer_type = request.cas, request.cas.typesystem.get_type(request.layer)
    tokens = [(t.begin, t.end) for t in cas.select(TOKEN)] if _has_type(cas, TOKEN) else []
    sentences = [(s.begin, s.end) for s in cas.select(SENTENCE)] if _has_type(cas, SENTENCE) else []
    anchored, dropped = anchor_spans(spans, tokens, sentences, request.anchoring, request.cross_sentence)
    if dropped:
        logger.info("INCEpTION document %s: %s left out (no %s anchoring, or across sentences)",
                    request.document_id, counted(dropped, "prediction"), request.anchoring)
    has_flag = layer_type.get_feature(IS_PREDICTION) is not None
    has_score = layer_type.get_feature(request.feature + SCORE_SUFFIX) is not None
    for span in anchored:
        values = {"begin": span.start, "end": span.end, request.feature: span.label}
        if has_flag:
            values[IS_PREDICTION] = True
        score = getattr(span, "score", None)
        if has_score and score is not None:
            values[request.feature + SCORE_SUFFIX] = float(score)
        cas.add(layer_type(**values))
    return cas.to_xmi(), len(anchored)


def anchor_spans(spans: list[Span], tokens: list[tuple[int, int]], sentences: list[tuple[int, int]],
                 anchoring: str = "tokens", cross_sentence: bool = False) -> tuple[list[Span], int]:
    """Spans moved to the layer's anchors: the tokens (or sentences) they touch; without tokens, as they are.

    Args:
        spans: predicted spans (character offsets).
        tokens: (begin, end) of the CAS's tokens, in order.
        sentences: (begin, end) of its sentences, in order.
        anchoring: "characters", "singleToken", "tokens" or "sentences".
        cross_sentence: keep spans that cross a sentence boundary.

    Returns:
        (the anchored spans, without duplicates; how many spans were left out).
    """
    units = (
        sentences if anchoring == "sentences" else tokens if anchoring in ("tokens", "singleToken") else []
    )
    units_ends = [end for _, end in units]
    sentence_ends = [end for _, end in sentences]
    kept: list[Span] = []
    seen: set[tuple[int, int, str]] = set()
    for span in spans:
        start, end = span.start, span.end
        if units:
            covered = _covering(units, units_ends, start, end)
            if not covered or (anchoring == "singleToken" and len(covered) != 1):
                continue
            start, end = covered[0][0], covered[-1][1]
        if not cross_sentence and len(_covering(sentences, sentence_ends, start, end)) > 1:
            continue
        if (start, end, span.label) not in seen:
            seen.add((start, end, span.label))
            moved = (start, end) != (span.start, span.end)
            kept.append(dataclasses.replace(span, start=start, end=end, fragments=()) if moved else span)
    return kept, len(spans) - len(kept)


def _covering(units: list[tuple[int, int]], ends: list[int], start: int, end: int) -> list[tuple[int, int]]:
    """The units (sorted, non-overlapping (begin, end); ``ends``
    their ends) sharing a character with [start, end)."""
    found = []
    for unit in units[bisect.bisect_right(ends, start):]:
        if unit[0] >= end:
            break
        found.append(unit)
    return found


def _has_type(cas, name: str) -> bool:
    return cas.typesystem.contains_type(name)


def _field(container: dict, key: str, kind: type, name: str | None = None):
    value = container.get(key)
    if not isinstance(value, kind):
        expected = {dict: "an object", str: "a string"}[kind]
        got = "missing" if value is None else f"a {type(value).__name__}"
        raise RecommenderRequestError(f"{name or key} must be {expected}, got {got}")
    return value


def _first_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [""])[0][:200]
