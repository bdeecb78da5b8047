"""One optimiser step of three kinds of model, and a sharded evaluation: run by tests/test_processes.py under
``torchrun --nproc_per_node 2`` and as one plain process, whose outputs it compares.

    python processes_worker.py BACKBONE TRAIN DEV OUT [WEIGHTS_FROM]

For each variant (softmax with class weights, CRF, multi-label sigmoid) it trains one step (batch 8,
dropout 0) on TRAIN and writes, from the main process, ``OUT/<variant>.safetensors`` (the weights after the
step) and, in ``OUT/results.json``, the step's logged loss and the evaluation of DEV (sharded under several
processes) by the weights in ``WEIGHTS_FROM/<variant>.safetensors`` when given (the one-process run's), else
its own.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from safetensors.torch import load_model, save_model

from cardioner import processes
from cardioner.config import load_config
from cardioner.data import read_corpus
from cardioner.training.trainer import ModelTrainer

VARIANTS = {
    "softmax": {"model.class_weighting": "inverse"},
    "crf": {"model.use_crf": True},
    "multilabel": {"data.multilabel": True, "model.class_weighting": "inverse"},
}


def main(backbone: str, train: str, dev: str, out: str, weights_from: str | None = None) -> None:
    torch.set_num_threads(1)
    out_dir = Path(out)
    train_docs, dev_docs = read_corpus(train)[0], read_corpus(dev)[0]
    results = {"num_processes": processes.num_processes()}
    for name, overrides in VARIANTS.items():
        config = load_config(None, {
            "model.model": backbone, "data.max_length": 64, "data.stride": 16, "training.batch_size": 8,
            "training.max_steps": 1, "training.epochs": 1, "training.lr": 1e-3, "training.patience": 0,
            "training.warmup_ratio": 0.0, "model.classifier_dropout": 0.0, "training.seed": 3,
            "model.threshold_selection": "fixed", **overrides,
        })
        trainer = ModelTrainer(config)
        result = trainer.train(train_docs)
        if processes.is_main():
            save_model(trainer.model, str(out_dir / f"{name}.safetensors"))
        if weights_from is not None:
            load_model(trainer.model, str(Path(weights_from) / f"{name}.safetensors"))
        predictor = trainer.predictor
        evaluation = predictor.evaluate(predictor.encoder.encode_corpus(dev_docs, "dev"))
        spans = [[(s.start, s.end, s.label) for s in doc.spans] for doc in evaluation.documents]
        results[name] = {"train_loss": result.history[0]["train_loss"], "dev_loss": evaluation.loss,
                         "dev_scores": evaluation.scores, "dev_spans": spans}
    if processes.is_main():
        (out_dir / "results.json").write_text(json.dumps(results, indent=1), encoding="utf-8")
    processes.barrier()


if __name__ == "__main__":
    main(*sys.argv[1:])
