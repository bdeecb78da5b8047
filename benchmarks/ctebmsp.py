"""CT-EBM-SP (nested entities of four types): multi-label sigmoid, multi-label CRF, and a flat model.

Every system trains on the same training documents with the same backbone, epochs, learning rate, batch size,
window size and seed, selects its epoch on the same dev documents, and is scored once on the full test split
by the same span-level scorer (exact match, each type on its own). The flat model sees the training data with
overlaps resolved longest-first (it cannot represent nested entities of different types). The sigmoid model's
per-type thresholds are tuned on dev only. Prints one JSON object.

    python benchmarks/ctebmsp.py --train-docs 360 --dev-docs 80 --epochs 2 --max-length 128 > ctebmsp.json

``--redecode DIR`` trains nothing: it loads the models an earlier run saved with ``--save DIR`` and scores
them again with ``--decoding`` (the sigmoid model's thresholds re-tuned on the same dev documents), so
decoders can be compared on the same weights.

``--aggregate A.json B.json ...`` trains nothing: it reads runs of one budget that differ only in ``--seed``
and prints each system's mean and standard deviation per type, and each system's paired difference from
``flat_longest`` (same seed, same dev and training order): their mean and sd, the paired t statistic, wins and
losses, and a sign-test p-value; ``--plot`` draws the means with the standard deviations as error bars.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import statistics
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "ct_ebm_sp"
SYSTEMS = {"multilabel": (True, False), "multilabel_crf": (True, True), "flat_longest": (False, False)}


def overlapping_spans(docs) -> int:
    """Predicted spans that overlap another predicted span of the same document (any type)."""
    count = 0
    for doc in docs:
        spans = sorted(doc.spans, key=lambda s: (s.start, -s.end))
        for span in spans:
            count += any(
                other is not span and other.start < span.end and span.start < other.end for other in spans
            )
    return count


def subset(docs, n: int, seed: int):
    """The first ``n`` documents of a seeded shuffle (all when n is 0)."""
    if not n or n >= len(docs):
        return docs
    order = list(range(len(docs)))
    random.Random(seed).shuffle(order)
    return [docs[i] for i in sorted(order[:n])]


def run(system: str, args, train_docs, dev_docs, test_docs) -> dict:
    from cardioner.config import load_config
    from cardioner.evaluation import score_spans
    from cardioner.training import ModelTrainer

    multilabel, use_crf = SYSTEMS[system]
    config = load_config(None, {
        "model.model": args.model, "data.multilabel": multilabel, "model.use_crf": use_crf,
        "data.overlaps": "longest", "data.max_length": args.max_length, "data.stride": args.max_length // 4,
        "training.epochs": args.epochs, "training.batch_size": args.batch_size, "training.lr": args.lr,
        "training.seed": args.seed, "training.patience": 0, "model.threshold_selection": "dev",
        **dict(item.split("=", 1) for item in args.set),
    })
    trainer = ModelTrainer(config)
    result = trainer.train(list(train_docs), dev_docs, None)
    if args.save:
        trainer.save(Path(args.save) / system)
    predicted = list(trainer.predictor.with_batch_size(64).predict(test_docs))
    scores = score_spans(test_docs, predicted, match="exact")
    return {
        "decoding": (
            "crf" if use_crf else "constrained" if trainer.model.config.constrained_decoding else "argmax"
        ),
        "test_micro_f1": round(scores["micro"]["f1"] * 100, 2),
        "test_macro_f1": round(scores["macro"]["f1"] * 100, 2),
        "test_f1_per_type": {t: round(s["f1"] * 100, 2) for t, s in scores["per_type"].items()},
        "dev_micro_f1": round(result.dev_metrics["micro"]["f1"] * 100, 2),
        "overlapping_predicted_spans": overlapping_spans(predicted),
        "predicted_spans": sum(len(d.spans) for d in predicted),
        "thresholds": (
            getattr(trainer.model.config, "thresholds", None) if multilabel and not use_crf else None
        ),
        "dev_threshold_tuning": result.thresholds,  # per type: chosen threshold, dev F1 there and at 0.5
        "dev_f1_per_epoch": [round(row["dev_f1"] * 100, 2) for row in result.history],
        "best_epoch": result.best_epoch,
        "train_seconds": round(result.train_seconds, 1),
    }


def redecode(system: str, args, dev_docs, test_docs) -> dict:
    """Score a saved system again with the decoder
    ``args.decoding`` (no training; thresholds re-tuned on dev)."""
    from cardioner import load_model
    from cardioner.evaluation import score_spans
    from cardioner.predictor import Predictor
    from cardioner.thresholds import tune_thresholds

    model, tokenizer = load_model(Path(args.redecode) / system)
    if not model.config.use_crf:  # the CRF decodes by Viterbi with its learned transitions either way
        # the decoder reads it at every call
        model.config.constrained_decoding = args.decoding == "constrained"
    predictor = Predictor.from_model(model, tokenizer)
    tuning = None
    if model.config.channel_types is not None and not model.config.use_crf:
        thresholds, tuning = tune_thresholds(predictor, predictor.encoder.encode_corpus(dev_docs, "dev"))
        model.config.thresholds = thresholds
    scores = {}
    for split, docs in (("dev", dev_docs), ("test", test_docs)):
        predicted = list(predictor.with_batch_size(64).predict(docs))
        scores[split] = (score_spans(docs, predicted, match="exact"), predicted)
    test, predicted = scores["test"]
    return {
        "decoding": "crf" if model.config.use_crf else args.decoding,
        "test_micro_f1": round(test["micro"]["f1"] * 100, 2),
        "test_macro_f1": round(test["macro"]["f1"] * 100, 2),
        "test_f1_per_type": {t: round(s["f1"] * 100, 2) for t, s in test["per_type"].items()},
        "dev_micro_f1": round(scores["dev"][0]["micro"]["f1"] * 100, 2),
        "dev_f1_per_type": {t: round(s["f1"] * 100, 2) for t, s in scores["dev"][0]["per_type"].items()},
        "overlapping_predicted_spans": overlapping_spans(predicted),
        "predicted_spans": sum(len(d.spans) for d in predicted),
        "thresholds": model.config.thresholds if tuning else None,
        "dev_threshold_tuning": tuning,
    }


BUDGET = ("benchmark", "backbone", "epochs", "batch_size", "lr", "max_length", "overrides", "train_docs",
          "dev_docs")


def aggregate(runs: dict[str, dict], reference: str = "flat_longest") -> dict:
    """Per system and type: mean and sample standard deviation of test F1 over
    ``runs`` ({file: summary}, one budget, seeds differing); per system other
    than ``reference``: the paired differences from it, seed by seed."""
    first_file, first = next(iter(runs.items()))
    for file, summary in runs.items():
        differing = [key for key in BUDGET if summary.get(key) != first.get(key)]
        if differing:
            raise ValueError(
                f"{file}: {', '.join(differing)} differ from {first_file}; aggregate runs of one budget"
            )
    seeds = [summary["seed"] for summary in runs.values()]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"the runs repeat a seed: {seeds}")

    def scores(summary: dict, system: str) -> dict[str, float]:
        row = summary["systems"][system]
        return {**row["test_f1_per_type"], "micro": row["test_micro_f1"]}

    systems = list(dict.fromkeys(name for summary in runs.values() for name in summary["systems"]))
    for system in systems:  # runs that say how they decoded must agree (runs older than the field do not say)
        decoders = {summary["systems"][system].get("decoding") for summary in runs.values()
                    if system in summary["systems"]} - {None}
        if len(decoders) > 1:
            raise ValueError(f"{system} was decoded differently across the runs: {sorted(decoders)}")
    result = {"runs": [{"file": file, "seed": summary["seed"], "systems": list(summary["systems"])}
                       for file, summary in runs.items()],
              **{key: first.get(key) for key in BUDGET}, "systems": {}, f"paired_vs_{reference}": {}}
    for system in systems:
        rows = [scores(summary, system) for summary in runs.values() if system in summary["systems"]]
        types = list(rows[0])
        result["systems"][system] = {
            "runs": len(rows),
            "mean": {t: round(statistics.fmean(row[t] for row in rows), 2) for t in types},
            "sd": {
                t: round(statistics.stdev(row[t] for row in rows), 2) if len(rows) > 1 else None
                for t in types
            },
        }
        paired = [(scores(summary, system), scores(summary, reference)) for summary in runs.values()
                  if system != reference and {system, reference} <= set(summary["systems"])]
        if paired:
            differences = {t: [round(own[t] - ref[t], 2) for own, ref in paired] for t in types}
            result[f"paired_vs_{reference}"][system] = {t: paired_summary(d) for t, d in differences.items()}
    return result


def paired_summary(differences: list[float]) -> dict:
    """Seed-by-seed differences: their mean and sd, the paired t statistic (n -
    1 degrees of freedom), the wins, and the one-sided sign-test p-value of
    that many wins or more if each seed were a coin flip (ties dropped)."""
    n = len(differences)
    wins, losses = sum(d > 0 for d in differences), sum(d < 0 for d in differences)
    mean = statistics.fmean(differences)
    sd = statistics.stdev(differences) if n > 1 else None
    decided = wins + losses
    sign_p = sum(math.comb(decided, k) for k in range(wins, decided + 1)) / 2**decided if decided else None
    return {"differences": differences, "mean": round(mean, 2), "sd": sd and round(sd, 2),
            "t": round(mean / (sd / math.sqrt(n)), 2) if sd else None, "wins": wins, "losses": losses,
            "runs": n, "sign_test_p": sign_p and round(sign_p, 3)}


def plot(summary: dict, path: str) -> None:
    """Per-type test F1 of every system (and its micro F1) as grouped bars."""
    from cardioner.plots import plot_systems_per_type

    budget = f"{summary['train_docs']} train docs, {summary['epochs']} epochs, {summary['backbone']} backbone"
    if "runs" in summary:  # an --aggregate summary: means over seeds, standard deviations as error bars
        seeds = ", ".join(str(run["seed"]) for run in summary["runs"])
        plot_systems_per_type(
            {name: row["mean"] for name, row in summary["systems"].items()},
            path,
            title=f"CT-EBM-SP test, exact spans, mean ± sd over seeds {seeds}\n({budget})",
            ylabel="F1 (%)",
            errors={name: row["sd"] for name, row in summary["systems"].items() if row["runs"] > 1},
        )
        return
    per_system = {name: {**row["test_f1_per_type"], "micro": row["test_micro_f1"]}
                  for name, row in summary["systems"].items()}
    plot_systems_per_type(per_system, path, title=f"CT-EBM-SP test, exact spans ({budget})", ylabel="F1 (%)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--train-docs", type=int, default=360, help="seeded subset of the 720 training docs (0 = all)"
    )
    parser.add_argument(
        "--dev-docs", type=int, default=80, help="seeded subset of the 240 dev docs (0 = all)"
    )
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--systems", default=",".join(SYSTEMS))
    parser.add_argument("--model", default="default", help="backbone (default: bundled all-MiniLM-L6-v2)")
    parser.add_argument("--save", help="export each system's model into this folder (SAVE/SYSTEM)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="config override for every cardioner system, e.g. --set model.prior_init=false")
    parser.add_argument("--plot", help="also draw per-type test F1 of the systems as this PNG")
    parser.add_argument("--plot-from", help="draw --plot from this earlier JSON output instead of training")
    parser.add_argument(
        "--redecode", metavar="DIR", help="score the systems saved in DIR (--save) again; no training"
    )
    parser.add_argument("--decoding", choices=("constrained", "argmax"), default="constrained",
                        help="with --redecode: the decoder of the models without a CRF")
    parser.add_argument("--aggregate", nargs="+", metavar="JSON",
                        help="summarise earlier outputs of one budget over their seeds; no training")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.aggregate:
        summary = aggregate(
            {file: json.loads(Path(file).read_text(encoding="utf-8")) for file in args.aggregate}
        )
        print(json.dumps(summary, indent=2))
        if args.plot:
            plot(summary, args.plot)
        return
    if args.plot_from:
        plot(json.loads(Path(args.plot_from).read_text(encoding="utf-8")), args.plot or "ctebmsp.png")
        return

    from cardioner.data import read_corpus

    train_docs = subset(read_corpus(DATA / "train", format="brat")[0], args.train_docs, args.seed)
    dev_docs = subset(read_corpus(DATA / "dev", format="brat")[0], args.dev_docs, args.seed)
    test_docs = read_corpus(DATA / "test", format="brat")[0]
    results = {}
    for system in args.systems.split(","):
        torch.manual_seed(args.seed)
        results[system] = (redecode(system, args, dev_docs, test_docs) if args.redecode else
                           run(system, args, train_docs, dev_docs, test_docs))
        print(f"{system}: {json.dumps(results[system])}", file=sys.stderr, flush=True)
    summary = {
        "benchmark": "ct_ebm_sp",
        "backbone": args.model,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "max_length": args.max_length,
        "seed": args.seed,
        "overrides": args.set,
        "redecoded": args.redecode and {"from": args.redecode, "decoding": args.decoding},
        "train_docs": len(train_docs),
        "dev_docs": len(dev_docs),
        "test_docs": len(test_docs),
        "gold_test_spans": sum(len(d.spans) for d in test_docs),
        "gold_test_overlapping_spans": overlapping_spans(test_docs),
        "machine": (
            f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch"
            f" {torch.__version__}, threads {torch.get_num_threads()}"
        ),
        "systems": results,
    }
    print(json.dumps(summary, indent=2))
    if args.plot:
        plot(summary, args.plot)


if __name__ == "__main__":
    main()
