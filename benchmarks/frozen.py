"""NCBI-disease: full fine-tuning vs frozen backbone (uncached, cached) vs unfreeze after 1 epoch.

Same backbone, training sentences, epochs, learning rates, batch size and seed for every mode. Each mode runs
in its own subprocess so that its peak memory (``ru_maxrss``) is its own. Epoch time is the training steps of
one epoch (no dev set: nothing else runs in an epoch); the cached mode's feature pass is reported separately
(``cache_seconds``) and is part of its first epoch's cost. Test F1 is span-level, exact match, micro, on the
whole NCBI test split. Prints one JSON object; never asserts timings.

    python benchmarks/frozen.py --train-limit 1000 --epochs 3 > frozen.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "ncbi_disease" / "conll"
MODES = {
    "full": {},
    "frozen_uncached": {"model.freeze_backbone": True, "training.cache_features": False},
    "frozen_cached": {"model.freeze_backbone": True, "training.cache_features": True},
    "unfreeze_after_1": {"training.unfreeze_at_epoch": 1},
}


def rss_mb() -> float:
    """Peak resident memory of this process so far, in MB (Linux reports KB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_mode(args) -> dict:
    """Train one mode in this process and return its figures."""
    import logging

    import torch

    from cardioner.config import load_config
    from cardioner.data import read_corpus
    from cardioner.evaluation import score_spans
    from cardioner.training import ModelTrainer

    torch.set_num_threads(args.threads)
    cache_seconds: list[float] = []

    class CacheTimer(logging.Handler):  # the feature pass logs its duration
        def emit(self, record):
            if record.getMessage().startswith("cached backbone features"):
                cache_seconds.append(float(record.getMessage().rsplit(", ", 1)[1].rstrip(" s)")))

    logging.getLogger("cardioner").addHandler(CacheTimer())
    logging.getLogger("cardioner").setLevel(logging.INFO)
    train_docs, _ = read_corpus(DATA / "train.tsv")
    test_docs, _ = read_corpus(DATA / "test.tsv")
    train_docs = train_docs[: args.train_limit] if args.train_limit else train_docs
    config = load_config(None, {
        "model.model": args.model, "training.epochs": args.epochs, "training.batch_size": args.batch_size,
        "training.lr": args.lr, "training.head_lr": args.head_lr, "training.seed": args.seed,
        "data.max_length": args.max_length, "training.patience": 0, **MODES[args.mode],
    })
    before = rss_mb()
    trainer = ModelTrainer(config)
    started = time.perf_counter()
    result = trainer.train(train_docs, None, None)
    total = time.perf_counter() - started
    peak = rss_mb()
    predicted = list(trainer.predictor.with_batch_size(64).predict(test_docs))
    scores = score_spans(test_docs, {d.id: d.spans for d in predicted}, match="exact")
    return {
        "epoch_seconds": [round(row["epoch_seconds"], 2) for row in result.history],
        "cache_seconds": round(cache_seconds[0], 2) if cache_seconds else None,
        "train_wall_seconds": round(total, 2),
        "peak_rss_mb": round(peak, 1),
        "rss_before_training_mb": round(before, 1),
        "test_f1": round(scores["micro"]["f1"] * 100, 2),
        "train_loss": [round(row["train_loss"], 4) for row in result.history],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=5e-5, help="backbone learning rate")
    parser.add_argument("--head-lr", type=float, default=1e-3, help="head learning rate (every mode)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--train-limit", type=int, default=1000, help="first N training sentences (0 = all)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--model", default="default", help="backbone (default: bundled all-MiniLM-L6-v2)")
    parser.add_argument("--mode", help=argparse.SUPPRESS)  # internal: run one mode and print its JSON
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.mode:
        print(json.dumps(run_mode(args)))
        return

    import torch

    results = {}
    for mode in args.modes.split(","):
        if mode not in MODES:
            raise SystemExit(f"unknown mode {mode!r}; expected one of {', '.join(MODES)}")
        command = [sys.executable, __file__, "--mode", mode] + [
            f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items() if k not in ("mode", "modes")]
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        results[mode] = json.loads(output.strip().splitlines()[-1])
        print(f"{mode}: {json.dumps(results[mode])}", file=sys.stderr, flush=True)
    if "frozen_cached" in results:
        cached = results["frozen_cached"]["epoch_seconds"]
        for mode in ("frozen_uncached", "full"):
            if mode in results and len(cached) > 1:
                later = results[mode]["epoch_seconds"][1:]
                results["frozen_cached"][f"speedup_vs_{mode}_epochs_2+"] = round(
                    (sum(later) / len(later)) / (sum(cached[1:]) / len(cached[1:])), 1)
    summary = {"benchmark": "ncbi_disease frozen backbone", "backbone": args.model, "epochs": args.epochs,
               "batch_size": args.batch_size, "lr": args.lr, "head_lr": args.head_lr, "seed": args.seed,
               "max_length": args.max_length, "train_sentences": args.train_limit or "all",
               "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch "
                          f"{torch.__version__}, {args.threads} threads",
               "modes": results}
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
