"""The token-classification models of modeling.py on a tiny
BERT: losses, decoding, pipeline logits, imports."""

from __future__ import annotations

import ast
import itertools
import sys
from pathlib import Path

import pytest
import torch
from tiny import tiny_backbone
from transformers import AutoModel, AutoTokenizer

from cardioner.modeling import (
    CardioNERConfig,
    MultiLabelTokenClassificationModel,
    MultiLabelTokenClassificationModelCRF,
    TokenClassificationModel,
    TokenClassificationModelCRF,
    gather_positions,
    gather_rows,
    model_class_for,
    scheme_viterbi,
    split_tag,
    tags_to_entities,
)

ID2LABEL = {0: "O", 1: "B-DIS", 2: "I-DIS", 3: "B-DRUG", 4: "I-DRUG"}
TEXTS = ["The patient was admitted with acute myocardial infarction.",
         "Aspirin 100 mg daily; heparin stopped."]
MODELING_PATH = Path(__file__).parents[1] / "cardioner" / "modeling.py"


@pytest.fixture(scope="module")
def backbone(tmp_path_factory):
    path = tiny_backbone("bert", tmp_path_factory.mktemp("backbones"))
    return path, AutoTokenizer.from_pretrained(path)


def batch_with_labels(model, tokenizer, seed: int = 0):
    encoding = tokenizer(TEXTS, padding=True, return_tensors="pt")
    words = model.words(encoding["input_ids"], encoding["attention_mask"])
    generator = torch.Generator().manual_seed(seed)
    tags = torch.randint(0, len(ID2LABEL), words.word_start.shape, generator=generator)
    labels = torch.where(words.word_start, tags, torch.full_like(tags, -100))
    return encoding, labels, words


def test_modeling_imports_only_torch_transformers_and_the_standard_library():
    tree = ast.parse(MODELING_PATH.read_text())
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"relative import in modeling.py: line {node.lineno}"
            roots.add(node.module.split(".")[0])
    allowed = {"torch", "transformers"} | set(sys.stdlib_module_names)
    assert roots <= allowed, sorted(roots - allowed)
    assert "torchcrf" not in roots and "cardioner" not in roots


def test_crf_transitions_move_and_the_loss_is_the_crf_nll(backbone):
    """Fails on the reference system's bug (cross-entropy on emissions, CRF never trained)."""
    path, tokenizer = backbone
    torch.manual_seed(0)
    model = TokenClassificationModelCRF.from_backbone(str(path), tokenizer, ID2LABEL, classifier_dropout=0.0)
    encoding, labels, words = batch_with_labels(model, tokenizer)
    model.train()
    output = model(**encoding, labels=labels)

    positions, mask = gather_positions(words.word_start)
    word_emissions = gather_rows(output.emissions, positions)
    expected = model.crf.nll(word_emissions, labels.gather(1, positions), mask, reduction="token_mean")
    torch.testing.assert_close(output.loss, expected)
    cross_entropy = torch.nn.functional.cross_entropy(output.emissions.reshape(-1, 5), labels.reshape(-1))
    assert not torch.allclose(output.loss, cross_entropy)

    before = model.crf.transitions.detach().clone()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(3):
        loss = model(**encoding, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        assert model.crf.transitions.grad is not None and model.crf.transitions.grad.abs().sum() > 0
        optimizer.step()
    assert (model.crf.transitions - before).abs().max() > 1e-3


def test_softmax_loss_is_weighted_cross_entropy_on_word_starts(backbone):
    path, tokenizer = backbone
    weights = [0.5, 1.0, 2.0, 1.5, 3.0]
    model = TokenClassificationModel.from_backbone(str(path), tokenizer, ID2LABEL, class_weights=weights)
    encoding, labels, _ = batch_with_labels(model, tokenizer)
    output = model(**encoding, labels=labels)
    expected = torch.nn.functional.cross_entropy(
        output.emissions.reshape(-1, 5), labels.reshape(-1), weight=torch.tensor(weights), ignore_index=-100
    )
    torch.testing.assert_close(output.loss, expected)
    assert model(**encoding).loss is None


@pytest.mark.parametrize("focal_gamma", [0.0, 2.0])
def test_softmax_loss_of_a_batch_without_labelled_words_is_zero_not_nan(backbone, focal_gamma):
    """A window of an empty document has no word: cross_entropy's mean over nothing would be NaN."""
    path, tokenizer = backbone
    model = TokenClassificationModel.from_backbone(str(path), tokenizer, ID2LABEL, focal_gamma=focal_gamma,
                                                   class_weights=[0.5, 1.0, 2.0, 1.5, 3.0])
    encoding, labels, _ = batch_with_labels(model, tokenizer)
    output = model(**encoding, labels=torch.full_like(labels, -100))
    assert output.loss.item() == 0.0 and output.loss.requires_grad
    output.loss.backward()  # on the graph: a training step over such a batch runs and changes nothing
    assert all(p.grad is None or not p.grad.any() for p in model.parameters())


@pytest.mark.parametrize("model_class", [TokenClassificationModel, TokenClassificationModelCRF])
def test_context_pieces_are_in_no_word_carry_no_loss_and_get_no_tag(backbone, model_class):
    """A window's context (``context_mask``: neighbouring sentences): the backbone reads it, but it is in
    no word. Labels there are ignored even when given, decode returns the other words only, and their tags
    are the decoder's over their own emissions alone (the CRF's chain and the constrained Viterbi skip the
    context)."""
    path, tokenizer = backbone
    torch.manual_seed(0)
    model = model_class.from_backbone(str(path), tokenizer, ID2LABEL, classifier_dropout=0.0).eval()
    encoding, labels, words = batch_with_labels(model, tokenizer)
    context = torch.zeros_like(encoding["input_ids"])
    for row, third_word in enumerate(words.positions[:, 2].tolist()):
        # the first two words (context ends where a word starts, as the encoder's)
        context[row, 1:third_word] = 1
    assert (words.word_start & context.bool()).any()  # context that would hold labelled words
    own = model.words(encoding["input_ids"], encoding["attention_mask"], context)
    assert not (own.in_word & context.bool()).any()
    assert own.word_mask.sum() == (words.word_start & ~context.bool()).sum()
    with torch.no_grad():
        loss = model(**encoding, labels=labels, context_mask=context).loss
        own_labels = labels.masked_fill(context.bool(), -100)
        assert loss == model(**encoding, labels=own_labels, context_mask=context).loss
        assert loss != model(**encoding, labels=labels).loss  # without the mask those labels would count
        tags = model.decode(**encoding, context_mask=context)
        assert [len(row) for row in tags] == own.word_mask.sum(1).tolist()
        emissions = model(**encoding, context_mask=context).emissions  # shape: (batch, seq_len, tags)
        word_emissions = gather_rows(emissions, own.positions)  # only the own words, gathered
        if model.config.use_crf:
            expected = model.crf.viterbi_tags(word_emissions, own.word_mask)
        else:
            expected = scheme_viterbi(word_emissions.log_softmax(-1), own.word_mask, model.layout.constraints)
    assert tags == [row[:length] for row, length in zip(expected.tolist(), own.word_mask.sum(1).tolist(),
                                                         strict=True)]


@pytest.mark.parametrize("model_class", [TokenClassificationModel, TokenClassificationModelCRF])
def test_eval_logits_give_word_decisions_and_continuations_inside(backbone, model_class):
    path, tokenizer = backbone
    torch.manual_seed(0)
    model = model_class.from_backbone(
        str(path), tokenizer, ID2LABEL, head="mlp", classifier_hidden_layers=[16]
    )
    with torch.no_grad():
        model.head.classifier.weight.mul_(50.0)
    model.eval()
    encoding = tokenizer(TEXTS, padding=True, return_tensors="pt")
    output = model(**encoding)
    word_tags = model.decode(encoding["input_ids"], encoding["attention_mask"])
    words = model.words(encoding["input_ids"], encoding["attention_mask"])
    argmax = output.logits.argmax(-1)
    continuation = {0: 0, 1: 2, 2: 2, 3: 4, 4: 4}
    for row, tags in enumerate(word_tags):
        starts = words.word_start[row].nonzero().flatten().tolist()
        assert argmax[row, starts].tolist() == tags
        for position in words.in_word[row].nonzero().flatten().tolist():
            word = int(words.word_index[row, position])
            if position not in starts:
                assert int(argmax[row, position]) == continuation[tags[word]]
    # constrained decoding (the default): the best path BIO allows
    if model_class is TokenClassificationModel:
        word_scores = output.emissions.log_softmax(-1)
        for r, tags in enumerate(word_tags):
            scores = word_scores[r, words.word_start[r]]  # shape: (words, tags)
            def bio_valid(path: list[int]) -> bool:  # I-X (ids 2, 4) only after B-X or I-X (ids 1, 2 / 3, 4)
                return all(
                    not (b in (2, 4) and a not in (b - 1, b)) for a, b in itertools.pairwise([0, *path])
                )

            assert bio_valid(tags), tags
            plain = scores.argmax(-1).tolist()
            if bio_valid(plain):  # the argmax path is allowed: nothing to mend
                assert tags == plain
            else:  # mended: an allowed path, scoring no higher than the (forbidden) argmax path
                assert sum(scores[i, t] for i, t in enumerate(tags)) <= sum(
                    scores[i, t] for i, t in enumerate(plain)
                )
    assert any(tag != 0 for tags in word_tags for tag in tags)


def test_from_backbone_keeps_pretrained_weights_and_freezes_on_request(backbone):
    path, tokenizer = backbone
    pretrained = AutoModel.from_pretrained(path)
    model = TokenClassificationModelCRF.from_backbone(str(path), tokenizer, ID2LABEL, freeze_backbone=True)
    for name, value in model.backbone.state_dict().items():
        torch.testing.assert_close(value, pretrained.state_dict()[name], msg=name)
    assert not any(parameter.requires_grad for parameter in model.backbone.parameters())
    assert all(parameter.requires_grad for parameter in model.head.parameters())
    assert model.crf.transitions.requires_grad
    assert model.config.use_crf and model.config.freeze_backbone
    assert int(model.token_classes.min()) >= 0


def test_config_validates_and_round_trips(backbone):
    path, _ = backbone
    backbone_config = AutoModel.from_pretrained(path).config.to_dict()
    config = CardioNERConfig(
        backbone_config=backbone_config, head="mlp", id2label=ID2LABEL, crf_reduction="sum"
    )
    again = CardioNERConfig.from_dict(config.to_dict())
    for key in ("head", "classifier_hidden_layers", "crf_reduction", "backbone_config", "id2label",
                "config_version"):
        assert getattr(again, key) == getattr(config, key), key
    assert again.build_backbone_config().hidden_size == 32
    with pytest.raises(ValueError, match="'cnnn'"):
        CardioNERConfig(backbone_config=backbone_config, head="cnnn")
    with pytest.raises(ValueError, match="'max'"):
        CardioNERConfig(backbone_config=backbone_config, crf_reduction="max")
    with pytest.raises(ValueError, match="3 values for 5 labels"):
        CardioNERConfig(backbone_config=backbone_config, id2label=ID2LABEL, class_weights=[1.0, 1.0, 1.0])


def test_model_without_token_classes_refuses_to_run(backbone):
    path, _ = backbone
    config = CardioNERConfig(
        backbone_config=AutoModel.from_pretrained(path).config.to_dict(), id2label=ID2LABEL
    )
    model = TokenClassificationModel(config)
    with pytest.raises(ValueError, match="token_classes is not set"):
        model(torch.tensor([[2, 10, 3]]))
    with pytest.raises(ValueError, match=r"labels shape \(1, 2\)"):
        model(torch.tensor([[2, 10, 3]]), labels=torch.tensor([[0, 1]]))


@pytest.mark.parametrize("use_crf", [False, True], ids=["softmax", "crf"])
def test_flat_models_take_labels_with_a_channel_dimension_and_without(backbone, use_crf):
    """Labels are (batch, seq_len, channels) for every model; a flat model has one channel and still takes the
    (batch, seq_len) labels Hugging Face's Trainer passes, with the same loss."""
    path, tokenizer = backbone
    torch.manual_seed(0)
    model = TokenClassificationModel.from_backbone(str(path), tokenizer, ID2LABEL, use_crf=use_crf).eval()
    encoding, labels, _ = batch_with_labels(model, tokenizer)
    flat = model(**encoding, labels=labels).loss
    channels = model(**encoding, labels=labels[..., None]).loss
    assert torch.equal(flat, channels) and flat.item() > 0
    with pytest.raises(ValueError, match=r"labels shape \(2, \d+, 2\)"):
        model(**encoding, labels=labels[..., None].expand(*labels.shape, 2))


def test_multilabel_models_take_labels_per_channel_only(backbone):
    path, tokenizer = backbone
    model = MultiLabelTokenClassificationModel.from_backbone(str(path), tokenizer, ID2LABEL).eval()
    encoding, labels, _ = batch_with_labels(model, tokenizer)
    channel_labels = labels.clamp(max=2)[..., None].expand(*labels.shape, 2)  # O/B/I in both channels
    assert model(**encoding, labels=channel_labels).loss.item() > 0
    with pytest.raises(ValueError, match=r"labels shape \(2, \d+\) != input_ids shape .*2 channels"):
        model(**encoding, labels=labels)


def test_the_exported_names_are_one_model_class_with_a_setting_fixed(backbone):
    """One forward, one decode: the named classes only fix use_crf / multi-label (what exports' auto_map and
    from_backbone's defaults need) and override nothing."""
    path, tokenizer = backbone
    named = (TokenClassificationModelCRF, MultiLabelTokenClassificationModel,
             MultiLabelTokenClassificationModelCRF)
    for cls in named:
        assert cls.__bases__ == (TokenClassificationModel,), cls
        overridden = {
            name
            for name, value in vars(cls).items()  # transformers copies config_class into each
            if not name.startswith("__") and getattr(TokenClassificationModel, name, None) is not value
        }
        assert overridden <= {"use_crf_by_class", "multilabel_by_class"}, (cls, overridden)
    decoders = {}
    for cls in (TokenClassificationModel, *named):
        model = cls.from_backbone(str(path), tokenizer, ID2LABEL)
        assert type(model) is cls and model_class_for(model.config) is cls
        decoders[cls.__name__] = type(model.decoder).__name__
    assert decoders == {"TokenClassificationModel": "SoftmaxDecoder",
                        "TokenClassificationModelCRF": "CRFDecoder",
                        "MultiLabelTokenClassificationModel": "SigmoidDecoder",
                        "MultiLabelTokenClassificationModelCRF": "CRFDecoder"}


def test_modeling_reads_top_to_bottom():
    """Every module-level name is defined before a definition that uses it, but for one factory: from_backbone
    returns the exported class ``model_class_for`` names, which follows those classes."""
    tree = ast.parse(MODELING_PATH.read_text())
    defined: dict[str, int] = {}
    for node in tree.body:
        targets = (
            [node] if isinstance(node, (ast.FunctionDef, ast.ClassDef)) else getattr(node, "targets", [])
        )
        for target in targets + ([node.target] if isinstance(node, ast.AnnAssign) else []):
            name = getattr(target, "name", None) or getattr(target, "id", None)
            if name:
                defined.setdefault(name, node.lineno)
    early = []
    for node in tree.body:
        for inner in ast.walk(node):
            if isinstance(inner, ast.arg):  # annotations are strings (from __future__ import annotations)
                continue
            if isinstance(inner, ast.Name) and isinstance(inner.ctx, ast.Load) and \
                    defined.get(inner.id, 0) > node.lineno:
                early.append((inner.id, getattr(node, "name", node.lineno)))
    annotation_only = {name for name, _ in early if name in ("CardioNERConfig", "TagLayout", "Words")}
    early = [(name, where) for name, where in early if name not in annotation_only]
    assert early == [("model_class_for", "TokenClassificationModel")]


def test_the_tag_grammar_is_defined_once():
    import cardioner.labels

    assert cardioner.labels.split_tag is split_tag and cardioner.labels.tags_to_entities is tags_to_entities
    assert split_tag("B-ID-SUJETO") == ("B", "ID-SUJETO") and split_tag("O") == ("O", None)
    for bad in ("LABEL_0", "B-", "X-DISO", "b-DISO"):
        with pytest.raises(ValueError, match=repr(bad)):
            split_tag(bad)


@pytest.mark.parametrize("model_class, settings", [
    (TokenClassificationModel, {"class_weights": [0.5, 1.0, 2.0, 1.5, 3.0], "label_smoothing": 0.1}),
    (TokenClassificationModel, {"class_weights": [0.5, 1.0, 2.0, 1.5, 3.0], "focal_gamma": 2.0}),
    (TokenClassificationModelCRF, {}),
    (TokenClassificationModelCRF, {"crf_reduction": "mean"}),
    (MultiLabelTokenClassificationModel, {"class_weights": [[1.0, 2.0, 3.0], [0.5, 1.5, 2.5]]}),
    (MultiLabelTokenClassificationModelCRF, {}),
], ids=["softmax-weighted-smoothed", "softmax-focal", "crf", "crf-per-sequence", "sigmoid-weighted",
        "multilabel-crf"])
def test_the_loss_of_a_batch_is_its_parts_losses_weighted_by_their_loss_weight(backbone, model_class,
                                                                                settings):
    """What several processes rely on: sum(loss_r * loss_weight_r) / sum(loss_weight_r) over the parts of a
    batch is the loss of the whole batch (each part padded on its own)."""
    path, tokenizer = backbone
    torch.manual_seed(0)
    model = model_class.from_backbone(str(path), tokenizer, ID2LABEL, **settings).eval()
    encoding, labels, _ = batch_with_labels(model, tokenizer)
    if model_class in (MultiLabelTokenClassificationModel, MultiLabelTokenClassificationModelCRF):
        labels = torch.stack([labels.clamp(max=2), (labels - 2).clamp(min=0, max=2)], -1)  # O/B/I per type
        labels = torch.where(labels[..., :1] == -100, -100, labels)
    whole = model(**encoding, labels=labels)
    parts = []
    for row in range(2):
        length = int(encoding["attention_mask"][row].sum())
        part = {key: value[row : row + 1, :length] for key, value in encoding.items()}
        parts.append(model(**part, labels=labels[row : row + 1, :length]))
    weights = torch.stack([part.loss_weight for part in parts])
    combined = (torch.stack([part.loss for part in parts]) * weights).sum() / weights.sum()
    torch.testing.assert_close(combined, whole.loss)
    torch.testing.assert_close(weights.sum(), whole.loss_weight)
