"""Export round trips: every tiny backbone × head × CRF,
reloaded offline in a fresh process without cardioner.

One subprocess handles all exports (issue 3, Done-when 3 and 4): it loads each folder with
``AutoModelForTokenClassification.from_pretrained(dir, trust_remote_code=True)`` and with the stock pipeline,
and writes logits, Viterbi paths and entities for the parent to compare with its own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest
import torch
from tiny import available_kinds, tiny_backbone
from transformers import AutoModelForTokenClassification, AutoTokenizer

from cardioner.errors import ConfigError
from cardioner.export import load_model, save_model
from cardioner.modeling import (
    TokenClassificationModel,
    TokenClassificationModelCRF,
    build_token_classes,
    force_argmax,
    split_tag,
    word_start_mask,
)

ID2LABEL = {0: "O", 1: "B-DIS", 2: "I-DIS", 3: "B-DRUG", 4: "I-DRUG"}
TEXTS = [
    "The patient was admitted with acute myocardial infarction and chest pain.",
    "Aspirin 100 mg daily; heparin was stopped (bleeding risk).",
    "El paciente presenta dolor torácico y disnea.",
]
CASES = [
    (kind, head, use_crf)
    for kind in available_kinds()
    for head in ("linear", "mlp")
    for use_crf in (False, True)
]


def case_name(kind: str, head: str, use_crf: bool) -> str:
    return f"{kind}-{head}-{'crf' if use_crf else 'softmax'}"


def word_spans(tokenizer, text: str) -> list[tuple[int, int]]:
    """Character span of each word (first subword's start,
    last subword's end), words as modeling.py defines them."""
    encoding = tokenizer(text, return_offsets_mapping=True, return_tensors="pt")
    classes = build_token_classes(tokenizer)[encoding["input_ids"]]
    in_word, word_start = word_start_mask(classes, encoding["attention_mask"])
    spans: list[list[int]] = []
    for position, (start, end) in enumerate(encoding["offset_mapping"][0].tolist()):
        if word_start[0, position]:
            spans.append([start, end])
        elif in_word[0, position]:
            spans[-1][1] = end
    return [tuple(span) for span in spans]


def entities_from_word_tags(tags: list[str], spans: list[tuple[int, int]]) -> list[tuple[str, int, int]]:
    """Entities as the pipeline's "simple" grouping makes
    them from word tags (a new B- or type starts one)."""
    entities: list[list] = []
    previous_type = None
    for tag, (start, end) in zip(tags, spans, strict=True):
        prefix, entity_type = split_tag(tag)
        if prefix == "O":
            previous_type = None
            continue
        if prefix == "B" or entity_type != previous_type:
            entities.append([entity_type, start, end])
        else:
            entities[-1][2] = end
        previous_type = entity_type
    return [tuple(entity) for entity in entities]


def train_steps(model, tokenizer, steps: int = 3) -> None:
    """A few optimiser steps on random (valid BIO) word tags."""
    encoding = tokenizer(TEXTS, padding=True, return_tensors="pt")
    classes = build_token_classes(tokenizer)[encoding["input_ids"]]
    _, word_start = word_start_mask(classes, encoding["attention_mask"])
    generator = torch.Generator().manual_seed(0)
    random_tags = torch.randint(0, 5, word_start.shape, generator=generator)
    labels = torch.where(word_start, random_tags, torch.full_like(random_tags, -100))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(steps):
        loss = model(**encoding, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()


def build_export(
    kind: str,
    head: str,
    use_crf: bool,
    backbone_dir: Path,
    export_root: Path,
    name: str | None = None,
    **settings,
) -> Path:
    """A briefly trained model exported under ``export_root/name``
    (``settings``: more CardioNERConfig arguments)."""
    tokenizer = AutoTokenizer.from_pretrained(backbone_dir)
    torch.manual_seed(0)
    model = TokenClassificationModel.from_backbone(
        str(backbone_dir),
        tokenizer,
        ID2LABEL,
        head=head,
        use_crf=use_crf,
        classifier_hidden_layers=[16],
        **settings,
    )
    train_steps(model, tokenizer)
    # a barely trained model: spread its emissions so that entities of both types appear
    with torch.no_grad():
        model.head.classifier.weight.mul_(40.0)
        model.head.classifier.bias.copy_(torch.tensor([0.0, 0.3, 0.3, 0.3, 0.3]))
    folder = export_root / (name or case_name(kind, head, use_crf))
    return save_model(model, tokenizer, folder, metrics={"dev": {"f1": 0.5}})


REMOTE_SCRIPT = textwrap.dedent("""
    import json, sys, torch


    class BlockCardioner:  # an editable install puts cardioner on every path: make it unimportable here
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] == "cardioner":
                raise ImportError(f"{name} is blocked in the reload process")


    sys.meta_path.insert(0, BlockCardioner())
    try:
        import cardioner  # noqa: F401
        cardioner_importable = True
    except ImportError:
        cardioner_importable = False
    from transformers import AutoModelForTokenClassification, AutoTokenizer, pipeline

    request = json.load(open(sys.argv[1]))
    report = {"cardioner_importable": cardioner_importable, "cases": {}, "untrusted": {}}
    for name, folder in request["exports"].items():
        model = AutoModelForTokenClassification.from_pretrained(folder, trust_remote_code=True)
        tokenizer = AutoTokenizer.from_pretrained(folder)
        encoding = tokenizer(request["texts"], padding=True, return_offsets_mapping=True, return_tensors="pt")
        offsets = encoding.pop("offset_mapping")
        with torch.no_grad():
            output = model(**encoding)
        ner = pipeline("token-classification", model=folder, trust_remote_code=True,
                       aggregation_strategy="simple")
        entities = [[[e["entity_group"], e["start"], e["end"]] for e in ner(text)]
                    for text in request["texts"]]
        tensors = {key: value for key, value in output.items() if torch.is_tensor(value)}
        torch.save(tensors, f"{request['out']}/{name}.pt")
        report["cases"][name] = {
            "class": type(model).__name__,
            "module": type(model).__module__,
            "decode": model.decode(encoding["input_ids"], encoding["attention_mask"]),
            "spans": model.decode_spans(encoding["input_ids"], encoding["attention_mask"], offsets),
            "entities": entities,
        }
    for name, folder in request["untrusted"].items():
        for trust in (None, False):
            try:
                AutoModelForTokenClassification.from_pretrained(folder, trust_remote_code=trust)
                outcome = "loaded"
            except Exception as error:  # noqa: BLE001 - the test inspects what was raised
                outcome = f"{type(error).__name__}: {error}"
            report["untrusted"][f"{name}/{trust}"] = outcome
    json.dump(report, open(f"{request['out']}/report.json", "w"))
    """)


def reload_in_fresh_process(
    exports: dict[str, Path],
    workdir: Path,
    untrusted: dict[str, Path] | None = None,
    texts: list[str] = TEXTS,
) -> dict:
    """Load every export in one fresh, offline process that cannot import cardioner (REMOTE_SCRIPT).

    Args:
        exports: case name -> export folder; each one's logits/emissions land in ``workdir/<name>.pt``.
        workdir: an empty folder for the request, the script and its outputs.
        untrusted: case name -> folder to load without ``trust_remote_code`` (the outcome is reported).
        texts: the texts each model reads.

    Returns:
        the report: {"cardioner_importable", "cases": {name: {class, module, decode, entities}}, "untrusted"}.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    request = {
        "exports": {name: str(path) for name, path in exports.items()},
        "untrusted": {name: str(path) for name, path in (untrusted or {}).items()},
        "texts": texts,
        "out": str(workdir),
    }
    (workdir / "request.json").write_text(json.dumps(request))
    (workdir / "remote.py").write_text(REMOTE_SCRIPT)
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PYTHON", "HF_", "TRANSFORMERS_"))
    }
    env.update(
        HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_HOME=str(workdir / "hf_home"), PYTHONNOUSERSITE="1"
    )
    result = subprocess.run(
        [sys.executable, str(workdir / "remote.py"), str(workdir / "request.json")],
        cwd=workdir,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads((workdir / "report.json").read_text())


@pytest.fixture(scope="module")
def round_trip(tmp_path_factory):
    """Build every export here, load them all in one fresh offline process without cardioner."""
    root = tmp_path_factory.mktemp("exports")
    backbones = {kind: tiny_backbone(kind, root / "backbones") for kind in available_kinds()}
    exports = {case_name(*case): build_export(*case, backbones[case[0]], root / "models") for case in CASES}
    workdir = root / "remote"
    untrusted = {
        name: exports[name] for name in (case_name("bert", "linear", True), case_name("xlmr", "mlp", False))
    }
    return exports, workdir, reload_in_fresh_process(exports, workdir, untrusted)


def test_remote_process_cannot_import_cardioner(round_trip):
    _, _, report = round_trip
    assert report["cardioner_importable"] is False


@pytest.mark.parametrize("case", CASES, ids=[case_name(*case) for case in CASES])
def test_export_reloads_identically_without_cardioner(round_trip, case):
    exports, workdir, report = round_trip
    name = case_name(*case)
    check_remote_reload(exports[name], workdir / f"{name}.pt", report["cases"][name], use_crf=case[2])


def check_remote_reload(folder: Path, tensors_path: Path, remote: dict, use_crf: bool) -> None:
    """The fresh process ran the folder's modeling.py and got
    our logits, Viterbi paths and pipeline entities."""
    # the folder's modeling.py ran
    assert remote["module"].startswith("transformers_modules"), remote["module"]
    assert remote["class"] == ("TokenClassificationModelCRF" if use_crf else "TokenClassificationModel")

    model, tokenizer = load_model(folder)
    encoding = tokenizer(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        ours = model(**encoding)
    theirs = torch.load(tensors_path)
    torch.testing.assert_close(theirs["emissions"], ours.emissions, atol=1e-6, rtol=0)
    torch.testing.assert_close(theirs["logits"], ours.logits, atol=1e-6, rtol=0)

    word_tags = model.decode(encoding["input_ids"], encoding["attention_mask"])
    assert remote["decode"] == word_tags
    expected = [
        entities_from_word_tags([ID2LABEL[tag] for tag in tags], word_spans(tokenizer, text))
        for tags, text in zip(word_tags, TEXTS, strict=True)
    ]
    assert [[tuple(entity) for entity in entities] for entities in remote["entities"]] == expected
    assert any(expected), "no entity decoded: the comparison would be vacuous"


def test_loading_without_trust_remote_code_fails_loudly(round_trip):
    _, _, report = round_trip
    assert len(report["untrusted"]) == 4
    for key, outcome in report["untrusted"].items():
        assert outcome != "loaded", key
        assert "trust_remote_code" in outcome, (key, outcome)


def test_export_folder_contents(round_trip):
    exports, _, _ = round_trip
    folder = exports[case_name("bert", "mlp", True)]
    config = json.loads((folder / "config.json").read_text())
    assert config["auto_map"] == {
        "AutoConfig": "modeling.CardioNERConfig",
        "AutoModelForTokenClassification": "modeling.TokenClassificationModelCRF",
    }
    assert config["backbone_config"]["model_type"] == "bert"
    source = (Path(__file__).parents[1] / "cardioner" / "modeling.py").read_bytes()
    assert (folder / "modeling.py").read_bytes() == source
    import hashlib

    assert config["modeling_sha256"] == hashlib.sha256(source).hexdigest()
    assert config["cardioner_version"]
    assert (folder / "model.safetensors").is_file() and not list(folder.glob("*.bin"))
    for name in ("training_config.yaml", "metrics.json", "README.md", "tokenizer.json"):
        assert (folder / name).is_file(), name
    card = (folder / "README.md").read_text()
    assert "trust_remote_code=True" in card and "cardioner.load_model" in card and "B-DIS" in card
    assert json.loads((folder / "metrics.json").read_text()) == {"dev": {"f1": 0.5}}
    # transformers 5 names a tokenizers-object tokenizer TokenizersBackend, a class 4.5x lacks
    tokenizer_class = json.loads((folder / "tokenizer_config.json").read_text())["tokenizer_class"]
    assert tokenizer_class == "PreTrainedTokenizerFast"
    # and the config names it: transformers 4.5x's pipeline(model=folder) loads no tokenizer otherwise
    assert config["tokenizer_class"] == "PreTrainedTokenizerFast"


def test_load_model_warns_on_edited_modeling_file(round_trip, tmp_path):
    exports, _, _ = round_trip
    import shutil

    copy = tmp_path / "edited"
    shutil.copytree(exports[case_name("bert", "linear", False)], copy)
    with open(copy / "modeling.py", "a") as handle:
        handle.write("\n# edited\n")
    with pytest.warns(UserWarning, match="sha256"):
        load_model(copy)


@pytest.mark.parametrize("lost", ["tokenizer.json", "model.safetensors"])
def test_an_export_missing_a_file_is_refused_naming_the_folder_and_the_file(tmp_path, lost):
    backbone = tiny_backbone("bert", tmp_path / "backbones")
    tokenizer = AutoTokenizer.from_pretrained(backbone)
    copy = save_model(TokenClassificationModel.from_backbone(str(backbone), tokenizer, ID2LABEL), tokenizer,
                      tmp_path / "copied")
    (copy / lost).unlink()  # a copy that left one file behind
    with pytest.raises(ConfigError, match=f"copied: the export has no {lost}"):
        load_model(copy)


def test_save_model_replaces_a_folder_only_when_complete(tmp_path):
    backbone = tiny_backbone("bert", tmp_path / "backbones")
    tokenizer = AutoTokenizer.from_pretrained(backbone)
    model = TokenClassificationModelCRF.from_backbone(str(backbone), tokenizer, ID2LABEL)
    target = tmp_path / "model"
    save_model(model, tokenizer, target)
    before = (target / "model.safetensors").read_bytes()

    class BrokenTokenizer:
        def save_pretrained(self, path):
            raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        save_model(model, BrokenTokenizer(), target)
    assert (target / "model.safetensors").read_bytes() == before  # the old export is untouched
    assert sorted(path.name for path in tmp_path.iterdir()) == ["backbones", "model"]  # no staging leftovers

    with torch.no_grad():
        model.crf.transitions.add_(1.0)
    save_model(model, tokenizer, target)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        reloaded, _ = load_model(target)
    torch.testing.assert_close(reloaded.crf.transitions, model.crf.transitions)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_loads_and_exports_run_in_one_dtype(tmp_path, dtype):
    """Loading with ``dtype=`` and exporting a model cast
    with ``.to()`` give a backbone in the head's dtype."""
    backbone = tiny_backbone("bert", tmp_path / "backbones")
    folder = build_export("bert", "mlp", True, backbone, tmp_path / "exports")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    encoding = tokenizer(TEXTS, padding=True, return_tensors="pt")
    reference = AutoModelForTokenClassification.from_pretrained(folder, trust_remote_code=True).eval()
    loaded = AutoModelForTokenClassification.from_pretrained(
        folder, trust_remote_code=True, dtype=dtype
    ).eval()
    assert {parameter.dtype for parameter in loaded.parameters()} == {dtype}
    with torch.no_grad():
        emissions = loaded(**encoding).logits
    assert emissions.dtype == dtype and torch.isfinite(emissions).all()
    words = (encoding["input_ids"], encoding["attention_mask"])
    assert loaded.decode(*words) == reference.decode(*words)  # wide margins: precision does not flip a tag

    own, _ = load_model(folder)  # save_model takes cardioner's classes, not the folder's copy
    cast = save_model(own.to(dtype), tokenizer, tmp_path / "cast")
    reloaded = AutoModelForTokenClassification.from_pretrained(cast, trust_remote_code=True).eval()
    assert {parameter.dtype for parameter in reloaded.parameters()} == {dtype}
    assert reloaded.decode(*words) == loaded.decode(*words)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_force_argmax_wins_in_every_precision(dtype):
    """The raised tag becomes the strict argmax even where
    top + margin rounds back to top (bf16: 4 + 1e-3 = 4)."""
    rows = torch.tensor([[4.0, 1.0, 4.0], [0.0, 2.0, -1.0]], dtype=dtype)
    raised = force_argmax(rows, torch.tensor([2, 1]))
    assert raised.argmax(-1).tolist() == [2, 1]
    assert raised[0, 2] > 4.0 and raised[0, :2].tolist() == [4.0, 1.0]
    assert raised[1].tolist() == [0.0, 2.0, -1.0]  # already the argmax: unchanged


@pytest.mark.parametrize("use_crf", [False, True])
def test_every_pipeline_aggregation_strategy_gives_the_decoded_spans(tmp_path, use_crf):
    """WordPiece (words split into many subwords by the tiny vocabulary): simple, first, max and average all
    give the entities decode_spans gives."""
    from transformers import pipeline

    backbone = tiny_backbone("bert", tmp_path / "backbones")
    folder = build_export("bert", "linear", use_crf, backbone, tmp_path / "exports")
    model = AutoModelForTokenClassification.from_pretrained(folder, trust_remote_code=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    texts = [*TEXTS, "No history of diabetes mellitus, hypertension or heart failure.",
             "She denies fever, cough, or recent travel; metoprolol was increased."]
    expected = []
    for text in texts:
        encoding = tokenizer([text], return_offsets_mapping=True, return_tensors="pt")
        offsets = encoding.pop("offset_mapping")
        expected.append(
            sorted(model.decode_spans(encoding["input_ids"], encoding["attention_mask"], offsets)[0])
        )
    assert sum(map(len, expected)) >= 5  # not vacuous
    assert any(
        len(tokenizer.tokenize(text[start:end])) > 2
        for text, spans in zip(texts, expected, strict=True)
        for start, end, _ in spans
    )  # entities made of several subwords
    for strategy in ("simple", "first", "max", "average"):
        ner = pipeline(
            "token-classification", model=model, tokenizer=tokenizer, aggregation_strategy=strategy
        )
        found = [sorted((e["start"], e["end"], e["entity_group"]) for e in ner(text)) for text in texts]
        assert found == expected, strategy


def test_save_model_replaces_only_an_empty_folder_or_an_earlier_export(tmp_path):
    backbone = tiny_backbone("bert", tmp_path / "backbones")
    tokenizer = AutoTokenizer.from_pretrained(backbone)
    model = TokenClassificationModelCRF.from_backbone(str(backbone), tokenizer, ID2LABEL)
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "train.jsonl").write_text('{"id": "a", "text": "x", "spans": []}\n', encoding="utf-8")
    with pytest.raises(ValueError, match="neither empty nor a cardioner export"):
        save_model(model, tokenizer, corpus)
    assert [p.name for p in corpus.iterdir()] == ["train.jsonl"]  # nothing deleted, nothing added
    # a backbone is not an export
    (corpus / "config.json").write_text('{"model_type": "bert"}', encoding="utf-8")
    with pytest.raises(ValueError, match="neither empty nor a cardioner export"):
        save_model(model, tokenizer, corpus)
    empty = tmp_path / "empty"
    empty.mkdir()
    save_model(model, tokenizer, empty)
    save_model(model, tokenizer, empty)  # now an export: replaced
    assert json.loads((empty / "config.json").read_text())["model_type"] == "cardioner"
    # no staging leftovers
    assert sorted(p.name for p in tmp_path.iterdir()) == ["backbones", "corpus", "empty"]


def test_save_model_refuses_the_current_folder(tmp_path, monkeypatch):
    """An export replaces its folder as a whole: never the folder the process (and its user) stands in."""
    backbone = tiny_backbone("bert", tmp_path / "backbones")
    tokenizer = AutoTokenizer.from_pretrained(backbone)
    model = TokenClassificationModel.from_backbone(str(backbone), tokenizer, ID2LABEL)
    (tmp_path / "here" / "deeper").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "here" / "deeper")
    for output in (".", "..", str(tmp_path / "here")):
        with pytest.raises(ValueError, match="is the current folder or holds it"):
            save_model(model, tokenizer, output)
    assert save_model(model, tokenizer, "model").resolve() == tmp_path / "here" / "deeper" / "model"
    assert sorted(p.name for p in (tmp_path / "here").iterdir()) == ["deeper"]
