"""Cached backbone features: same head as uncached frozen training, a cache key that follows its inputs,
a memory-mapped cache reused without running the backbone, and a normal export."""

from __future__ import annotations

import logging

import pytest
import torch
from ncbi_subset import base_config, write_subset
from tiny import tiny_backbone

from cardioner.config import load_config
from cardioner.data import read_corpus
from cardioner.export import load_model
from cardioner.predictor import Predictor
from cardioner.training import ModelTrainer
from cardioner.training import trainer as trainer_module
from cardioner.training.build import fresh_predictor
from cardioner.training.features import FeatureCollate, cached_training_data, feature_cache_key


@pytest.fixture(scope="module")
def subset(shared_data, tmp_path_factory):
    paths = write_subset(shared_data, tmp_path_factory.mktemp("ncbi"))
    train, _ = read_corpus(paths["train"])
    dev, _ = read_corpus(paths["dev"])
    return paths, train, dev


def frozen_config(paths, **overrides):
    raw = base_config(paths, epochs=3)
    flat = {f"{section}.{key}": value for section, values in raw.items() for key, value in values.items()}
    flat.update({"model.freeze_backbone": True, "model.classifier_dropout": 0.3, **overrides})
    return load_config(None, flat)


def train(config, train_docs, dev_docs=None):
    trainer = ModelTrainer(config)
    trainer.train(train_docs, dev_docs)
    return trainer


@pytest.mark.parametrize(("use_crf", "num_layers"), [(False, 1), (True, 1), (False, 3)])
def test_cached_frozen_training_gives_the_uncached_head(subset, use_crf, num_layers):
    """Same seed, CPU, backbone dropout off in both: head (and CRF) weights equal within 1e-5."""
    paths, train_docs, _ = subset
    settings = {"model.use_crf": use_crf, "model.num_layers_to_use": num_layers}
    settings["training.epochs"] = 2
    uncached = train(frozen_config(paths, **{"training.cache_features": False, **settings}), train_docs[:48])
    cached = train(frozen_config(paths, **settings), train_docs[:48])
    head = {k: v for k, v in uncached.model.state_dict().items() if not k.startswith("backbone.")}
    assert any(k.startswith("crf.") for k in head) == use_crf
    for name, value in head.items():
        torch.testing.assert_close(cached.model.state_dict()[name], value, atol=1e-5, rtol=0, msg=name)
    backbone = {k: v for k, v in uncached.model.state_dict().items() if k.startswith("backbone.")}
    for name, value in backbone.items():  # the backbone did not move in either run
        torch.testing.assert_close(cached.model.state_dict()[name], value, atol=0, rtol=0)
    assert uncached.result.history[-1]["train_loss"] == pytest.approx(
        cached.result.history[-1]["train_loss"], abs=1e-5
    )


def test_uncached_frozen_backbone_runs_in_eval_mode(subset):
    """Backbone dropout would make uncached features differ from
    cached ones: the frozen backbone is in eval."""
    paths, train_docs, _ = subset
    seen = []
    trainer = ModelTrainer(frozen_config(paths, **{"training.cache_features": False, "training.epochs": 1}))
    original = trainer_module.apply_freezing

    def spy(model, config, epoch):
        original(model, config, epoch)
        seen.append((model.training, model.backbone.training, model.head.training))

    trainer_module.apply_freezing = spy
    try:
        trainer.train(train_docs[:10], None)
    finally:
        trainer_module.apply_freezing = original
    assert seen[-1] == (True, False, True)  # the epoch's call (the first one, before the model is wrapped)


def windows_and_model(paths, train_docs, max_length=64, model_path=None, **settings):
    config = frozen_config(paths, **{"data.max_length": max_length,
                                     **({"model.model": str(model_path)} if model_path else {})})
    predictor, corpora = fresh_predictor(config, train_docs)
    model = predictor.model
    for key, value in settings.items():
        setattr(model.config, key, value)
    return predictor, corpora.train.windows, model


def test_cache_key_follows_data_backbone_window_size_and_layers(subset, tmp_path):
    paths, train_docs, _ = subset
    predictor, windows, model = windows_and_model(paths, train_docs)
    key = feature_cache_key(model, windows)
    assert key == feature_cache_key(model, [dict(w) for w in windows])  # deterministic

    relabelled = [{**w, "labels": [0] * len(w["labels"])} for w in windows]
    assert feature_cache_key(model, relabelled) == key  # features do not depend on labels

    _, fewer, _ = windows_and_model(paths, train_docs[:-1])
    assert feature_cache_key(model, fewer) != key  # data
    edited = list(train_docs)
    edited[0] = type(edited[0])(
        edited[0].id, edited[0].text.replace("the", "a", 1) + " x", [], edited[0].meta
    )
    _, changed, _ = windows_and_model(paths, edited)
    assert feature_cache_key(model, changed) != key  # data (text)
    _, shorter, _ = windows_and_model(paths, train_docs, max_length=32)
    assert feature_cache_key(model, shorter) != key  # window size
    other_weights = tiny_backbone("bert", tmp_path / "other", seed=1)
    _, _, other = windows_and_model(paths, train_docs, model_path=other_weights)
    assert feature_cache_key(other, windows) != key  # backbone weights (same architecture and tokenizer)
    with torch.no_grad():
        model.backbone.embeddings.word_embeddings.weight[0, 0] += 1.0
    assert feature_cache_key(model, windows) != key  # one changed weight is enough
    with torch.no_grad():
        model.backbone.embeddings.word_embeddings.weight[0, 0] -= 1.0
    assert feature_cache_key(model, windows) == key
    model.config.num_layers_to_use = 3
    assert feature_cache_key(model, windows) != key  # layers the head reads


def test_disk_cache_is_written_once_then_reused_memory_mapped(subset, tmp_path, caplog):
    paths, train_docs, _ = subset
    predictor, windows, model = windows_and_model(paths, train_docs)
    cache_dir = tmp_path / "cache"
    memory, collate = cached_training_data(model, windows, predictor.collate, None)
    on_disk, _ = cached_training_data(model, windows, predictor.collate, cache_dir)
    assert len(list(cache_dir.glob("features-*.safetensors"))) == 1
    for index in (0, len(windows) // 2, len(windows) - 1):
        torch.testing.assert_close(on_disk[index]["hidden_states"], memory[index]["hidden_states"])
        assert on_disk[index]["hidden_states"].shape == (len(windows[index]["input_ids"]), 32)
    batch = collate([memory[0], memory[len(windows) - 1]])
    assert batch["hidden_states"].shape[:2] == batch["input_ids"].shape
    assert isinstance(collate, FeatureCollate)

    def fail(*args, **kwargs):
        raise AssertionError("the backbone ran although the cache file exists")

    model.backbone.forward = fail
    with caplog.at_level(logging.INFO, logger="cardioner"):
        again, _ = cached_training_data(model, windows, predictor.collate, cache_dir)
    assert "reusing cached backbone features" in caplog.text
    torch.testing.assert_close(again[3]["hidden_states"], memory[3]["hidden_states"])


def test_cached_training_exports_a_normal_model(subset, tmp_path):
    paths, train_docs, dev_docs = subset
    config = frozen_config(
        paths, **{"training.epochs": 1, "training.feature_cache_dir": str(tmp_path / "cache")}
    )
    trainer = train(config, train_docs, dev_docs)
    trainer.save(tmp_path / "export")
    model, tokenizer = load_model(tmp_path / "export")
    model.eval()
    trainer.model.eval()
    assert any(k.startswith("backbone.") for k in model.state_dict())
    batch = Predictor.from_model(model, tokenizer).collate(trainer.corpora.dev.windows[:4])
    batch.pop("labels")
    with torch.no_grad():
        torch.testing.assert_close(model(**batch).logits, trainer.model(**batch).logits)
        features = trainer.model.backbone_features(batch["input_ids"], batch["attention_mask"])
        torch.testing.assert_close(model(**batch, hidden_states=features).logits, model(**batch).logits)
