"""scripts/viterbi_predict.py, the copyable inference script: same
spans as ``cardioner predict``, without cardioner.

A tiny CRF model trained for a few steps on the shipped NCBI sample, its emissions spread so that it predicts
many entities of several types. The script runs in a fresh process where ``import cardioner``
fails and the hub is offline; ``cardioner predict`` runs through the CLI in this process.
Small windows (24 subwords, stride 8) make a long document span hundreds of windows. The
script cuts windows exactly as cardioner's Encoder does (whole words, same packing, same
merge rule, same batching order), so the spans are expected to be equal, not merely close.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tiny import CORPUS, load_script, tiny_backbone, tiny_tokenizer
from typer.testing import CliRunner

from cardioner.cli import app
from cardioner.config import config_from_dict
from cardioner.data import read_corpus
from cardioner.data.common import read_text
from cardioner.data.document import Document
from cardioner.data.encoding import Encoder
from cardioner.export import save_model, update_export
from cardioner.labels import LabelSet
from cardioner.modeling import build_token_classes
from cardioner.training.trainer import ModelTrainer

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "examples" / "ncbi_sample"
SCRIPT = REPO / "scripts" / "viterbi_predict.py"
WINDOWS = ["--max-length", "24", "--stride", "8"]
SHORT_TEXTS = {
    "short_1": "The patient has Duchenne muscular dystrophy and type 2 diabetes.",
    "short_2": "Ataxia-telangiectasia (A-T) is a recessive disorder.",
    "short_3": "No evidence of breast cancer\nor ovarian cancer in the family.",
    "empty": "",
}




pytestmark = pytest.mark.usefixtures("one_thread")

@pytest.fixture(scope="module")
def export(one_thread, tmp_path_factory) -> Path:
    """A tiny BERT + linear head + CRF, 6 optimiser steps on 12
    NCBI sample abstracts, emissions spread out."""
    root = tmp_path_factory.mktemp("script_model")
    train, _ = read_corpus(SAMPLE / "train")
    config = config_from_dict({
        "data": {"max_length": 64, "stride": 16},
        "model": {"model": str(tiny_backbone("bert", root)), "use_crf": True},
        "training": {"epochs": 1, "max_steps": 6, "batch_size": 8, "lr": 1e-3, "seed": 5},
    })
    trainer = ModelTrainer(config)
    trainer.train(train[:12])
    # a barely trained model predicts O: spread its emissions so that many entities appear
    with torch.no_grad():
        noise = torch.randn(
            trainer.model.head.classifier.weight.shape, generator=torch.Generator().manual_seed(0)
        )
        trainer.model.head.classifier.weight.add_(0.5 * noise)
    return save_model(trainer.model, trainer.predictor.tokenizer, root / "model")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    """A folder with short documents and one long document (every
    test abstract, ~600 windows), and a JSONL."""
    root = tmp_path_factory.mktemp("script_inputs")
    folder = root / "texts"
    (folder / "sub").mkdir(parents=True)
    for name, text in SHORT_TEXTS.items():
        (folder / f"{name}.txt").write_text(text, encoding="utf-8")
    long_text = "\n\n".join(read_text(path) for path in sorted((SAMPLE / "test").glob("*.txt")))
    (folder / "sub" / "long.txt").write_text(long_text, encoding="utf-8", newline="")
    jsonl = root / "docs.jsonl"
    records = [{"id": name, "text": text} for name, text in SHORT_TEXTS.items()] + [
        {"text": long_text[:3000]}
    ]
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return {"folder": folder, "jsonl": jsonl}


def run_script(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    """The script in a fresh process: offline, and ``import cardioner`` raises ImportError."""
    blocker = tmp_path / "no_cardioner"
    blocker.mkdir(exist_ok=True)
    (blocker / "cardioner.py").write_text('raise ImportError("cardioner is not importable in this test")\n')
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PYTHON", "HF_", "TRANSFORMERS_"))
    }
    env.update(
        PYTHONPATH=str(blocker),
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        HF_HOME=str(tmp_path / "hf"),
        TOKENIZERS_PARALLELISM="false",
        OMP_NUM_THREADS="1",
    )
    probe = subprocess.run(
        [sys.executable, "-c", "import cardioner"], env=env, cwd=tmp_path, capture_output=True
    )
    assert probe.returncode != 0, "cardioner must not be importable where the script runs"
    return subprocess.run([sys.executable, str(SCRIPT), *args], env=env, cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)



def cardioner_predict(*args: str) -> None:
    result = CliRunner().invoke(app, ["predict", *args])
    assert result.exit_code == 0, result.output


def spans_by_document(path: Path, format: str | None = None) -> dict[str, list[tuple[int, int, str]]]:
    docs, _ = read_corpus(path, format=format)
    return {doc.id: sorted((s.start, s.end, s.label) for s in doc.spans) for doc in docs}


def test_script_spans_equal_cardioner_predict_on_short_and_long_documents(export, inputs, tmp_path):
    result = run_script(tmp_path, "--model", str(export), "--input", str(inputs["folder"]),
                        "--output", str(tmp_path / "script"), "--format", "brat", *WINDOWS)
    assert result.returncode == 0, result.stderr[-3000:]
    cardioner_predict(
        "--model",
        str(export),
        "--input",
        str(inputs["folder"]),
        "--output",
        str(tmp_path / "cli"),
        "--format",
        "brat",
        *WINDOWS,
    )

    expected, got = spans_by_document(tmp_path / "cli"), spans_by_document(tmp_path / "script")
    assert set(got) == set(expected) == {*SHORT_TEXTS, "sub/long"}
    # not vacuous
    assert len(expected["sub/long"]) > 50 and sum(len(expected[name]) for name in SHORT_TEXTS) > 5
    for name in SHORT_TEXTS:
        assert got[name] == expected[name], name
    shared = set(got["sub/long"]) & set(expected["sub/long"])
    assert len(shared) >= 0.95 * max(len(got["sub/long"]), len(expected["sub/long"]))
    assert got["sub/long"] == expected["sub/long"]  # windows are cut the same way: exact, not just >= 95%

    for name in (*SHORT_TEXTS, "sub/long"):  # the text is copied byte for byte; offsets index it
        text = (tmp_path / "script" / f"{name}.txt").read_bytes().decode("utf-8")
        assert text == read_text(inputs["folder"] / f"{name}.txt", allow_empty=True)
        assert all(text[s:e].strip() == text[s:e] != "" for s, e, _ in got[name])


def test_script_reads_jsonl_and_writes_tsv_like_cardioner(export, inputs, tmp_path):
    result = run_script(tmp_path, "--model", str(export), "--input", str(inputs["jsonl"]),
                        "--output", str(tmp_path / "script.tsv"), "--format", "tsv", *WINDOWS)
    assert result.returncode == 0, result.stderr[-3000:]
    cardioner_predict(
        "--model",
        str(export),
        "--input",
        str(inputs["jsonl"]),
        "--output",
        str(tmp_path / "cli.tsv"),
        "--format",
        "tsv",
        *WINDOWS,
    )
    # the same spans with the same confidences (the score column, 4 decimals)
    script_tsv = (tmp_path / "script.tsv").read_text(encoding="utf-8")
    assert script_tsv.startswith("filename\tlabel\tstart_span\tend_span\ttext\tscore\n")
    assert script_tsv == (tmp_path / "cli.tsv").read_text(encoding="utf-8")
    # a record without id: FILE#LINE
    assert "docs#5\t" in (tmp_path / "script.tsv").read_text(encoding="utf-8")


def scored_spans(jsonl: Path) -> list[list[tuple]]:
    """(start, end, label, score) of each span of each record of a JSONL output."""
    return [[(s["start"], s["end"], s["label"], s["score"]) for s in json.loads(line)["spans"]]
            for line in jsonl.read_text(encoding="utf-8").splitlines()]


def test_script_span_confidences_equal_cardioner_predict_after_calibration(export, inputs, tmp_path):
    """With a confidence temperature in the export's config, the script (the export's own modeling.py) and
    ``cardioner predict`` (the installed classes) give the same spans and the same, changed, confidences."""
    calibrated = tmp_path / "calibrated"
    shutil.copytree(export, calibrated)
    update_export(calibrated, {"confidence_temperature": 2.5})
    outputs = {}
    for name, model in (("plain", export), ("calibrated", calibrated)):
        result = run_script(tmp_path, "--model", str(model), "--input", str(inputs["jsonl"]),
                            "--output", str(tmp_path / f"script-{name}.jsonl"), "--format", "jsonl", *WINDOWS)
        assert result.returncode == 0, result.stderr[-3000:]
        cardioner_predict("--model", str(model), "--input", str(inputs["jsonl"]), "--output",
                          str(tmp_path / f"cli-{name}.jsonl"), "--format", "jsonl", *WINDOWS)
        outputs[name] = scored_spans(tmp_path / f"script-{name}.jsonl")
        assert outputs[name] == scored_spans(tmp_path / f"cli-{name}.jsonl"), name
    plain = [span for doc in outputs["plain"] for span in doc]
    tempered = [span for doc in outputs["calibrated"] for span in doc]
    assert [span[:3] for span in plain] == [span[:3] for span in tempered] and len(plain) > 5  # same spans
    assert sum(a[3] != b[3] for a, b in zip(plain, tempered, strict=True)) > len(plain) // 2  # scores moved


def test_script_rejects_a_folder_that_is_not_a_model(tmp_path):
    result = run_script(
        tmp_path, "--model", str(tmp_path), "--input", str(tmp_path), "--output", str(tmp_path / "o")
    )
    assert result.returncode != 0
    assert "not a model folder" in result.stderr and "Traceback" not in result.stderr


def test_script_replaces_no_file_and_leaves_no_partial_output(export, inputs, tmp_path):
    """An existing output (a gold brat folder, a JSONL), the input itself or a folder around it is refused
    before the model loads and left byte for byte; a new output and an empty folder are written whole."""
    gold = tmp_path / "gold"
    gold.mkdir()
    (gold / "a.txt").write_text("Hello big world.", encoding="utf-8")
    (gold / "a.ann").write_text("T1\tX 0 5\tHello\nR1\tRel Arg1:T1 Arg2:T1\n", encoding="utf-8")
    earlier = tmp_path / "earlier.jsonl"
    earlier.write_text('{"id": "x", "text": "mine"}\n', encoding="utf-8")
    before = {path: path.read_bytes() for path in (gold / "a.txt", gold / "a.ann", earlier, inputs["jsonl"])}
    refused = [("brat", gold, inputs["folder"], "exists"), ("jsonl", earlier, inputs["jsonl"], "exists"),
               ("jsonl", inputs["jsonl"], inputs["jsonl"], "input"),
               ("brat", inputs["folder"].parent, inputs["folder"], "input")]
    for format, output, source, said in refused:
        result = run_script(tmp_path, "--model", str(export), "--input", str(source), "--output", str(output),
                            "--format", format)
        assert result.returncode != 0 and said in result.stderr, (output, result.stderr)
        assert "Traceback" not in result.stderr
    assert {path: path.read_bytes() for path in before} == before
    assert sorted(p.name for p in gold.iterdir()) == ["a.ann", "a.txt"]
    empty = tmp_path / "empty"
    empty.mkdir()
    for format, output in (("brat", empty), ("jsonl", tmp_path / "new" / "out.jsonl")):
        result = run_script(tmp_path, "--model", str(export), "--input", str(inputs["jsonl"]),
                            "--output", str(output), "--format", format)
        assert result.returncode == 0, result.stderr
    written = {p.name for p in empty.iterdir()}
    assert {f"{name}.{ext}" for name in SHORT_TEXTS for ext in ("ann", "txt")} <= written
    assert len(written) == 2 * (len(SHORT_TEXTS) + 1)
    records = (tmp_path / "new" / "out.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(records) == len(SHORT_TEXTS) + 1
    folders = (tmp_path, tmp_path / "new")
    assert [p.name for folder in folders for p in folder.iterdir() if p.name.startswith(".")] == []  # staging


def test_script_ignores_padding_and_truncation_saved_in_the_tokenizer(export, inputs, tmp_path):
    """A tokenizer.json that pads to a fixed length (all-MiniLM-L6-v2's pads to 128) and truncates: the script
    still cuts the windows cardioner cuts, and it loads the folder without asking about remote code."""
    padded = tmp_path / "padded"
    shutil.copytree(export, padded)
    spec = json.loads((padded / "tokenizer.json").read_text(encoding="utf-8"))
    spec["padding"] = {
        "strategy": {"Fixed": 128},
        "direction": "Right",
        "pad_to_multiple_of": None,
        "pad_id": 0,
        "pad_type_id": 0,
        "pad_token": "[PAD]",
    }
    spec["truncation"] = {"direction": "Right", "max_length": 128, "strategy": "LongestFirst", "stride": 0}
    (padded / "tokenizer.json").write_text(json.dumps(spec), encoding="utf-8")
    result = run_script(tmp_path, "--model", str(padded), "--input", str(inputs["jsonl"]),
                        "--output", str(tmp_path / "script.tsv"), "--format", "tsv", *WINDOWS)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "custom code" not in result.stdout + result.stderr
    cardioner_predict(
        "--model",
        str(export),
        "--input",
        str(inputs["jsonl"]),
        "--output",
        str(tmp_path / "cli.tsv"),
        "--format",
        "tsv",
        *WINDOWS,
    )
    expected = (tmp_path / "cli.tsv").read_text(encoding="utf-8")
    assert expected.count("\n") > 5 and (tmp_path / "script.tsv").read_text(encoding="utf-8") == expected


# WordPiece, byte-level BPE, Unigram + Metaspace
@pytest.mark.parametrize("family", ["bert", "roberta", "xlmr"])
def test_script_merges_windows_like_cardioner(family):
    """The script's merge (``merge_windows`` + ``rejoin_cut_entities``) gives the word tags of the Encoder's
    ``merge_predictions`` for any window predictions (random tag ids here), any stride (0 included), flat and
    multi-label, BIO and BIOES — the same word picked from the same window and joined again at a cut alike."""
    script = load_script(SCRIPT, "viterbi_predict_under_test")
    tokenizer = tiny_tokenizer(family)

    class Model:  # what the script's Windower reads from a loaded model: its words, by the exported rule
        token_classes = build_token_classes(tokenizer)

    Model.__module__ = "cardioner.modeling"
    rng = random.Random(0)
    words = " ".join(CORPUS).split()
    text = "".join(rng.choice(words) + rng.choice([" ", " ", "\n", "\n\n"]) for _ in range(200))
    rejoined = 0
    for scheme in ("BIO", "BIOES"):
        for labels in (LabelSet.flat(["A", "B"], scheme), LabelSet.multilabel(["A", "B"], scheme)):
            for max_length, stride in ((32, None), (32, 0), (32, 1), (16, 0), (16, 2)):
                encoder = Encoder(tokenizer, labels, max_length=max_length, stride=stride)
                encoded = encoder.encode_document(Document("d", text))
                windower = script.Windower(Model(), tokenizer, max_length, encoder.stride)
                document = windower(windower.pieces(text))
                assert document["word_pieces"] == encoded.word_pieces
                assert len(document["windows"]) == len(encoded.windows)
                predictions = []
                for (first, end), window in zip(encoded.window_words, document["windows"], strict=True):
                    tags = [
                        [rng.randrange(len(channel.tags)) for channel in labels.channels]
                        for _ in range(end - first)
                    ]
                    predictions.append(tags)
                    # the script's form
                    window["tags"] = tags if labels.is_multilabel else [row[0] for row in tags]
                expected = encoder.merge_predictions(encoded, predictions)
                merged, pieces, start_cuts, end_cuts = script.merge_windows(document)
                assert pieces is None  # windows without confidences: none merged
                for c, channel in enumerate(labels.channels):
                    column = (lambda rows, c=c: [row[c] for row in rows]) if labels.is_multilabel else list
                    raw = [channel.typed_tag(t) for t in column(merged)]
                    got = script.rejoin_cut_entities(raw, start_cuts, end_cuts)
                    assert got == [channel.typed_tag(row[c]) for row in expected], (
                        scheme,
                        max_length,
                        stride,
                    )
                    rejoined += got != raw
    assert rejoined > 10  # not vacuous: entities were joined again at cuts


@pytest.mark.parametrize("family", ["bert", "roberta", "xlmr"])
def test_script_cuts_context_windows_like_cardioner(family):
    """With context (``data.context``), the script's windows are the Encoder's, piece for piece: the same own
    words (a line each), the same context around them (the rest of the text, then the neighbouring records of
    the same group, never another group's), the same ``context_mask``."""
    script = load_script(SCRIPT, "viterbi_predict_under_test")
    tokenizer = tiny_tokenizer(family)

    class Model:
        token_classes = build_token_classes(tokenizer)

    Model.__module__ = "cardioner.modeling"
    rng = random.Random(1)
    words = " ".join(CORPUS).split()
    texts = ["".join(rng.choice(words) + rng.choice([" ", " ", " ", "\n"]) for _ in range(rng.randint(1, 60)))
             for _ in range(8)]
    groups = ["a", "a", "a", None, "b", "b", "a", "a"]  # the last two: a new run of "a", apart from the first
    docs = [Document(f"d{i}", text, [], {} if group is None else {"document": group})
            for i, (text, group) in enumerate(zip(texts, groups, strict=True))]
    labels = LabelSet.flat(["A"])
    for max_length, context in ((32, 4), (32, 12), (16, 1), (24, 7)):
        encoder = Encoder(tokenizer, labels, max_length=max_length, context=context)
        encoded, _ = encoder.encode(docs)
        windower = script.Windower(Model(), tokenizer, max_length, encoder.stride, context)
        pieces = [windower.pieces(text) for text in texts]
        for i, enc in enumerate(encoded):
            before = [pieces[j] for j in range(i - 1, -1, -1) if groups[i] is not None
                      and all(groups[k] == groups[i] for k in range(j, i))]
            after = [pieces[j] for j in range(i + 1, len(texts)) if groups[i] is not None
                     and all(groups[k] == groups[i] for k in range(i, j + 1))]
            document = windower(pieces[i], before, after)
            assert document["word_pieces"] == enc.word_pieces
            got = [(w["input_ids"], w["context_mask"]) for w in document["windows"]]
            assert got == [(w["input_ids"], w["context_mask"]) for w in enc.windows], (max_length, context, i)
            edges = [(w["left"] == float("-inf"), w["right"] == float("inf")) for w in document["windows"]]
            assert edges == [(left == float("-inf"), right == float("inf"))
                             for left, right in enc.window_edges]
        assert sum(sum(w["context_mask"]) for enc in encoded for w in enc.windows) > 0


# -- a model trained with document context, end to end ------------------------------------------------------

CONTEXT = 6  # data.context of the context export: windows of 32 subwords, 6 of context on each side


@pytest.fixture(scope="module")
def context_export(one_thread, tmp_path_factory) -> Path:
    """A tiny BERT + linear head trained with ``data.context`` on the NCBI sample, then made to tag every
    word it decodes as the start of an entity: any context piece decoded as a word would show as a span."""
    root = tmp_path_factory.mktemp("context_model")
    train, _ = read_corpus(SAMPLE / "train")
    config = config_from_dict({
        "data": {"max_length": 32, "context": CONTEXT},
        "model": {"model": str(tiny_backbone("bert", root))},
        "training": {"epochs": 1, "max_steps": 4, "batch_size": 8, "lr": 1e-3, "seed": 5},
    })
    trainer = ModelTrainer(config)
    trainer.train(train[:6])
    assert any(sum(w["context_mask"]) for w in trainer.corpora.train.windows)  # it trained on context
    begin = next(i for i, tag in trainer.model.config.id2label.items() if tag.startswith("B-"))
    with torch.no_grad():
        trainer.model.head.classifier.bias[int(begin)] = 100.0
    return save_model(trainer.model, trainer.predictor.tokenizer, root / "model")


@pytest.fixture(scope="module")
def sentence_records(tmp_path_factory) -> tuple[Path, list[Document]]:
    """The NCBI sample's test abstracts as JSONL, one record per sentence, each saying its abstract
    (``"document"``), with every word a gold span of the forced model's type."""
    root = tmp_path_factory.mktemp("context_inputs")
    records = []
    for path in sorted((SAMPLE / "test").glob("*.txt"))[:4]:
        sentences = re.split(r"(?<=\.) |\n", read_text(path))
        records += [{"id": f"{path.stem}/{n}", "document": path.stem, "text": sentence}
                    for n, sentence in enumerate(sentences) if sentence.strip()]
    jsonl = root / "sentences.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    docs, _ = read_corpus(jsonl)
    return jsonl, docs


def own_words(model_dir: Path, docs: list[Document]) -> dict[str, list[tuple[int, int]]]:
    """Each document's own words (character spans), as the export's encoder finds them."""
    from cardioner.inference import load_predictor

    encoder = load_predictor(model_dir).encoder
    return {doc.id: [(start, end) for start, end in encoder.encode_document(doc).word_offsets if end > start]
            for doc in docs}


def tiles(spans: list[tuple[int, int, str]], words: list[tuple[int, int]]) -> bool:
    """Whether ``spans`` cover ``words`` exactly: each span runs from a word's start to a word's end, and
    every word is in one span."""
    covered = []
    for start, end, _ in spans:
        inside = [(a, b) for a, b in words if start <= a and b <= end]
        if not inside or (inside[0][0], inside[-1][1]) != (start, end):
            return False
        covered += inside
    return covered == words


def test_context_never_gives_a_span_outside_a_documents_own_words(context_export, sentence_records, tmp_path):
    """predict, evaluate and the script on records of one abstract each (they lend each other context): a
    model that tags every word it decodes as an entity covers exactly each record's own words — never a word
    of the neighbouring records it reads as context (entities at a window cut inside a long sentence are
    joined again, so a span may hold several words) — the script gives what ``cardioner predict`` gives,
    and evaluate decodes as predict does."""
    jsonl, docs = sentence_records
    config = json.loads((context_export / "config.json").read_text(encoding="utf-8"))
    assert config["cardioner_windows"]["context"] == CONTEXT  # recorded in the export, read back by predict
    words = own_words(context_export, docs)
    assert sum(map(len, words.values())) > 100 and len(docs) > 8

    cardioner_predict("--model", str(context_export), "--input", str(jsonl),
                      "--output", str(tmp_path / "cli.jsonl"), "--format", "jsonl")
    predicted = spans_by_document(tmp_path / "cli.jsonl")
    assert set(predicted) == set(words)
    assert all(tiles(predicted[name], words[name]) for name in words)
    result = run_script(tmp_path, "--model", str(context_export), "--input", str(jsonl),
                        "--output", str(tmp_path / "script.jsonl"), "--format", "jsonl")
    assert result.returncode == 0, result.stderr[-3000:]
    assert spans_by_document(tmp_path / "script.jsonl") == predicted

    gold = tmp_path / "gold.jsonl"
    gold.write_text("".join(json.dumps({"id": doc.id, "document": doc.meta["document"], "text": doc.text,
                                        "spans": [{"start": s, "end": e, "label": label}
                                                  for s, e, label in predicted[doc.id]]}) + "\n"
                            for doc in docs), encoding="utf-8")
    evaluated = CliRunner().invoke(app, ["evaluate", "--model", str(context_export), "--data", str(gold),
                                         "--output", str(tmp_path / "metrics.json")])
    assert evaluated.exit_code == 0, evaluated.output
    micro = json.loads((tmp_path / "metrics.json").read_text(encoding="utf-8"))["micro"]
    assert (micro["precision"], micro["recall"]) == (1.0, 1.0)
