"""The export's model card on the Hub (issue 20, Done-when 4)
and ``cardioner push`` (the upload mocked: no Hub here).

The card's front matter must parse with huggingface_hub's own card parser, offline, and carry the test scores
as ``model-index`` results; the card names its data by folder name and counts, never by this machine's paths.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from huggingface_hub import ModelCard, metadata_load
from tiny import tiny_backbone
from typer.testing import CliRunner

from cardioner.cli import app
from cardioner.config import config_from_dict
from cardioner.data import read_corpus
from cardioner.export import load_model
from cardioner.hub import PATH_KEYS, data_name, dataset_name, hub_id, shareable_config, shareable_model_config
from cardioner.training.trainer import ModelTrainer

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "examples" / "ncbi_sample"

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def export(one_thread, tmp_path_factory) -> Path:
    """A tiny BERT trained 4 steps on the sample (absolute train/dev/test paths), exported."""
    root = tmp_path_factory.mktemp("hub_model")
    splits = {name: read_corpus(SAMPLE / name)[0][:8] for name in ("train", "dev", "test")}
    config = config_from_dict({
        "data": {"max_length": 48, "stride": 12, **{name: str(SAMPLE / name) for name in splits}},
        "model": {"model": str(tiny_backbone("bert", root)), "use_crf": True},
        "training": {"epochs": 1, "max_steps": 4, "batch_size": 8, "lr": 1e-3, "seed": 5, "patience": 0},
    })
    trainer = ModelTrainer(config)
    trainer.train(splits["train"], splits["dev"], splits["test"])
    return trainer.save(root / "model")


def test_card_metadata_parses_offline_and_shows_the_test_scores_as_model_index(export):
    metrics = json.loads((export / "metrics.json").read_text())
    metadata = metadata_load(export / "README.md")
    assert metadata["library_name"] == "transformers" and metadata["pipeline_tag"] == "token-classification"
    assert metadata["license"] and metadata["datasets"] == ["ncbi_sample"]
    assert "cardioner" in metadata["tags"] and "base_model" not in metadata  # a local backbone is no Hub id
    card = ModelCard.load(export / "README.md")  # the Hub's parser: validates model-index into EvalResults
    results = {(r.dataset_split, r.metric_name): r for r in card.data.eval_results}
    test_f1 = results[("test", "F1 (exact span, micro)")]
    assert test_f1.task_type == "token-classification" and test_f1.dataset_name == "ncbi_sample"
    assert test_f1.metric_type == "f1" and test_f1.metric_value == round(metrics["test"]["micro"]["f1"], 4)
    assert results[("test", "precision (exact span)")].metric_value == round(
        metrics["test"]["micro"]["precision"], 4
    )
    assert results[("validation", "F1 (exact span, micro)")].metric_value == round(
        metrics["dev"]["micro"]["f1"], 4
    )
    assert results[("test", "F1 (overlapping span, micro)")].metric_value == round(
        metrics["test"]["overlap"]["micro"]["f1"], 4)


def test_card_names_data_by_folder_and_count_never_by_absolute_path(export):
    card = (export / "README.md").read_text(encoding="utf-8")
    assert str(REPO) not in card and str(export.parent) not in card and "/tmp" not in card
    assert "train: `ncbi_sample/train` (8 documents)" in card
    assert "test: `ncbi_sample/test` (8 documents)" in card
    assert "local folder bert" in card  # the backbone by its folder name


def test_data_and_hub_names():
    assert data_name("/data/corpora/ncbi_sample/train") == "ncbi_sample/train"
    assert data_name("train.jsonl") == "train.jsonl"
    assert dataset_name("/x/ncbi_disease/conll/test.tsv") == "ncbi_disease"
    assert dataset_name("/x/meddocan/brat/dev") == "meddocan"
    assert dataset_name("/x/clinical_notes.jsonl") == "clinical_notes"
    assert hub_id("bert-base-cased") == "bert-base-cased"
    assert (
        hub_id("PlanTL-GOB-ES/roberta-base-biomedical-clinical-es")
        == "PlanTL-GOB-ES/roberta-base-biomedical-clinical-es"
    )
    assert hub_id("/abs/path/to/model") is None and hub_id("./model") is None and hub_id("a/b/c") is None


# ----------------------------------------------------------------------------------------------- push
class FakeHub:
    """Stands in for huggingface_hub.HfApi: records calls; the Hub is not reachable here."""

    calls: list = []
    fail: Exception | None = None

    def __init__(self, token=None):
        FakeHub.calls.append(("init", {"token": token}))

    def create_repo(self, repo_id, **kwargs):
        if FakeHub.fail is not None:
            raise FakeHub.fail
        FakeHub.calls.append(("create_repo", {"repo_id": repo_id, **kwargs}))

    def create_commit(self, **kwargs):
        FakeHub.calls.append(("create_commit", {k: v for k, v in kwargs.items() if k != "operations"}))
        uploaded = {}
        for operation in kwargs["operations"]:  # what the Hub would receive, read as it would read it
            content = operation.path_or_fileobj
            uploaded[operation.path_in_repo] = (content if isinstance(content, bytes)
                                                else Path(content).read_bytes())
        FakeHub.calls.append(("files", uploaded))

        class Commit:
            commit_url = f"https://hub.example/{kwargs['repo_id']}/commit/abc"
            pr_url = None

        return Commit()


@pytest.fixture
def fake_hub(monkeypatch):
    import huggingface_hub

    FakeHub.calls, FakeHub.fail = [], None
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeHub)
    return FakeHub


def test_push_uploads_the_export_with_its_card(export, fake_hub, tmp_path):
    import shutil

    folder = shutil.copytree(export, tmp_path / "model")
    result = CliRunner().invoke(
        app,
        ["push", "--model", str(folder), "--repo", "someone/ncbi-ner", "--private", "--token", "hf_secret",
         "--license", "apache-2.0", "--message", "first"],
    )
    assert result.exit_code == 0, result.output
    assert "https://hub.example/someone/ncbi-ner/commit/abc" in result.output
    calls = dict(fake_hub.calls)
    assert calls["init"] == {"token": "hf_secret"}
    assert calls["create_repo"] == {"repo_id": "someone/ncbi-ner", "private": True, "repo_type": "model",
                                    "exist_ok": True}
    upload = calls["create_commit"]
    assert upload["repo_id"] == "someone/ncbi-ner" and upload["create_pr"] is False
    assert upload["commit_message"] == "first" and upload["repo_type"] == "model"
    files = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
    assert set(calls["files"]) == files >= {"README.md", "config.json", "model.safetensors", "modeling.py"}
    assert calls["files"]["model.safetensors"] == (folder / "model.safetensors").read_bytes()
    # written into the card before upload
    assert metadata_load(folder / "README.md")["license"] == "apache-2.0"
    assert ModelCard.load(folder / "README.md").data.eval_results  # still a valid card


def test_push_uploads_configs_with_paths_reduced_to_names_and_leaves_the_local_files(export, fake_hub,
                                                                                     tmp_path):
    import shutil

    folder = shutil.copytree(export, tmp_path / "model")
    local = (folder / "training_config.yaml").read_bytes()
    local_files = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
    assert str(SAMPLE) in local.decode("utf-8")  # the training machine's paths, as recorded
    backbone = json.loads(local_files["config.json"])["backbone_config"]["_name_or_path"]
    assert Path(backbone).is_absolute()  # transformers records where it read the backbone, too
    result = CliRunner().invoke(app, ["push", "--model", str(folder), "--repo", "someone/ncbi-ner"])
    assert result.exit_code == 0, result.output
    files = dict(fake_hub.calls)["files"]
    uploaded = files["training_config.yaml"].decode("utf-8")
    assert {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()} == local_files  # untouched
    for name, content in files.items():  # no file goes up with an absolute path of this machine
        text = content.decode("utf-8", errors="replace")
        assert str(tmp_path) not in text and str(REPO) not in text and "/tmp/" not in text, name
    hub_copy = tmp_path / "from_the_hub"  # what a user downloads loads as the export does
    for name, content in files.items():
        (hub_copy / name).parent.mkdir(parents=True, exist_ok=True)
        (hub_copy / name).write_bytes(content)
    model, _ = load_model(hub_copy)
    assert model.config.backbone_config["_name_or_path"] == "bert"
    shared = config_from_dict(yaml.safe_load(uploaded))  # a valid cardioner config
    assert (shared.data.train, shared.data.dev, shared.data.test) == (
        "ncbi_sample/train", "ncbi_sample/dev", "ncbi_sample/test")  # as the card names them
    assert shared.model.model == "bert"  # the local backbone by its folder name, as the card shows it
    saved = config_from_dict(yaml.safe_load(local))
    reduced = {"data.train": "ncbi_sample/train", "data.dev": "ncbi_sample/dev",
               "data.test": "ncbi_sample/test", "model.model": "bert"}
    assert shared.to_dict() == saved.replace(**reduced).to_dict()  # every other key as it was
    fake_hub.calls = []
    result = CliRunner().invoke(app, ["push", "--model", str(folder), "--repo", "someone/ncbi-ner",
                                      "--keep-paths"])
    assert result.exit_code == 0, result.output
    files = dict(fake_hub.calls)["files"]
    assert files["training_config.yaml"] == local and files["config.json"] == local_files["config.json"]


def test_every_path_key_is_reduced_and_hub_ids_are_kept():
    training_config = {"data": {"train": "/home/jo/study-x/notes/train", "dev": "C:\\Users\\jo\\x\\dev",
                                "test": None, "max_length": 64},
                       "model": {"model": "/home/jo/models/bio-bert", "head": "linear"},
                       "training": {"output": "/home/jo/out/ner-v2", "feature_cache_dir": "/scratch/jo/cache",
                                    "lr": 3e-5}}
    shared = shareable_config(training_config)
    assert shared == {"data": {"train": "notes/train", "dev": "x/dev", "test": None, "max_length": 64},
                      "model": {"model": "bio-bert", "head": "linear"},
                      "training": {"output": "ner-v2", "feature_cache_dir": "cache", "lr": 3e-5}}
    assert training_config["data"]["train"] == "/home/jo/study-x/notes/train"  # a copy: the input is kept
    assert {f"{s}.{k}" for s, values in training_config.items() for k, v in values.items()
            if isinstance(v, str) and ("/" in v or "\\" in v)} <= set(PATH_KEYS)  # every path key is known
    hub_backbone = shareable_config({"model": {"model": "PlanTL-GOB-ES/roberta-base-biomedical-clinical-es"}})
    assert hub_backbone["model"]["model"] == "PlanTL-GOB-ES/roberta-base-biomedical-clinical-es"
    model_config = {"backbone_config": {"_name_or_path": "/home/jo/models/bio-bert", "hidden_size": 8},
                    "head": "linear"}
    assert shareable_model_config(model_config) == {
        "backbone_config": {"_name_or_path": "bio-bert", "hidden_size": 8}, "head": "linear"}
    assert model_config["backbone_config"]["_name_or_path"] == "/home/jo/models/bio-bert"  # a copy


@pytest.mark.parametrize(("args", "fragment"), [
    (["--repo", "no-namespace"], "--repo must be NAMESPACE/NAME"),
    (["--repo", "a/b/c"], "--repo must be NAMESPACE/NAME"),
    (["--repo", "../x"], "--repo must be NAMESPACE/NAME"),
])
def test_push_refuses_bad_repository_names_before_any_upload(export, fake_hub, args, fragment):
    result = CliRunner().invoke(app, ["push", "--model", str(export), *args])
    assert result.exit_code == 1 and fragment in result.output and "Traceback" not in result.output
    assert not [c for c in fake_hub.calls if c[0] in ("create_repo", "upload_folder")]


def test_push_refuses_a_folder_that_is_not_an_export_and_reports_upload_errors(export, fake_hub, tmp_path):
    result = CliRunner().invoke(app, ["push", "--model", str(tmp_path), "--repo", "a/b"])
    assert result.exit_code == 1 and "not an exported model folder" in result.output
    fake_hub.fail = ConnectionError("Name or service not known")
    result = CliRunner().invoke(app, ["push", "--model", str(export), "--repo", "a/b"])
    assert (
        result.exit_code == 1
        and "--repo a/b: upload failed (ConnectionError: Name or service not known)" in result.output
    )
