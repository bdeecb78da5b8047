"""Freezing strategies: which parameters get gradients at each stage, frozen parts in eval mode, and the
parameter groups (trainable counts, layer-decayed learning rates) logged each epoch."""

from __future__ import annotations

import logging

import pytest
import torch
from ncbi_subset import base_config, write_subset

from cardioner.config import ConfigError, load_config, parse_unfreezing
from cardioner.data import read_corpus
from cardioner.training import ModelTrainer
from cardioner.training.build import fresh_predictor
from cardioner.training.freezing import apply_freezing, describe_trainable, trainable_layers
from cardioner.training.optim import backbone_depth


@pytest.fixture(scope="module")
def subset(shared_data, tmp_path_factory):
    paths = write_subset(shared_data, tmp_path_factory.mktemp("ncbi"))
    train, _ = read_corpus(paths["train"])
    return paths, train


def make_config(paths, **overrides):
    raw = base_config(paths)
    flat = {f"{section}.{key}": value for section, values in raw.items() for key, value in values.items()}
    return load_config(None, {**flat, **overrides})


def test_schedules_parse_and_bad_ones_name_the_key():
    assert parse_unfreezing("1:2,2:4,3:all") == [(1, 2), (2, 4), (3, None)]
    # a YAML mapping, as _coerce leaves it
    assert parse_unfreezing(str({1: 2, 3: "all"})) == [(1, 2), (3, None)]
    for bad, message in [
        ("1:x", "not EPOCH:LAYERS"),
        ("2:2,1:4", "increasing epochs"),
        ("1:4,2:2", "non-decreasing"),
        ("1:0", "LAYERS >= 1"),
        ("", "empty"),
    ]:
        with pytest.raises(ConfigError, match=message):
            load_config(None, {"training.gradual_unfreezing": bad or ","})
    with pytest.raises(ConfigError, match="training.unfreeze_at_epoch and model.freeze_backbone"):
        load_config(None, {"training.unfreeze_at_epoch": 1, "model.freeze_backbone": True})
    with pytest.raises(ConfigError, match="unfreeze_at_epoch and training.gradual_unfreezing"):
        load_config(None, {"training.unfreeze_at_epoch": 1, "training.gradual_unfreezing": "1:2"})
    config = load_config(None, {"training.unfreeze_at_epoch": 2})
    assert [trainable_layers(config, epoch) for epoch in range(4)] == [0, 0, None, None]
    assert trainable_layers(load_config(None, {"model.freeze_backbone": True}), 5) == 0
    assert trainable_layers(load_config(None), 0) is None


def test_each_stage_gives_gradients_to_exactly_its_layers(subset):
    """Tiny BERT (2 layers): embeddings are depth 0, layer i is
    depth i + 1; "1:1,2:2,3:all" opens them top down."""
    paths, train_docs = subset
    config = make_config(paths, **{"training.gradual_unfreezing": "1:1,2:2,3:all", "model.use_crf": True})
    predictor, corpora = fresh_predictor(config, train_docs)
    model = predictor.model
    batch = predictor.collate(corpora.train.windows[:8])
    expected_depths = {0: set(), 1: {2}, 2: {1, 2}, 3: {0, 1, 2}}
    for epoch, depths in expected_depths.items():
        model.train()
        apply_freezing(model, config, epoch)
        model.zero_grad(set_to_none=True)
        model(**batch).loss.backward()
        with_grad = {name for name, p in model.named_parameters() if p.grad is not None}
        backbone_depths = {backbone_depth(name, 2) for name in with_grad if name.startswith("backbone.")}
        assert backbone_depths == depths, f"epoch {epoch}"
        assert {n for n in with_grad if not n.startswith("backbone.")} == \
            {n for n, _ in model.named_parameters() if not n.startswith("backbone.")}  # head and CRF always
        layers = model.backbone.encoder.layer
        assert model.backbone.embeddings.training == (0 in depths)  # frozen parts: eval mode (no dropout)
        assert [layers[0].training, layers[1].training] == [1 in depths, 2 in depths]
        assert model.head.training


def test_gradual_unfreezing_and_layer_decay_in_logged_parameter_groups(subset, caplog):
    paths, train_docs = subset
    config = make_config(paths, **{"training.gradual_unfreezing": "1:1,2:all", "training.layer_decay": 0.5,
                                   "training.lr": 1e-3, "training.epochs": 3})
    trainer = ModelTrainer(config)
    with caplog.at_level(logging.INFO, logger="cardioner"):
        result = trainer.train(train_docs, None)

    def trainable(row, depth):
        return sum(
            g["trainable"]
            for g in row["parameter_groups"]
            if g["name"].startswith(f"backbone.depth{depth:02d}")
        )

    rows = result.history
    assert [[trainable(row, d) > 0 for d in (0, 1, 2)] for row in rows] == [
        [False, False, False], [False, False, True], [True, True, True]]
    assert all(g["trainable"] == g["params"] for row in rows for g in row["parameter_groups"]
               if not g["name"].startswith("backbone."))
    base = {g["name"]: g["base_lr"] for g in rows[0]["parameter_groups"]}
    assert base["backbone.depth02"] == pytest.approx(1e-3 * 0.5)  # L + 1 - d = 1
    assert base["backbone.depth01"] == pytest.approx(1e-3 * 0.25)
    assert base["backbone.depth00.no_decay"] == pytest.approx(1e-3 * 0.125)
    lines = [r.getMessage() for r in caplog.records if "trainable:" in r.getMessage()]
    assert len(lines) == 3
    assert "frozen: backbone.depth00-02" in lines[0] and "head (lr 0.01" in lines[0]
    assert "backbone.depth02 (lr 0.0005" in lines[1] and "frozen: backbone.depth00-01" in lines[1]
    assert "frozen: none" in lines[2]


def test_unfreeze_at_epoch_trains_the_head_first(subset):
    paths, train_docs = subset
    config = make_config(
        paths, **{"training.unfreeze_at_epoch": 1, "training.epochs": 2, "training.patience": 0}
    )
    result = ModelTrainer(config).train(train_docs[:30], None)
    backbone = [sum(g["trainable"] for g in row["parameter_groups"] if g["name"].startswith("backbone."))
                for row in result.history]
    total = sum(
        g["params"] for g in result.history[0]["parameter_groups"] if g["name"].startswith("backbone.")
    )
    assert backbone == [0, total]


def test_frozen_layers_keep_their_pretrained_weights(subset):
    paths, train_docs = subset
    config = make_config(paths, **{"training.gradual_unfreezing": "1:1", "training.epochs": 2})
    initial = fresh_predictor(config, train_docs)[0].model.state_dict()
    trainer = ModelTrainer(config)
    trainer.train(train_docs[:30], None)
    moved = {backbone_depth(name, 2) for name, value in trainer.model.state_dict().items()
             if name.startswith("backbone.") and not torch.equal(value, initial[name])}
    assert moved == {2}  # only the top layer trained (in epoch 2)


def test_describe_trainable_merges_decay_halves_and_ranges():
    rows = [{"name": f"backbone.depth0{d}{suffix}", "lr": 0.0, "base_lr": 1e-5 * (d + 1), "params": 4,
             "trainable": 4 if d == 3 else 0} for d in range(4) for suffix in ("", ".no_decay")]
    rows.append({"name": "head", "lr": 1e-4, "base_lr": 1e-4, "params": 2, "trainable": 2})
    line = describe_trainable(rows)
    assert line == "trainable: backbone.depth03 (lr 4e-05, now 0), head (lr 0.0001, now 0.0001); " \
                   "frozen: backbone.depth00-02"


def test_the_epoch_line_shows_consecutive_depths_as_one_range():
    """Issue 21: the epoch log line listed every backbone depth group; now one range, its rates as a range."""
    rows = [{"name": f"backbone.depth{d:02d}", "lr": 0.5e-5 * (d + 1), "base_lr": 1e-5 * (d + 1), "params": 4,
             "trainable": 4} for d in range(12)]
    rows.append({"name": "head", "lr": 1e-4, "base_lr": 1e-4, "params": 2, "trainable": 2})
    assert describe_trainable(rows) == (
        "trainable: backbone.depth00-11 (lr 1e-05..0.00012, now 5e-06..6e-05), head (lr 0.0001, now 0.0001); "
        "frozen: none")
    same = [{**row, "lr": 0.0, "base_lr": 5e-5} for row in rows[:3]]
    assert describe_trainable(same) == "trainable: backbone.depth00-02 (lr 5e-05, now 0); frozen: none"
