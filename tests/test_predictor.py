"""The Predictor: one batched forward with one label shape for every model,
predict over any iterable in chunks (input order, read lazily), evaluate an
encoded corpus; and what it is built from (training/build.py)."""

from __future__ import annotations

import itertools

import pytest
import torch
from tiny import CORPUS, annotated_documents, tiny_backbone

from cardioner.config import load_config
from cardioner.data.document import Document, Span
from cardioner.predictor import Predictor, _chunks, model_labels
from cardioner.training.build import fresh_predictor, label_set


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory):
    return tiny_backbone("bert", tmp_path_factory.mktemp("backbones"))


def predictor_for(bert_dir, **settings) -> tuple[Predictor, object]:
    config = load_config(None, {"model.model": str(bert_dir), "data.max_length": 16, "data.stride": 4,
                                "data.overlaps": "longest", **settings})
    torch.manual_seed(0)
    return fresh_predictor(config, annotated_documents(), annotated_documents()[:3])


@pytest.mark.parametrize("settings", [{}, {"model.use_crf": True}, {"data.multilabel": True},
                                      {"data.multilabel": True, "model.use_crf": True}],
                         ids=["softmax", "crf", "sigmoid", "multilabel-crf"])
def test_forward_gives_a_row_of_tags_per_word_for_every_model(bert_dir, settings, one_thread):
    predictor, corpora = predictor_for(bert_dir, **settings)
    num_channels = predictor.labels.num_channels
    assert num_channels == (3 if settings.get("data.multilabel") else 1)
    windows = corpora.train.windows[:5]
    output = predictor.forward(windows, keep_scores=True)
    assert output.loss is not None and torch.isfinite(output.loss)  # the windows carry labels
    num_tags = len(predictor.labels.id2label)
    for window, tags, scores in zip(windows, output.tags, output.scores, strict=True):
        num_words = len({w for w in window["word_ids"] if w >= 0})
        assert [len(row) for row in tags] == [num_channels] * num_words
        assert scores.shape == (num_words, num_channels, num_tags)
    labels = predictor.collate(windows)["labels"]
    assert labels.shape[:2] == torch.Size([len(windows), max(len(w["input_ids"]) for w in windows)])


def test_predict_reads_lazily_in_chunks_and_keeps_the_input_order(bert_dir, one_thread):
    predictor, _ = predictor_for(bert_dir)
    docs = [Document(f"t{i}", text) for i, text in enumerate(CORPUS * 2)]
    pulled = []

    def stream():
        for doc in docs:
            pulled.append(doc.id)
            yield doc

    predicted = predictor.predict(stream(), chunk_size=3)
    first = next(predicted)
    assert first.id == "t0" and len(pulled) == 3  # one chunk read, no more
    rest = list(predicted)
    assert [first.id] + [d.id for d in rest] == [d.id for d in docs]
    whole = list(predictor.predict(docs))  # one chunk: every window batched together
    assert [d.spans for d in [first, *rest]] == [d.spans for d in whole]
    assert all(d.text == doc.text for d, doc in zip(whole, docs, strict=True))
    with pytest.raises(ValueError, match="chunk_size must be >= 1"):
        next(predictor.predict(docs, chunk_size=0))


def test_evaluate_scores_the_predicted_spans_of_an_encoded_corpus(bert_dir, one_thread):
    predictor, corpora = predictor_for(bert_dir, **{"data.multilabel": True})
    evaluation = predictor.evaluate(corpora.dev)
    assert [d.id for d in evaluation.documents] == [d.id for d in corpora.dev.documents]
    assert evaluation.loss is not None
    predicted = list(predictor.predict(corpora.dev.documents))
    assert [d.spans for d in predicted] == [d.spans for d in evaluation.documents]
    assert evaluation.scores["micro"]["support"] == sum(len(d.spans) for d in corpora.dev.documents)
    assert evaluation.scores["seqeval"]["num_sequences"] == 3 * len(corpora.dev.documents)  # one per channel


def test_an_export_predicts_with_its_own_labels_and_windows(bert_dir, one_thread):
    predictor, _ = predictor_for(bert_dir, **{"data.multilabel": True})
    model = predictor.model
    assert model_labels(model.config) == predictor.labels
    again = Predictor.from_model(model, predictor.tokenizer)
    assert (again.encoder.max_length, again.encoder.stride) == (16, 4)
    wider = Predictor.from_model(model, predictor.tokenizer, max_length=32).encoder
    assert (wider.max_length, wider.stride) == (32, 4)  # the trained stride unless one is given
    del model.config.cardioner_labels  # an old export: a flat label set from id2label
    assert model_labels(model.config).types == ("ANAT", "CHEM", "DISO")
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        Predictor(model, predictor.encoder, batch_size=0)


def test_the_label_set_leaves_the_callers_documents_alone(bert_dir):
    config = load_config(None, {"model.model": str(bert_dir), "data.overlaps": "longest"})
    docs = annotated_documents()
    before = [(d.id, list(d.spans)) for d in docs]
    train, labels = label_set(config, docs)
    assert [(d.id, list(d.spans)) for d in docs] == before  # nested spans kept in the caller's list
    assert train is not docs and sum(len(d.spans) for d in train) < sum(len(d.spans) for d in docs)
    assert labels.types == ("ANAT", "CHEM", "DISO") and labels.channel_types is None
    _, multilabel = label_set(config.replace(**{"data.multilabel": True}), docs)
    assert multilabel.channel_types == ["ANAT", "CHEM", "DISO"]
    assert multilabel.model_id2label == labels.model_id2label == labels.id2label
    assert multilabel.model_rows([[1.0], [2.0], [3.0]]) == [[1.0], [2.0], [3.0]]
    assert labels.model_rows([[1.0]]) == [1.0]
    with pytest.raises(ValueError, match="the dev set has labels the training set lacks: PROC"):
        label_set(config, docs, [Document("x", "abc", [Span(0, 3, "PROC")])])


def test_with_context_a_chunk_runs_on_to_the_end_of_its_last_documents_group():
    """Documents of one group (``meta["document"]``) lend each other context, so predict never splits a group
    between chunks; without context, chunks are plain."""
    groups = ["a", "a", "a", "b", None, None, "c", "c"]
    docs = [Document(str(i), "x", [], {} if g is None else {"document": g}) for i, g in enumerate(groups)]
    chunked = [[doc.id for doc in chunk] for chunk in _chunks(iter(docs), 2, whole_groups=True)]
    assert chunked == [["0", "1", "2"], ["3", "4"], ["5", "6", "7"]]
    plain = [[doc.id for doc in chunk] for chunk in _chunks(docs, 3, whole_groups=False)]
    assert plain == [["0", "1", "2"], ["3", "4", "5"], ["6", "7"]]
    assert [len(chunk) for chunk in _chunks(docs, 1, whole_groups=True)] == [3, 1, 1, 1, 2]


@pytest.mark.parametrize("settings", [{}, {"model.use_crf": True}, {"data.multilabel": True},
                                      {"data.multilabel": True, "model.use_crf": True}],
                         ids=["softmax", "crf", "sigmoid", "multilabel-crf"])
def test_every_predicted_span_has_a_confidence_and_min_confidence_leaves_out_the_lower_ones(
        bert_dir, settings, one_thread):
    predictor, _ = predictor_for(bert_dir, **settings)
    torch.manual_seed(1)
    for name, parameter in predictor.model.named_parameters():  # untrained: priors make every word O
        if "classifier" in name:
            parameter.data.normal_(0.0, 2.0)
    predicted = list(predictor.predict(annotated_documents()))
    spans = [span for doc in predicted for span in doc.spans]
    assert spans and [s for s in spans if s.score is None or not 0.0 <= s.score <= 1.0] == []
    threshold = sorted(span.score for span in spans)[len(spans) // 2]
    kept = list(predictor.predict(annotated_documents(), min_confidence=threshold))
    for doc, filtered in zip(predicted, kept, strict=True):
        assert filtered.spans == [span for span in doc.spans if span.score >= threshold]
        assert [s.score for s in filtered.spans] == [s.score for s in doc.spans if s.score >= threshold]
    with pytest.raises(ValueError, match="min_confidence must be in"):
        next(predictor.predict(annotated_documents(), min_confidence=1.5))


def test_predictions_do_not_depend_on_how_windows_are_batched(bert_dir, one_thread):
    predictor, corpora = predictor_for(bert_dir)
    encoded = corpora.train.encoded  # windows of many lengths: batched by length, or one at a time
    assert len({len(w["input_ids"]) for doc in encoded for w in doc.windows}) > 3
    batched = predictor.predict_windows(encoded, keep_scores=True)
    alone = predictor.with_batch_size(1).predict_windows(encoded, keep_scores=True)
    assert batched.tags == alone.tags
    for kept in ("scores", "confidences"):  # the head's raw scores and the span-confidence pieces
        ours, theirs = getattr(batched, kept), getattr(alone, kept)
        for one, other in zip(itertools.chain(*ours), itertools.chain(*theirs), strict=True):
            torch.testing.assert_close(one, other, atol=1e-5, rtol=1e-5)
