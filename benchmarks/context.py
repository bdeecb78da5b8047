"""Document context on CoNLL-2003: sentences alone, document windows, and sentences with context.

Each system trains cardioner with the same backbone, epochs, learning rate, batch size (windows) and seed, on
the same training sentences, and is scored by the same span scorer (exact match, micro F1) on the test set:

- ``sentences``: every sentence is a document of its own (no context at all: what the Trainer recipe and
  Flair without FLERT see);
- ``windows``: the -DOCSTART- documents as the CoNLL reader builds them, cut into overlapping windows of
  ``--max-length`` subwords (``data.context`` 0, the default; windows hold many sentences, so an epoch has far
  fewer, larger batches);
- ``context=N``: the documents with ``data.context`` N: one window per sentence (as ``sentences``, so the same
  number of optimiser steps), each carrying up to N subwords of the text on either side, unlabelled.

Besides the test F1 (P/R, per type), each system's row scores the test sentences by kind (``by_kind``):
``dateline`` (a place and a date: "LONDON 1996-08-22"), ``table`` rows (sentences of which at least half the
tokens hold a digit: the results tables of the sports pages, "Bolton 2 Tranmere 1") and ``text`` (the rest:
headlines and prose), so that a change can be traced to the documents it
comes from; ``--predictions DIR`` also writes each system's test predictions as JSONL.

Prints one JSON object. ``--aggregate`` merges several runs' JSON files (one per seed and system, in any
grouping) into mean ± sd per system and the paired difference of each system from ``sentences`` (same seed):
over all types, per type and per kind of sentence.

    python benchmarks/context.py --train-limit 3000 --epochs 1 --systems sentences,windows,context=64 > c.json
    python benchmarks/context.py --aggregate c42.json c1.json c2.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "conll2003"
NUMBER = re.compile(r"\d")
DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def cut_document(doc, num_sentences: int):
    """``doc`` up to the end of its first ``num_sentences`` sentences (text, spans, token meta)."""
    from cardioner.data import Document

    sentences = doc.meta["sentences"][:num_sentences]
    tokens = doc.meta["tokens"][: sentences[-1][1]]
    end = tokens[-1][1] if tokens else 0
    meta = {**doc.meta, "tokens": tokens, "sentences": sentences}
    return Document(doc.id, doc.text[:end], [s for s in doc.spans if s.end <= end], meta)


def first_sentences(docs: list, limit: int) -> list:
    """The documents holding the first ``limit`` sentences, in order (the last one cut); all when 0."""
    if not limit:
        return docs
    kept, count = [], 0
    for doc in docs:
        if count >= limit:
            break
        take = min(len(doc.meta["sentences"]), limit - count)
        kept.append(doc if take == len(doc.meta["sentences"]) else cut_document(doc, take))
        count += take
    return kept


def sentence_documents(docs: list) -> list:
    """Every sentence of ``docs`` as a document of its own (offsets moved, spans kept)."""
    from cardioner.data import Document, Span

    result = []
    for doc in docs:
        tokens = doc.meta["tokens"]
        for n, (first, last) in enumerate(doc.meta["sentences"]):
            if last <= first:
                continue
            start, end = tokens[first][0], tokens[last - 1][1]
            spans = [Span(s.start - start, s.end - start, s.label) for s in doc.spans
                     if start <= s.start and s.end <= end]
            result.append(Document(f"{doc.id}/{n}", doc.text[start:end], spans,
                                   {"tokens": [[a - start, b - start] for a, b in tokens[first:last]],
                                    "sentences": [[0, last - first]]}))
    return result


def count_sentences(docs: list) -> int:
    return sum(len(doc.meta["sentences"]) for doc in docs)


def sentence_kind(text: str, tokens: list) -> str:
    """``dateline`` for a place and a date of at most four tokens ("LONDON 1996-08-22"); ``table`` when at
    least half of a sentence's tokens hold a digit (a row of a results table: "Bolton 2 Tranmere 1",
    "1. Michael Johnson ( U.S. ) 19.66"); else ``text``."""
    words = [text[start:end] for start, end in tokens]
    if 2 <= len(words) <= 4 and DATE.fullmatch(words[-1]):
        return "dateline"
    numeric = sum(bool(NUMBER.search(word)) for word in words)
    return "table" if words and 2 * numeric >= len(words) else "text"


def per_type_f1(scores: dict) -> dict[str, float]:
    return {label: round(100 * value["f1"], 2) for label, value in sorted(scores["per_type"].items())}


def scores_by_kind(gold_docs: list, predicted: list) -> dict:
    """Exact-match span scores of ``predicted`` against ``gold_docs`` (the same documents, in order, with
    sentence meta) over each kind of sentence (``sentence_kind``): each document cut into its sentences
    (``sentence_documents``: a span across two sentences, never produced here, would be left out), and
    each kind scored alone, with its sentence and gold span counts, ``relabelled`` (gold spans predicted with
    the right extent and another type: "ORG->LOC", a team read as its city) and ``outcomes`` (what became of
    each type's gold spans: ``gold_outcomes``)."""
    from cardioner.data import Document  # benchmarks import cardioner after argument parsing
    from cardioner.evaluation import score_spans

    with_meta = [Document(gold.id, gold.text, pred.spans, gold.meta)
                 for gold, pred in zip(gold_docs, predicted, strict=True)]
    gold_sentences, predicted_sentences = sentence_documents(gold_docs), sentence_documents(with_meta)
    kinds: dict[str, tuple[list, list]] = {}
    for gold, pred in zip(gold_sentences, predicted_sentences, strict=True):
        group = kinds.setdefault(sentence_kind(gold.text, gold.meta["tokens"]), ([], []))
        group[0].append(gold)
        group[1].append(pred)
    result = {}
    for kind, (gold, pred) in sorted(kinds.items()):
        scores = score_spans(gold, pred)
        result[kind] = {"sentences": len(gold), "gold_spans": sum(len(doc.spans) for doc in gold),
                        "f1": round(100 * scores["micro"]["f1"], 2),
                        "per_type_f1": per_type_f1(scores), "relabelled": relabelled(gold, pred),
                        "outcomes": gold_outcomes(gold, pred)}
    return result


def relabelled(gold_docs: list, predicted: list) -> dict[str, int]:
    """``{"GOLD->PREDICTED": count}``: gold spans predicted with the same extent and another type only."""
    counts: dict[str, int] = {}
    for gold, pred in zip(gold_docs, predicted, strict=True):
        types: dict[tuple[int, int], set[str]] = {}
        for span in pred.spans:
            types.setdefault((span.start, span.end), set()).add(span.label)
        for span in gold.spans:
            others = types.get((span.start, span.end), set())
            if others and span.label not in others:
                for label in sorted(others):
                    counts[f"{span.label}->{label}"] = counts.get(f"{span.label}->{label}", 0) + 1
    return dict(sorted(counts.items()))


def gold_outcomes(gold_docs: list, predicted: list) -> dict[str, dict[str, int]]:
    """``{type: {outcome: count}}`` over the gold spans: ``exact`` (found), ``relabelled`` (its extent
    predicted, with another type only), ``boundary`` (a prediction of its type overlaps it with another
    extent: "NY JETS" cut into "NY" and "JETS"), ``other`` (overlapped by predictions of other types only),
    ``missed`` (nothing predicted on it)."""
    counts: dict[str, dict[str, int]] = {}
    for gold, pred in zip(gold_docs, predicted, strict=True):
        for span in gold.spans:
            over = [q for q in pred.spans if q.start < span.end and span.start < q.end]
            same = [q for q in over if (q.start, q.end) == (span.start, span.end)]
            if any(q.label == span.label for q in same):
                outcome = "exact"
            elif same:
                outcome = "relabelled"
            elif any(q.label == span.label for q in over):
                outcome = "boundary"
            else:
                outcome = "other" if over else "missed"
            row = counts.setdefault(span.label, {})
            row[outcome] = row.get(outcome, 0) + 1
    return {label: dict(sorted(row.items())) for label, row in sorted(counts.items())}


def rescore(paths: list[Path], test_docs: list) -> dict:
    """``by_kind`` of saved test predictions (``--predictions``' JSONL, of documents or of sentences),
    against the test documents: what a finished run would now report, without training again."""
    from cardioner.data import read_corpus  # benchmarks import cardioner after argument parsing

    result = {}
    for path in paths:
        predicted, _ = read_corpus(path)
        by_id = {doc.id: doc for doc in predicted}
        gold = test_docs if test_docs[0].id in by_id else sentence_documents(test_docs)
        missing = [doc.id for doc in gold if doc.id not in by_id]
        if missing:
            raise SystemExit(f"{path}: no prediction for {len(missing)} test document(s), e.g. {missing[0]}")
        result[path.name] = scores_by_kind(gold, [by_id[doc.id] for doc in gold])
    return result


def run_system(name: str, args, train_docs: list, test_docs: list) -> dict:
    from cardioner.config import load_config  # benchmarks import cardioner after argument parsing
    from cardioner.data import write_corpus
    from cardioner.training import ModelTrainer

    context = int(name.split("=", 1)[1]) if name.startswith("context=") else 0
    if name == "sentences":
        train_docs, test_docs = sentence_documents(train_docs), sentence_documents(test_docs)
    overrides = {"model.model": args.model, "data.max_length": args.max_length, "data.context": context,
                 "training.epochs": args.epochs, "training.batch_size": args.batch_size,
                 "training.lr": args.lr, "training.seed": args.seed, "training.patience": 0}
    overrides.update(dict(item.split("=", 1) for item in args.set))
    config = load_config(None, overrides)
    trainer = ModelTrainer(config)
    started = time.perf_counter()
    result = trainer.train(list(train_docs), None, None)
    train_seconds = time.perf_counter() - started
    # the test set scored here rather than by train(), to keep its predicted documents
    encoded_test = trainer.predictor.encoder.encode_corpus(list(test_docs), "test")
    evaluation = trainer.predictor.evaluate(encoded_test)
    seconds = time.perf_counter() - started
    test = evaluation.scores
    if args.predictions:
        args.predictions.mkdir(parents=True, exist_ok=True)
        write_corpus(evaluation.documents, args.predictions / f"{name}-s{args.seed}.jsonl", "jsonl")
    windows = {"train": len(trainer.corpora.train.windows), "test": len(encoded_test.windows)}
    return {
        "system": name, "context": context, "test_f1": round(100 * test["micro"]["f1"], 2),
        "precision": round(100 * test["micro"]["precision"], 2),
        "recall": round(100 * test["micro"]["recall"], 2),
        "per_type_f1": per_type_f1(test),
        "by_kind": scores_by_kind(test_docs, evaluation.documents),
        "train_seconds": round(result.train_seconds, 1), "total_seconds": round(seconds, 1),
        "test_seconds": round(seconds - train_seconds, 1),
        "train_windows_per_second": round(result.train_samples_per_second, 2),
        "optimizer_steps": result.history[-1]["global_step"] if result.history else None,
        "windows": windows,
        "train_loss": round(result.history[-1]["train_loss"], 4) if result.history else None,
        "epoch_losses": [round(row["train_loss"], 4) for row in result.history],
    }


def spread(values: list[float]) -> dict:
    """Mean, sd (None for one value), wins and losses of paired differences."""
    return {"values": [round(v, 2) for v in values], "mean": round(statistics.mean(values), 2),
            "sd": round(statistics.stdev(values), 2) if len(values) > 1 else None,
            "wins": sum(v > 0 for v in values), "losses": sum(v < 0 for v in values)}


def figures(row: dict) -> dict[str, float]:
    """A system row's F1 figures by name: ``all``, each type, each kind of sentence (``kind:table``)."""
    values = {"all": row["test_f1"], **row["per_type_f1"]}
    values.update({f"kind:{kind}": scores["f1"] for kind, scores in row.get("by_kind", {}).items()})
    return values


def aggregate(paths: list[str]) -> dict:
    """Mean ± sd of test F1 per system over runs (JSON files of one or more systems each, any seeds), and
    each system's paired difference from ``sentences`` of the same seed: over all types, per type and per
    kind of sentence (where both runs scored it)."""
    by_system: dict[str, dict[int, dict]] = {}
    for path in paths:
        run = json.loads(Path(path).read_text(encoding="utf-8"))
        for row in run["systems"]:
            by_system.setdefault(row["system"], {})[run["seed"]] = row
    base = by_system.get("sentences", {})
    summary = {}
    for system, rows in by_system.items():
        rows = dict(sorted(rows.items()))  # every list in seed order
        values = [row["test_f1"] for row in rows.values()]
        summary[system] = {"seeds": sorted(rows), "test_f1": values,
                           "mean": round(statistics.mean(values), 2),
                           "sd": round(statistics.stdev(values), 2) if len(values) > 1 else None}
        paired = [seed for seed in rows if seed in base]
        if system == "sentences" or not paired:
            continue
        differences: dict[str, list[float]] = {}
        for seed in paired:
            mine, theirs = figures(rows[seed]), figures(base[seed])
            for name in mine.keys() & theirs.keys():
                differences.setdefault(name, []).append(mine[name] - theirs[name])
        summary[system]["minus_sentences"] = spread(differences.pop("all"))
        summary[system]["minus_sentences_by"] = {name: spread(v) for name, v in sorted(differences.items())}
    return {"runs": paths, "systems": summary}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=DATA,
                        help="the CoNLL-2003 folder (train.txt, test.txt)")
    parser.add_argument("--systems", default="sentences,windows,context=64")
    parser.add_argument("--train-limit", type=int, default=0, help="first N training sentences (0: all)")
    parser.add_argument("--test-limit", type=int, default=0, help="first N test sentences (0: all)")
    parser.add_argument("--model", default="default")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (on a shared CPU, 1)")
    parser.add_argument("--set", action="append", default=[], help="KEY=VALUE: a cardioner config override")
    parser.add_argument("--predictions", type=Path,
                        help="a folder for each system's test predictions (<system>-s<seed>.jsonl)")
    parser.add_argument("--rescore", nargs="+", type=Path,
                        help="prediction files of earlier runs: print their scores by kind of sentence")
    parser.add_argument("--aggregate", nargs="+",
                        help="JSON files of earlier runs: print mean ± sd per system")
    args = parser.parse_args()
    if args.aggregate:
        print(json.dumps(aggregate(args.aggregate), indent=2))
        return

    import torch

    from cardioner.data import read_corpus

    torch.set_num_threads(args.threads)
    train, _ = read_corpus(args.data_dir / "train.txt")
    test, _ = read_corpus(args.data_dir / "test.txt")
    train, test = first_sentences(train, args.train_limit), first_sentences(test, args.test_limit)
    if args.rescore:
        print(json.dumps(rescore(args.rescore, test), indent=2))
        return
    report = {"benchmark": "context", "corpus": str(args.data_dir),
              "train_sentences": count_sentences(train), "train_documents": len(train),
              "test_sentences": count_sentences(test), "test_documents": len(test),
              "epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr,
              "max_length": args.max_length, "seed": args.seed, "threads": args.threads,
              "overrides": args.set, "model": args.model,
              "machine": {"python": sys.version.split()[0], "torch": torch.__version__,
                          "cpus": os.cpu_count(), "platform": platform.platform()},
              "systems": []}
    for name in args.systems.split(","):
        print(f"context benchmark: {name}", file=sys.stderr)
        report["systems"].append(run_system(name.strip(), args, train, test))
        print(json.dumps(report["systems"][-1]), file=sys.stderr)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
