"""The confidence temperature: fitted on dev by the NLL of the gold tags (``calibration.fit_temperature``),
kept in the export's config (``confidence_temperature``), read wherever confidences are computed, and never
moving a decision; ``cardioner calibrate`` writes it into an export crash-safely and refuses bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from tiny import CORPUS, annotated_documents, tiny_backbone
from transformers import AutoModelForTokenClassification, AutoTokenizer
from typer.testing import CliRunner

from cardioner.calibration import WindowScores, fit_temperature, temperature_nll
from cardioner.cli import app
from cardioner.config import load_config
from cardioner.data.document import Document
from cardioner.data.io import write_corpus
from cardioner.errors import CardioNERError, ConfigError, CorpusError
from cardioner.export import load_model, save_model
from cardioner.inference import calibrate_path, load_predictor
from cardioner.modeling import CardioNERConfig, CRFDecoder, SoftmaxDecoder, TagLayout, span_confidence
from cardioner.training.build import fresh_predictor

LABELS = ["O", "B-X", "I-X", "B-Y", "I-Y"]
def decoder(kind: type, **settings):
    config = CardioNERConfig(id2label=dict(enumerate(LABELS)), label2id={t: i for i, t in enumerate(LABELS)},
                             use_crf=kind is CRFDecoder, **settings)
    return kind(config, TagLayout(LABELS, None))


def toy_windows(scale: float, seed: int = 0) -> WindowScores:
    """Windows whose gold tags are drawn from softmax(logits), and whose kept scores are scale * logits: a
    model over-confident by ``scale`` (> 1) or under-confident (< 1)."""
    generator = torch.Generator().manual_seed(seed)
    scores, gold, tags = [], [], []
    for _ in range(40):
        logits = torch.randn(30, 1, len(LABELS), generator=generator) * 2.0  # shape: (words, 1, tags)
        drawn = torch.multinomial(logits.softmax(-1).view(-1, len(LABELS)), 1, generator=generator)
        scores.append(logits * scale)
        gold.append(drawn.view(30, 1))
        tags.append((logits * scale).argmax(-1).tolist())
    return WindowScores([tags], [scores], [gold])


@pytest.mark.parametrize("scale", [3.0, 1 / 3])
def test_the_fitted_temperature_undoes_over_and_under_confidence_and_lowers_the_nll(scale):
    softmax = decoder(SoftmaxDecoder)
    fit = fit_temperature(softmax, toy_windows(scale))
    assert fit.temperature == pytest.approx(scale, rel=0.2)  # dividing by it gives back the drawing logits
    assert fit.nll_after < fit.nll_before and not fit.at_bound
    assert fit.words == 40 * 30
    for factor in (0.8, 1.25):  # a minimum: either side is worse
        assert temperature_nll(softmax, toy_windows(scale), fit.temperature * factor)[0] / fit.words > \
            fit.nll_after


def test_a_crf_temperature_is_the_minimum_of_the_gold_paths_nll():
    torch.manual_seed(0)
    crf = decoder(CRFDecoder)
    with torch.no_grad():
        crf.crf.transitions.normal_(0, 1)
    windows = toy_windows(4.0)
    fit = fit_temperature(crf, windows)
    grid = [temperature_nll(crf, windows, t)[0] / fit.words for t in (0.5, 1.0, 2.0, 4.0, 8.0)]
    assert fit.nll_after <= min(grid) + 1e-6 and fit.temperature > 1  # the scores were blown up: T > 1


def test_temperature_moves_confidences_never_tags():
    """Dividing a CRF's every score by T keeps its Viterbi path the most likely one; the decoders decode at T
    = 1 anyway. Confidences of the same path do change."""
    for kind in (SoftmaxDecoder, CRFDecoder):
        plain, tempered = decoder(kind), decoder(kind, confidence_temperature=2.5)
        tempered.crf = plain.crf
        if plain.crf is not None:
            with torch.no_grad():
                plain.crf.transitions.normal_(0, 1)
        emissions = torch.randn(2, 12, 1, len(LABELS)) * 3  # shape: (batch, words, channels, tags)
        mask = torch.ones(2, 12, dtype=torch.bool)
        if plain.crf is not None:
            tags = plain.crf.viterbi_tags(emissions.squeeze(2), mask)[..., None]  # shape: (2, 12, 1)
        else:
            tags = emissions.argmax(-1)  # shape: (2, 12, 1)
        low, high = plain.confidences(emissions, tags, mask), tempered.confidences(emissions, tags, mask)
        assert not torch.allclose(low, high)
        assert torch.equal(plain.confidences(emissions, tags, mask, 2.5), high)
        if plain.crf is not None:  # the CRF with every score divided by T decodes the same path
            scaled = decoder(CRFDecoder)
            with torch.no_grad():
                for mine, theirs in zip(scaled.crf.parameters(), plain.crf.parameters(), strict=True):
                    mine.copy_(theirs / 2.5)
            assert torch.equal(scaled.crf.viterbi_tags(emissions.squeeze(2) / 2.5, mask), tags.squeeze(-1))


@pytest.fixture(scope="module")
def exports(tmp_path_factory, one_thread) -> dict[str, Path]:
    """A tiny softmax and a tiny CRF export whose heads are spread (an untrained head predicts only O)."""
    root = tmp_path_factory.mktemp("calibrate")
    bert_dir = tiny_backbone("bert", root / "backbones")
    folders = {}
    for name, settings in (("softmax", {}), ("crf", {"model.use_crf": True})):
        config = load_config(None, {"model.model": str(bert_dir), "data.max_length": 16, "data.stride": 4,
                                    "data.overlaps": "longest", **settings})
        torch.manual_seed(0)
        predictor, _ = fresh_predictor(config, annotated_documents(), annotated_documents()[:3])
        torch.manual_seed(1)
        for parameter_name, parameter in predictor.model.named_parameters():
            if "classifier" in parameter_name:
                parameter.data.normal_(0.0, 2.0)
        folders[name] = save_model(predictor.model, predictor.tokenizer, root / name)
    return folders


def spans_of(model_dir: Path) -> list[tuple]:
    predicted = load_predictor(model_dir).predict(annotated_documents())
    return [(doc.id, s.start, s.end, s.label, s.score) for doc in predicted for s in doc.spans]


@pytest.mark.parametrize("kind", ["softmax", "crf"])
def test_calibrate_writes_the_temperature_into_the_export_and_leaves_every_span_in_place(exports, kind,
                                                                                       tmp_path):
    model_dir = tmp_path / kind
    shutil.copytree(exports[kind], model_dir)
    dev = tmp_path / "dev.jsonl"
    write_corpus(annotated_documents(), dev, "jsonl")
    before = spans_of(model_dir)
    report = calibrate_path(model_dir, dev, output=tmp_path / "report.json")
    assert report["temperature"] != 1.0 and report["nll_after"] <= report["nll_before"]
    assert report["previous_temperature"] == 1.0 and report["before"]["spans"] == report["after"]["spans"] > 0
    assert json.loads((tmp_path / "report.json").read_text())["temperature"] == report["temperature"]
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    assert config["confidence_temperature"] == report["temperature"]
    assert sorted(p.name for p in model_dir.iterdir()) == sorted(p.name for p in exports[kind].iterdir())
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging folder left behind
    after = spans_of(model_dir)
    assert [span[:4] for span in after] == [span[:4] for span in before]  # the same spans...
    assert [span[4] for span in after] != [span[4] for span in before]  # ...with other confidences
    # the key round-trips: cardioner's loader and the stock AutoModel (the export's own modeling.py) read it
    assert load_model(model_dir)[0].config.confidence_temperature == report["temperature"]
    remote = AutoModelForTokenClassification.from_pretrained(model_dir, trust_remote_code=True).eval()
    assert remote.config.confidence_temperature == report["temperature"]
    assert remote.span_score == ("product" if kind == "crf" else "geometric_mean")
    # the stock pipeline reads the eval logits: the same argmax (its entities), other probabilities
    plain = AutoModelForTokenClassification.from_pretrained(exports[kind], trust_remote_code=True).eval()
    inputs = AutoTokenizer.from_pretrained(model_dir)(CORPUS[0], return_tensors="pt")
    with torch.no_grad():
        tempered, original = remote(**inputs).logits, plain(**inputs).logits
    assert torch.equal(tempered.argmax(-1), original.argmax(-1))
    assert not torch.allclose(tempered.softmax(-1), original.softmax(-1), atol=1e-3)


def test_calibrate_records_its_fit_in_metrics_json_and_a_second_fit_replaces_the_first(exports, tmp_path):
    model_dir = tmp_path / "model"
    shutil.copytree(exports["softmax"], model_dir)
    (model_dir / "metrics.json").write_text(json.dumps({"dev": {"f1": 0.5}, "best_epoch": 2}))
    card = (model_dir / "README.md").read_bytes()
    first_dev, second_dev = tmp_path / "first" / "dev.jsonl", tmp_path / "second" / "dev.jsonl"
    write_corpus(annotated_documents(), first_dev, "jsonl")
    write_corpus(annotated_documents()[:4], second_dev, "jsonl")
    first = calibrate_path(model_dir, first_dev)
    second = calibrate_path(model_dir, second_dev)
    text = (model_dir / "metrics.json").read_text(encoding="utf-8")
    metrics = json.loads(text)
    assert metrics["dev"] == {"f1": 0.5} and metrics["best_epoch"] == 2  # the other keys are kept
    recorded = metrics["confidence_temperature"]
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    assert recorded["temperature"] == config["confidence_temperature"] == second["temperature"] != first[
        "temperature"]
    assert recorded == {key: second[key] for key in ("temperature", "nll_before", "nll_after", "words",
                                                     "at_bound")} | {
        "data": "second/dev.jsonl", "documents": 4, "previous_temperature": first["temperature"],
        "ece_before": second["before"]["ece"], "ece_after": second["after"]["ece"]}
    assert str(tmp_path) not in text  # the data by its name, never this machine's path
    assert (model_dir / "README.md").read_bytes() == card  # the card shows no calibration: nothing to redo


def test_a_crash_between_the_two_writes_leaves_config_and_metrics_as_they_were(exports, tmp_path,
                                                                              monkeypatch):
    model_dir = tmp_path / "model"
    shutil.copytree(exports["crf"], model_dir)
    dev = tmp_path / "dev.jsonl"
    write_corpus(annotated_documents(), dev, "jsonl")
    before = {name: (model_dir / name).read_bytes() for name in ("config.json", "metrics.json")}
    write_text = Path.write_text

    def crash_at_metrics(path: Path, *args, **kwargs):
        if path.name == "metrics.json":  # config.json is already written in the staging folder
            assert json.loads((path.parent / "config.json").read_text())["confidence_temperature"] != 1.0
            raise OSError("disk full")
        return write_text(path, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", crash_at_metrics)
    with pytest.raises(OSError, match="disk full"):
        calibrate_path(model_dir, dev)
    monkeypatch.undo()
    assert {name: (model_dir / name).read_bytes() for name in before} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dev.jsonl", "model"]  # no staging folder kept


def test_an_export_without_the_key_loads_at_temperature_one(exports, tmp_path):
    model_dir = tmp_path / "old"
    shutil.copytree(exports["softmax"], model_dir)
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    config.pop("confidence_temperature", None)
    (model_dir / "config.json").write_text(json.dumps(config), encoding="utf-8")
    assert load_model(model_dir)[0].config.confidence_temperature == 1.0
    with pytest.raises(ValueError, match="confidence_temperature must be a finite number > 0, got 0"):
        CardioNERConfig(confidence_temperature=0)


def test_calibrate_refuses_bad_input_naming_the_file_or_key(exports, tmp_path):
    model_dir = tmp_path / "model"
    shutil.copytree(exports["softmax"], model_dir)
    unannotated = tmp_path / "plain.jsonl"
    write_corpus([Document(d.id, d.text, []) for d in annotated_documents()], unannotated, "jsonl")
    with pytest.raises(CorpusError, match="no annotated spans") as error:
        calibrate_path(model_dir, unannotated)
    assert str(unannotated) in str(error.value)
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"id": "a", "text": "abc", "spans": [{"start": 0, "end": 9, "label": "X"}]}\n',
                      encoding="utf-8")
    with pytest.raises(CorpusError, match=r"broken\.jsonl"):
        calibrate_path(model_dir, broken)
    with pytest.raises(ConfigError, match="not an exported model folder"):
        calibrate_path(tmp_path, unannotated)
    dev = tmp_path / "dev.jsonl"
    write_corpus(annotated_documents(), dev, "jsonl")
    (model_dir / "modeling.py").write_text("# an old modeling.py, before temperatures\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"update_modeling is off, and .*modeling\.py predates confidence"):
        calibrate_path(model_dir, dev)
    assert json.loads((model_dir / "config.json").read_text())["confidence_temperature"] == 1.0  # untouched
    result = CliRunner().invoke(app, ["calibrate", "--model", str(model_dir), "--data", str(dev)])
    assert result.exit_code == 1 and "--update-modeling" in result.output and "Traceback" not in result.output
    result = CliRunner().invoke(app, ["calibrate", "--model", str(model_dir), "--data", str(dev),
                                      "--update-modeling"])
    assert result.exit_code == 0, result.output
    assert "confidence temperature" in result.output and "ECE" in result.output
    assert b"confidence_temperature" in (model_dir / "modeling.py").read_bytes()  # the installed one now
    assert isinstance(CorpusError("x"), CardioNERError)


def test_span_confidence_rules():
    rows = [[-0.1, -0.5, -0.2], [-0.3, -0.4, -0.6]]  # SPAN_OPEN, SPAN_CONTINUE, SPAN_CLOSE per word
    assert span_confidence(rows, 0, 1) == pytest.approx(torch.tensor(-0.1 - 0.4 - 0.6).exp().item())
    assert span_confidence(rows, 0, 1, "geometric_mean") == pytest.approx(
        torch.tensor((-0.1 - 0.4 - 0.6) / 3).exp().item())
    with pytest.raises(ValueError, match="rule must be one of"):
        span_confidence(rows, 0, 1, "mean")
