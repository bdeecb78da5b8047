"""The backbone a training run starts from: what ``model.model`` may name, in one sentence otherwise."""

from __future__ import annotations

import pytest
from tiny import tiny_backbone
from transformers import AutoTokenizer

from cardioner.backbone import check_backbone
from cardioner.config import Config, ConfigError
from cardioner.export import save_model
from cardioner.modeling import TokenClassificationModel


def test_an_export_named_as_the_backbone_is_refused_before_transformers_asks_on_the_terminal(tmp_path):
    backbone = tiny_backbone("bert", tmp_path / "backbones")
    tokenizer = AutoTokenizer.from_pretrained(backbone)
    model = TokenClassificationModel.from_backbone(str(backbone), tokenizer, {0: "O", 1: "B-X", 2: "I-X"})
    export = save_model(model, tokenizer, tmp_path / "ner")
    config = Config().replace(**{"model.model": str(export)})
    # transformers stopped at the export's auto_map: "Do you wish to run the custom code? [y/N]"
    with pytest.raises(ConfigError, match=r"model.model .*ner: a cardioner export, not a backbone"):
        check_backbone(config)
    assert check_backbone(Config().replace(**{"model.model": str(backbone)})) == 128
