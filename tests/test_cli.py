"""The ``cardioner`` command line end to end (issue 4, Done-when 1, 2 and 6).

Fast tests run the real commands in this process (Typer's CliRunner) on a tiny BERT and small corpora: the
shipped NCBI brat sample and a handful of MEDDOCAN documents. The ``slow`` ones repeat the Done-when commands
with the default backbone on the full corpora, on a small step budget (``python -m pytest -m slow``).
"""

from __future__ import annotations

import json
import shutil
import unicodedata
from pathlib import Path

import pytest
from tiny import tiny_backbone
from typer.testing import CliRunner

from cardioner.cli import app
from cardioner.data import read_corpus
from cardioner.evaluation import score_spans
from cardioner.export import load_model
from cardioner.predictor import Predictor

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "examples" / "ncbi_sample"
TINY_TRAINING = ["--max-length", "64", "--stride", "16", "--batch-size", "8", "--lr", "1e-3", "--seed", "3",
                 "--set", "training.patience=0"]




pytestmark = pytest.mark.usefixtures("one_thread")

@pytest.fixture(scope="module")
def backbone(tmp_path_factory) -> Path:
    return tiny_backbone("bert", tmp_path_factory.mktemp("backbones"))


def cli(*args: str, ok: bool = True):
    result = CliRunner().invoke(app, [str(a) for a in args])
    if ok:
        assert result.exit_code == 0, result.output + (result.stderr or "")
    return result


def copy_documents(source: Path, target: Path, names: list[str]) -> Path:
    target.mkdir(parents=True, exist_ok=True)
    for name in names:
        for suffix in (".txt", ".ann"):
            if (source / f"{name}{suffix}").exists():
                shutil.copy(source / f"{name}{suffix}", target / f"{name}{suffix}")
    return target


def first_documents(folder: Path, n: int) -> list[str]:
    return [path.stem for path in sorted(folder.glob("*.txt"))[:n]]


def uncovered_characters(model_dir: Path, docs, max_length: int | None = None) -> int:
    """Visible characters that no word of any window covers, with the windows ``predict`` cuts.

    Spaces and control/format characters (a byte-order mark) are in no word by design: tokenizers drop them.
    """
    model, tokenizer = load_model(model_dir)
    encoder = Predictor.from_model(model, tokenizer, max_length=max_length).encoder
    encoded, _ = encoder.encode(docs)
    missing = 0
    for doc, enc in zip(docs, encoded, strict=True):
        in_windows = {w for first, end in enc.window_words for w in range(first, end)}
        assert in_windows == set(range(len(enc.word_offsets))), f"{doc.id}: words in no window"
        covered = [False] * len(doc.text)
        for start, end in enc.word_offsets:
            covered[start:end] = [True] * (end - start)
        missing += sum(1 for ch, hit in zip(doc.text, covered, strict=True)
                       if not hit and not ch.isspace() and not unicodedata.category(ch).startswith("C"))
    return missing


# ----------------------------------------------------------------------- Done-when 1: train, export, evaluate
def check_train_then_evaluate(output: Path, test: Path) -> None:
    """The export holds metrics.json, learning_curves.png and
    a model card; ``evaluate`` repeats the test scores."""
    for name in ("metrics.json", "learning_curves.png", "README.md", "config.json", "model.safetensors",
                 "training_config.yaml", "modeling.py"):
        assert (output / name).is_file(), name
    metrics = json.loads((output / "metrics.json").read_text())
    assert metrics["test"] is not None and metrics["dev"] is not None
    card = (output / "README.md").read_text()
    assert "trust_remote_code" in card and f"{metrics['test']['micro']['f1']:.4f}"[:4] in card
    scores_path = output.parent / "evaluate.json"
    result = cli("evaluate", "--model", output, "--data", test, "--output", scores_path)
    scores = json.loads(scores_path.read_text())
    assert scores == metrics["test"]
    assert f"F1 {metrics['test']['micro']['f1']:.4f}" in result.output


def test_train_exports_and_evaluate_gives_the_same_test_scores(backbone, tmp_path):
    output = tmp_path / "out"
    cli("train", "--train", SAMPLE / "train", "--dev", SAMPLE / "dev", "--test", SAMPLE / "test", "--crf",
        "--model", backbone, "--output", output, "--epochs", "2", *TINY_TRAINING)
    check_train_then_evaluate(output, SAMPLE / "test")
    assert not (tmp_path / "out.checkpoints").exists()
    fit = json.loads((output / "metrics.json").read_text())["confidence_temperature"]  # fitted on dev
    assert fit["temperature"] == json.loads((output / "config.json").read_text())["confidence_temperature"]
    assert fit["data"] == "ncbi_sample/dev" and fit["documents"] == len(list((SAMPLE / "dev").glob("*.txt")))


@pytest.mark.slow
def test_ncbi_conll_with_the_default_backbone(shared_data, tmp_path):
    corpus = shared_data / "ncbi_disease" / "conll"
    output = tmp_path / "out"
    cli("train", "--train", corpus / "train.tsv", "--dev", corpus / "devel.tsv", "--test",
        corpus / "test.tsv", "--crf", "--output", output, "--epochs", "1", "--max-length", "128",
        "--batch-size", "16", "--set", "training.max_steps=60", "--set", "training.lr=1e-4")
    check_train_then_evaluate(output, corpus / "test.tsv")
    metrics = json.loads((output / "metrics.json").read_text())
    assert metrics["test"]["micro"]["f1"] > 0.2  # 60 steps of MiniLM + CRF already find diseases


# ------------------------------------------------------------------------- Done-when 2: long brat documents
def train_and_predict_meddocan(meddocan: Path, tmp_path: Path, model: list, n_train: int, n_test: int,
                               budget: list) -> tuple[Path, list]:
    train = copy_documents(
        meddocan / "train", tmp_path / "train", first_documents(meddocan / "train", n_train)
    )
    dev = copy_documents(meddocan / "dev", tmp_path / "dev", first_documents(meddocan / "dev", 2))
    names = first_documents(meddocan / "test", n_test)
    texts = tmp_path / "test_texts"
    texts.mkdir()
    for name in names:
        shutil.copy(meddocan / "test" / f"{name}.txt", texts / f"{name}.txt")
    output = tmp_path / "model"
    cli("train", "--train", train, "--dev", dev, "--crf", "--output", output, *model, *budget)
    predictions = tmp_path / "predictions"
    cli("predict", "--model", output, "--input", texts, "--output", predictions, "--format", "brat")
    assert sorted(p.stem for p in predictions.glob("*.ann")) == sorted(names)
    gold = [doc for doc in read_corpus(meddocan / "test")[0] if doc.id in set(names)]
    predicted, _ = read_corpus(predictions)
    # the .txt written beside each .ann is the input
    assert [d.text for d in predicted] == [d.text for d in gold]
    scores = score_spans(gold, predicted)
    assert scores["micro"]["support"] == sum(len(d.spans) for d in gold)
    return output, gold


def test_meddocan_brat_train_then_predict_writes_scorable_ann_files(shared_data, backbone, tmp_path):
    output, gold = train_and_predict_meddocan(
        shared_data / "meddocan", tmp_path, ["--model", backbone], n_train=4, n_test=3,
        budget=["--epochs", "1", "--max-length", "32", "--stride", "8", "--batch-size", "8",
                "--set", "training.max_steps=4"])
    assert uncovered_characters(output, gold) == 0  # 32-subword windows: dozens per document, no word lost


@pytest.mark.slow
def test_meddocan_with_the_default_backbone(shared_data, tmp_path):
    output, gold = train_and_predict_meddocan(
        shared_data / "meddocan", tmp_path, [], n_train=60, n_test=20,
        budget=["--epochs", "1", "--max-length", "256", "--stride", "64", "--batch-size", "16",
                "--set", "training.max_steps=80", "--set", "training.lr=1e-4"])
    assert uncovered_characters(output, gold) == 0


# ------------------------------------------------------------------------- Done-when 6: bad input
def assert_clean_failure(result, fragment: str) -> None:
    """Exit code 1, one ``error:`` sentence naming the problem, no traceback."""
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and fragment in errors[0], result.stderr
    assert "Traceback" not in result.output + result.stderr


PREVIOUS_CONFIG = '{"model_type": "cardioner", "previous": true}'


@pytest.fixture
def previous_export(tmp_path) -> Path:
    """An --output folder (an earlier export, which a run may
    replace) that a failed run must leave untouched."""
    output = tmp_path / "out"
    output.mkdir()
    (output / "config.json").write_text(PREVIOUS_CONFIG)
    return output


def test_bad_training_input_fails_with_one_sentence_and_keeps_the_previous_output(backbone, tmp_path,
                                                                                  previous_export):
    (tmp_path / "train.conll").write_text("Aspirin\tB-DRUG\nhelps\tO\n\n", encoding="utf-8")
    (tmp_path / "dev.conll").write_text("Cancer\tB-DIS\nhurts\tO\n\n", encoding="utf-8")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty.conll").write_text("", encoding="utf-8")
    (tmp_path / "not_a_model").mkdir()
    (tmp_path / "not_a_model" / "notes.txt").write_text("hello")
    train = ["--train", SAMPLE / "train", "--output", previous_export]
    cases = [
        (["--train", tmp_path / "missing", "--model", backbone, "--output", previous_export], "no such file"),
        ([*train, "--dev", tmp_path / "missing_dev", "--model", backbone], "--dev"),
        (
            ["--train", tmp_path / "train.conll", "--dev", tmp_path / "dev.conll", "--model", backbone,
             "--output", previous_export],
            "labels the training set lacks: DIS",
        ),
        ([*train, "--model", tmp_path / "not_a_model"], "not a model folder"),
        ([*train, "--model", backbone, "--max-length", "64", "--stride", "64"],
         "--stride (64) must be smaller than --max-length (64)"),
        ([*train, "--model", backbone, "--max-length", "64", "--stride", "100"], "must be smaller"),
        ([*train, "--model", backbone, "--max-length", "129"], "more than the 128 subwords the backbone"),
        (["--train", tmp_path / "empty", "--model", backbone, "--output", previous_export], "no data files"),
        (
            ["--train", tmp_path / "empty.conll", "--format", "conll", "--model", backbone, "--output",
             previous_export],
            "empty",
        ),
    ]
    for args, fragment in cases:
        assert_clean_failure(cli("train", *args, ok=False), fragment)
        assert (previous_export / "config.json").read_text() == PREVIOUS_CONFIG
    # no temporary leftovers
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_bad_prediction_and_evaluation_input_fails_with_one_sentence(backbone, tmp_path, previous_export):
    (tmp_path / "empty").mkdir()
    predictions = tmp_path / "predictions"
    cases = [
        (["predict", "--model", tmp_path / "missing", "--input", SAMPLE / "test", "--output", predictions],
         "not an exported model folder"),
        (
            ["predict", "--model", backbone, "--input", SAMPLE / "test", "--output", predictions],
            "not an exported model folder",
        ),  # a bare backbone is not a cardioner export
        (
            ["predict", "--model", tmp_path / "missing", "--input", SAMPLE / "test", "--output",
             previous_export],
            "neither empty nor a brat folder",
        ),  # checked before the model: an export is no brat folder
        (["predict", "--model", backbone, "--input", tmp_path / "missing", "--output", predictions],
         "no such file"),
        (["predict", "--model", backbone, "--input", tmp_path / "empty", "--output", predictions],
         "no .txt files"),
        (["evaluate", "--model", backbone, "--data", tmp_path / "missing"], "no such file"),
        (["evaluate", "--model", backbone, "--data", tmp_path / "empty"], "no data files"),
    ]
    for args, fragment in cases:
        assert_clean_failure(cli(*args, ok=False), fragment)
        assert (previous_export / "config.json").read_text() == PREVIOUS_CONFIG


def test_train_refuses_an_output_folder_that_is_not_an_export_before_training(
    backbone, tmp_path, monkeypatch
):
    corpus = copy_documents(SAMPLE / "train", tmp_path / "corpus", first_documents(SAMPLE / "train", 3))
    (corpus / "NOTES.txt").write_text("my notes", encoding="utf-8")
    before = sorted(p.name for p in corpus.iterdir())

    def read_split(*args):
        raise AssertionError("a corpus was read before the output folder was checked")

    monkeypatch.setattr("cardioner.training.run.read_split", read_split)
    result = cli(
        "train", "--train", corpus, "--model", backbone, "--output", corpus, *TINY_TRAINING, ok=False
    )
    assert_clean_failure(
        result, f"{corpus}: the output is a folder that is neither empty nor a cardioner export"
    )
    assert (
        sorted(p.name for p in corpus.iterdir()) == before
        and (corpus / "NOTES.txt").read_text() == "my notes"
    )


@pytest.fixture
def untrained_export(backbone, tmp_path) -> Path:
    """An export of a fresh (untrained) model that records no window size, as the default window applies."""
    from transformers import AutoTokenizer

    from cardioner.export import save_model
    from cardioner.modeling import TokenClassificationModel

    tokenizer = AutoTokenizer.from_pretrained(backbone)
    model = TokenClassificationModel.from_backbone(
        str(backbone), tokenizer, {0: "O", 1: "B-Disease", 2: "I-Disease"}
    )
    return save_model(model, tokenizer, tmp_path / "export")


def test_predict_windows_fit_the_backbone_and_bad_batch_sizes_or_windows_are_refused(
    untrained_export, tmp_path
):
    model, tokenizer = load_model(untrained_export)
    # the tiny BERT's 128 positions, not 512
    assert Predictor.from_model(model, tokenizer).encoder.max_length == 128
    output = tmp_path / "predictions.jsonl"
    cli("predict", "--model", untrained_export, "--input", SAMPLE / "test", "--output", output, "--format",
        "jsonl")
    assert len(output.read_text(encoding="utf-8").splitlines()) == len(list((SAMPLE / "test").glob("*.txt")))
    predict = ["predict", "--model", untrained_export, "--input", SAMPLE / "test", "--output",
               tmp_path / "p.jsonl", "--format", "jsonl"]
    cases = [
        ([*predict, "--batch-size", "0"], "--batch-size must be >= 1, got 0"),
        ([*predict, "--max-length", "129"], "--max-length 129 is more than the 128 subwords"),
        (["evaluate", "--model", untrained_export, "--data", SAMPLE / "test", "--batch-size", "0"],
         "--batch-size must be >= 1, got 0"),
        (["analyze", "--model", untrained_export, "--data", SAMPLE / "test", "--batch-size", "-1"],
         "--batch-size must be >= 1, got -1"),
    ]
    for args, fragment in cases:
        assert_clean_failure(cli(*args, ok=False), fragment)
    assert not (tmp_path / "p.jsonl").exists()


# ------------------------------------------------------------------------- library keys, command-line flags
def test_library_errors_name_keys_and_commands_name_their_flags():
    from cardioner.cli.flags import CONFIG_FLAGS, PREDICT_FLAGS, flag_message, speaking_flags
    from cardioner.config import ConfigError
    from cardioner.data.document import CorpusError

    assert (
        flag_message(
            "training.output out is a folder that is neither empty nor a cardioner export", CONFIG_FLAGS
        )
        == "--output out is a folder that is neither empty nor a cardioner export"
    )
    assert (
        flag_message("data.max_length 129 is more than the 128 subwords; use data.max_length 128 or less",
                     PREDICT_FLAGS)
        == "--max-length 129 is more than the 128 subwords; use --max-length 128 or less"
    )
    # a key the command has no flag for, a longer key, a path that contains a key: left alone
    assert (
        flag_message("data.dev_fraction must be in [0, 1)", CONFIG_FLAGS)
        == "data.dev_fraction must be in [0, 1)"
    )
    assert flag_message("training.output_dir is unknown", CONFIG_FLAGS) == "training.output_dir is unknown"
    # a plain argument name only as the subject of the message
    assert flag_message("batch_size must be >= 1, got 0", PREDICT_FLAGS) == "--batch-size must be >= 1, got 0"
    assert flag_message("the format of x: no batch_size", PREDICT_FLAGS) == "the format of x: no batch_size"

    def fails(error):
        raise error

    for error in (ConfigError("training.output x: not a folder"),
                  CorpusError("training.output x", "f.conll", 3)):
        with pytest.raises(type(error)) as raised:
            speaking_flags(fails, CONFIG_FLAGS)(error)
        assert "--output x" in str(raised.value) and "training.output" not in str(raised.value)


def test_version_and_tune_metric_help():
    """Issue 21 (found looking): ``cardioner --version`` answers; tune's --metric choices come from the
    config."""
    from cardioner import __version__
    from cardioner.config import CHOICES

    assert cli("--version").stdout == f"cardioner {__version__}\n"
    help_text = " ".join(CliRunner().invoke(app, ["tune", "--help"], env={"COLUMNS": "300"}).stdout.split())
    assert " | ".join(CHOICES["training.metric"]) in help_text


def test_every_option_of_every_command_shows_a_metavar_a_person_reads():
    """``--set KEY=VALUE``, ``--model DIR``, ``--epochs N``: never the Python type Typer would show
    (``<list[str]>``, ``<str>``), and nothing after a flag, which takes no value."""
    import re

    import typer

    group = typer.main.get_command(app)
    for name in ["", *group.commands]:
        args = [name, "--help"] if name else ["--help"]
        result = CliRunner().invoke(app, args, env={"COLUMNS": "300"})
        assert result.exit_code == 0, result.output
        for spelling in ("list[", "str]", "Optional", "NoneType", "<str>", "<int>", "<float>", "<bool>",
                         "<path>", "<Path>"):
            assert spelling not in result.output, f"cardioner {name} --help shows {spelling!r}"
    assert "KEY=VALUE" in CliRunner().invoke(app, ["train", "--help"], env={"COLUMNS": "300"}).output
    for name, command in group.commands.items():  # each option declares its metavar where it is declared
        for param in command.get_params(typer.Context(command)):
            if getattr(param, "is_flag", False):
                assert param.metavar == "", (name, param.opts)
            else:
                assert re.fullmatch(r"[A-Z][A-Z0-9_=/]*", param.metavar or ""), (name, param.opts)
