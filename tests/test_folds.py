"""K-fold cross-validation by document (test folds never reach model selection) and the OOM batch fallback."""

from __future__ import annotations

import json
import logging

import pytest
import torch
import yaml
from ncbi_subset import base_config
from typer.testing import CliRunner

from cardioner.cli import app
from cardioner.cli.train import format_summary
from cardioner.config import config_from_dict
from cardioner.data.document import Document
from cardioner.training.folds import cross_validate, fold_assignments

pytestmark = pytest.mark.usefixtures("one_thread")



def docs_of(n: int) -> list[Document]:
    return [Document(f"d{i}", "text") for i in range(n)]


# ------------------------------------------------------------------------------------------- fold assignment
def test_folds_are_seeded_balanced_and_keep_groups_together():
    docs = docs_of(23)
    folds = fold_assignments(docs, 5, seed=1)
    assert folds == fold_assignments(docs, 5, seed=1) and folds != fold_assignments(docs, 5, seed=2)
    sizes = sorted(folds.count(f) for f in range(5))
    assert sizes == [4, 4, 5, 5, 5]
    # 6 groups of <= 4
    grouped = fold_assignments(docs, 3, seed=0, group_of=lambda doc: str(int(doc.id[1:]) // 4))
    for group in range(6):
        assert len({f for doc, f in zip(docs, grouped, strict=True) if int(doc.id[1:]) // 4 == group}) == 1
    with pytest.raises(ValueError, match="between 2 and the number of document groups \\(23\\), got 24"):
        fold_assignments(docs, 24, seed=0)


# ------------------------------------------------------------------------------------------- no leakage
def test_test_folds_never_reach_training_or_model_selection(ncbi_subset, monkeypatch):
    """Spy on every document the trainer and the dev evaluation see: a test fold must never be among them,
    and each test fold is scored only after its model was chosen. Fails if a test fold leaked anywhere."""
    from cardioner.data import read_corpus
    from cardioner.predictor import Predictor
    from cardioner.training.trainer import ModelTrainer

    docs = read_corpus(ncbi_subset["train"])[0][:40]
    config = config_from_dict(base_config(ncbi_subset, epochs=2))
    events: list[tuple] = []
    real_train, real_evaluate = ModelTrainer.train, Predictor.evaluate

    def spy_train(self, train_docs, dev_docs=None, test_docs=None):
        events.append(("train", {d.id for d in train_docs}, {d.id for d in dev_docs or []}, test_docs))
        result = real_train(self, train_docs, dev_docs, test_docs)
        events.append(("trained",))
        return result

    def spy_evaluate(self, corpus):
        events.append(("evaluate", corpus.name, {d.id for d in corpus.documents}))
        return real_evaluate(self, corpus)

    monkeypatch.setattr(ModelTrainer, "train", spy_train)
    monkeypatch.setattr(Predictor, "evaluate", spy_evaluate)
    result = cross_validate(config, docs, 5)

    test_folds = [set() for _ in range(5)]
    for doc, fold in zip(docs, fold_assignments(docs, 5, config.training.seed), strict=True):
        test_folds[fold].add(doc.id)
    assert set().union(*test_folds) == {d.id for d in docs}
    runs = [i for i, event in enumerate(events) if event[0] == "train"]
    assert len(runs) == 5
    for fold, start in enumerate(runs):
        end = runs[fold + 1] if fold + 1 < 5 else len(events)
        _, train_ids, dev_ids, test_docs = events[start]
        test_ids = test_folds[fold]
        assert test_docs is None  # the trainer never receives the test fold
        assert not train_ids & test_ids and not dev_ids & test_ids and dev_ids and not train_ids & dev_ids
        assert train_ids | dev_ids | test_ids == {d.id for d in docs}
        trained = events.index(("trained",), start)
        for event in events[start:trained]:  # during training (selection, early stopping): dev only
            if event[0] == "evaluate":
                assert event[1:] == ("dev", dev_ids)
        after = [event for event in events[trained:end] if event[0] == "evaluate"]
        assert ("evaluate", "test", test_ids) in after  # scored once its model is chosen
    assert [row["num_test"] for row in result["folds"]] == [len(ids) for ids in test_folds]
    assert result["ci"]["num_documents"] == len(docs)


def test_train_folds_prints_mean_std_and_ci(ncbi_subset, tmp_path, caplog):
    config = tmp_path / "base.yaml"
    config.write_text(yaml.safe_dump(base_config(ncbi_subset, epochs=1)), encoding="utf-8")
    with caplog.at_level(logging.INFO, logger="cardioner"):
        result = CliRunner().invoke(app, ["train", "--config", str(config), "--folds", "5",
                                          "--output", str(tmp_path / "cv")])
    assert result.exit_code == 0, result.output
    assert "fold 1/5: " in caplog.text and "(data.dev_fraction 0.1 of the other folds)" in caplog.text
    line = result.output.strip().splitlines()[-1]
    assert line.startswith("span F1 over 5 test folds: ") and " ± " in line and "95% CI [" in line
    saved = json.loads((tmp_path / "cv" / "cv_results.json").read_text(encoding="utf-8"))
    # 80 train + 20 dev
    assert len(saved["folds"]) == 5 and sum(row["num_test"] for row in saved["folds"]) == 100
    assert saved["ci"]["f1"]["low"] <= saved["ci"]["f1"]["value"] <= saved["ci"]["f1"]["high"]
    assert format_summary(saved) == line
    assert saved["mean_f1"] == pytest.approx(sum(r["test_f1"] for r in saved["folds"]) / 5)
    # folds train without an output: no checkpoint folder (cv.checkpoints) shared by the folds and left behind
    assert sorted(p.name for p in tmp_path.iterdir()) == ["base.yaml", "cv"]
    assert [p.name for p in (tmp_path / "cv").iterdir()] == ["cv_results.json"]


def test_folds_pool_splits_whose_ids_restart_at_zero(ncbi_subset, tmp_path):
    """JSONL train and dev that both number their documents "0", "1", ...: pooled with split-prefixed ids."""
    from cardioner.data import read_corpus

    for split in ("train", "dev"):
        docs, _ = read_corpus(ncbi_subset[split])
        with (tmp_path / f"{split}.jsonl").open("w", encoding="utf-8") as handle:
            for i, doc in enumerate(docs):
                spans = [{"start": s.start, "end": s.end, "label": s.label} for s in doc.spans]
                handle.write(json.dumps({"id": str(i), "text": doc.text, "spans": spans}) + "\n")
    raw = base_config(ncbi_subset, epochs=1)
    raw["data"].update(train=str(tmp_path / "train.jsonl"), dev=str(tmp_path / "dev.jsonl"))
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(raw), encoding="utf-8")
    result = CliRunner().invoke(app, ["train", "--config", str(tmp_path / "base.yaml"), "--folds", "2",
                                      "--output", str(tmp_path / "cv")])
    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "cv" / "cv_results.json").read_text(encoding="utf-8"))
    assert sum(row["num_test"] for row in saved["folds"]) == 100 and saved["ci"]["num_documents"] == 100
    assert sum(row["test_tp"] + row["test_fn"] for row in saved["folds"]) == saved["pooled"]["support"]


def test_pooling_prefixes_colliding_ids_and_refuses_duplicates_within_a_split():
    from cardioner.training.folds import pool_documents

    train, dev = docs_of(3), docs_of(2)
    assert [d.id for d in pool_documents(train, dev)] == [
        "train/d0",
        "train/d1",
        "train/d2",
        "dev/d0",
        "dev/d1",
    ]
    assert [d.id for d in train] == ["d0", "d1", "d2"]  # the caller's documents are not renamed
    disjoint = [Document("x", "text")]
    assert [d.id for d in pool_documents(train, disjoint)] == ["d0", "d1", "d2", "x"]
    assert [d.id for d in pool_documents(train, None)] == ["d0", "d1", "d2"]
    with pytest.raises(ValueError, match="the dev corpus: document id 'd1' appears twice"):
        pool_documents(train, [*dev, Document("d1", "again")])
    with pytest.raises(ValueError, match="cross-validation: document id 'd0' appears twice"):
        cross_validate(config_from_dict({}), [*train, Document("d0", "again")], 2)


# ------------------------------------------------------------------------------------------- OOM fallback
@pytest.mark.parametrize("error", [
    torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
    RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 123 bytes. Error code 12 "
                 "(Cannot allocate memory) out of memory."),
], ids=["cuda", "runtime"])
def test_out_of_memory_halves_the_batch_size_and_retries(ncbi_subset, monkeypatch, error):
    from cardioner.training import run_training
    from cardioner.training.trainer import ModelTrainer

    seen: list[int] = []
    real_train = ModelTrainer.train

    def train_or_oom(self, *args, **kwargs):
        seen.append(self.config.training.batch_size)
        if len(seen) == 1:
            raise error
        return real_train(self, *args, **kwargs)

    monkeypatch.setattr(ModelTrainer, "train", train_or_oom)
    config = config_from_dict(base_config(ncbi_subset, epochs=1, batch_size=16))
    result, path = run_training(config)
    assert seen == [16, 8] and path is None and result.dev_metrics is not None


def test_other_errors_are_not_retried(ncbi_subset, monkeypatch):
    from cardioner.training.batch_size import train_with_batch_fallback
    from cardioner.training.trainer import ModelTrainer

    calls: list[int] = []

    def fail(self, *args, **kwargs):
        calls.append(self.config.training.batch_size)
        raise RuntimeError("shape mismatch")

    monkeypatch.setattr(ModelTrainer, "train", fail)
    with pytest.raises(RuntimeError, match="shape mismatch"):
        train_with_batch_fallback(config_from_dict(base_config(ncbi_subset)), [], None)
    assert calls == [8]


def test_cv_results_are_replaced_whole_or_not_at_all(tmp_path, monkeypatch):
    from pathlib import Path

    from cardioner.training import folds

    output = tmp_path / "cv"
    output.mkdir()
    (output / "cv_results.json").write_text('{"earlier": true}', encoding="utf-8")
    monkeypatch.setattr(folds, "check_before_reading", lambda config: None)
    monkeypatch.setattr(
        folds, "read_split", lambda path, config, name: docs_of(4) if name == "train" else None
    )
    monkeypatch.setattr(folds, "cross_validate", lambda config, docs, k: {"k": k, "folds": []})

    def disk_full(self, text, encoding=None):
        with open(self, "w", encoding=encoding) as handle:
            handle.write(text[:5])
        raise OSError("disk full")

    monkeypatch.setattr(Path, "write_text", disk_full)
    config = config_from_dict({"data": {"train": "train.conll"}, "training": {"output": str(output)}})
    with pytest.raises(OSError, match="disk full"):
        folds.run_cross_validation(config, 2)
    monkeypatch.undo()
    assert [p.name for p in output.iterdir()] == ["cv_results.json"]
    assert (output / "cv_results.json").read_text(encoding="utf-8") == '{"earlier": true}'
