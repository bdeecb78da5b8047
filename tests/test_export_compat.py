"""Exports written by an earlier cardioner keep loading and give the same outputs (issue 16, Done-when 2).

tests/fixtures/exports holds tiny exports written before issue 16 rewrote modeling.py (linear, CRF,
multi-label sigmoid, multi-label CRF, a BiLSTM head with a BIOES CRF and learned layer mix, a wavelet KAN
head), each with its own modeling.py of that time, and what that code returned for three texts
(tests/fixtures/exports/make_exports.py says how they were made). Each must load

- with the installed classes (``cardioner.load_model``: old parameter names and config keys keep loading), and
- with ``AutoModelForTokenClassification.from_pretrained(..., trust_remote_code=True)`` in a fresh process
  that cannot import cardioner (the folder's old modeling.py under today's transformers), and
- once exported again with the installed classes, in that fresh process too (old weights, new modeling.py),

and give the recorded emissions and logits (to float noise), loss, word tags, spans and pipeline entities.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_export import reload_in_fresh_process

from cardioner.export import load_model, save_model

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "exports"
CASES = sorted(path.stem for path in (FIXTURES / "expected").glob("*.json"))
OUTPUTS = ("emissions", "logits", "channel_logits")
MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def expected(name: str) -> tuple[dict[str, torch.Tensor], dict]:
    tensors = load_file(FIXTURES / "expected" / f"{name}.safetensors")
    return tensors, json.loads((FIXTURES / "expected" / f"{name}.json").read_text(encoding="utf-8"))


def load_installed(folder: Path):
    """``load_model`` on an old export: it warns that the folder's modeling.py is not the installed one."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*exported with another modeling.py")
        return load_model(folder)


def test_the_fixture_set_covers_every_model_class():
    classes = {expected(name)[1]["class"] for name in CASES}
    assert classes == {"TokenClassificationModel", "TokenClassificationModelCRF",
                       "MultiLabelTokenClassificationModel", "MultiLabelTokenClassificationModelCRF"}
    assert len(CASES) == 6
    for name in CASES:
        assert sum(map(len, expected(name)[1]["decode_spans"])), f"{name}: no span, a vacuous comparison"


@pytest.mark.parametrize("name", CASES)
def test_old_export_loads_with_the_installed_classes_and_gives_the_recorded_outputs(name):
    tensors, recorded = expected(name)
    model, tokenizer = load_installed(FIXTURES / name)
    inputs = {key: tensors[key] for key in MODEL_INPUTS if key in tensors}
    encoding = tokenizer(recorded["texts"], padding=True, return_tensors="pt")
    for key, value in inputs.items():
        assert torch.equal(encoding[key], value), key  # the saved tokenizer still encodes as it did
    with torch.no_grad():
        output = model(**inputs, labels=tensors["labels"])
    for key in OUTPUTS:
        if key in tensors:
            torch.testing.assert_close(output[key], tensors[key], atol=1e-6, rtol=0, msg=key)
    torch.testing.assert_close(output.loss, tensors["loss"], atol=1e-6, rtol=1e-6)
    if tensors["labels"].dim() == 2:  # a flat model: its labels as one channel give the same loss
        with torch.no_grad():
            assert torch.equal(model(**inputs, labels=tensors["labels"][..., None]).loss, output.loss)
    assert model.decode(**inputs) == recorded["decode"]
    spans = model.decode_spans(inputs["input_ids"], inputs["attention_mask"], tensors["offset_mapping"],
                               inputs.get("token_type_ids"))
    assert [[list(span) for span in row] for row in spans] == recorded["decode_spans"]


@pytest.fixture(scope="module")
def remote_report(tmp_path_factory):
    """Every fixture as it is, and exported again with the installed classes, loaded in one fresh process."""
    root = tmp_path_factory.mktemp("compat")
    exports = {name: FIXTURES / name for name in CASES}
    for name in CASES:
        model, tokenizer = load_installed(FIXTURES / name)
        exports[f"{name}-again"] = save_model(model, tokenizer, root / "again" / name)
    texts = expected(CASES[0])[1]["texts"]
    assert all(expected(name)[1]["texts"] == texts for name in CASES)
    workdir = root / "remote"
    return workdir, reload_in_fresh_process(exports, workdir, texts=texts)


@pytest.mark.parametrize("again", [False, True], ids=["old_modeling", "exported_again"])
@pytest.mark.parametrize("name", CASES)
def test_old_export_loads_without_cardioner_and_gives_the_recorded_outputs(remote_report, name, again):
    workdir, report = remote_report
    assert report["cardioner_importable"] is False
    case = f"{name}-again" if again else name
    tensors, recorded = expected(name)
    remote = report["cases"][case]
    assert remote["module"].startswith("transformers_modules"), remote["module"]  # the folder's code ran
    assert remote["class"] == recorded["class"]
    theirs = torch.load(workdir / f"{case}.pt")
    for key in OUTPUTS:
        assert (key in theirs) == (key in tensors), key
        if key in tensors:
            torch.testing.assert_close(theirs[key], tensors[key], atol=1e-6, rtol=0, msg=key)
    assert remote["decode"] == recorded["decode"]
    assert remote["spans"] == recorded["decode_spans"]
    assert remote["entities"] == recorded["pipeline"]
    if not again:  # the fixture still carries the modeling.py it was written with
        source = (FIXTURES / name / "modeling.py").read_bytes()
        assert hashlib.sha256(source).hexdigest() == recorded["modeling_sha256"]
