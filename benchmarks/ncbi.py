"""NCBI-disease: cardioner (linear, CRF) against the stock Hugging Face recipe, in one process.

Same backbone, epochs, learning rate, batch size and seed for every system. The stock recipe is
AutoModelForTokenClassification + Trainer + DataCollatorForTokenClassification with first-subword labels
(the run_ner recipe). Every system is scored by the same span-level scorer (exact match, micro F1) on the
CoNLL test documents, and by seqeval on its word tags. Training throughput is training windows (sentences)
per second over the training steps only. Prints one JSON object.

    python benchmarks/ncbi.py --epochs 1 --batch-size 16 --lr 5e-5 > ncbi.json
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "ncbi_disease" / "conll"


def spans_from_token_tags(doc, tags):
    """Spans (character offsets) from one tag per CoNLL token of ``doc`` (lenient IOB2 decoding)."""
    from cardioner.data.encoding import word_tags_to_spans

    return word_tags_to_spans(doc.meta["tokens"], tags)


def run_hf_recipe(args, backbone, train_docs, test_docs, labels):
    """The stock recipe: first-subword labels, Trainer, DataCollatorForTokenClassification."""
    from datasets import Dataset
    from transformers import (
        AutoModelForTokenClassification,
        AutoTokenizer,
        DataCollatorForTokenClassification,
        Trainer,
        TrainingArguments,
    )

    from cardioner.labels import spans_to_word_tags

    label2id = {label: i for i, label in enumerate(labels)}
    tokenizer = AutoTokenizer.from_pretrained(backbone)

    def rows(docs):
        out = []
        for doc in docs:
            tokens = [doc.text[s:e] for s, e in doc.meta["tokens"]]
            tags, _ = spans_to_word_tags(doc.meta["tokens"], doc.spans)
            out.append({"tokens": tokens, "tags": [label2id[t] for t in tags]})
        return out

    def tokenize(batch):
        enc = tokenizer(
            batch["tokens"], is_split_into_words=True, truncation=True, max_length=args.max_length
        )
        all_labels = []
        for i, tags in enumerate(batch["tags"]):
            previous, labels_i = None, []
            for word in enc.word_ids(i):
                labels_i.append(-100 if word is None or word == previous else tags[word])
                previous = word
            all_labels.append(labels_i)
        enc["labels"] = all_labels
        return enc

    train = Dataset.from_list(rows(train_docs)).map(tokenize, batched=True, remove_columns=["tokens", "tags"])
    model = AutoModelForTokenClassification.from_pretrained(
        backbone, num_labels=len(labels), id2label=dict(enumerate(labels)), label2id=label2id)
    training_args = TrainingArguments(
        output_dir=str(Path(args.work_dir) / "hf"), per_device_train_batch_size=args.batch_size,
        learning_rate=args.lr, num_train_epochs=args.epochs, seed=args.seed, weight_decay=0.01,
        warmup_steps=0.1, lr_scheduler_type="linear", save_strategy="no", eval_strategy="no", report_to=[],
        logging_steps=50, disable_tqdm=True, use_cpu=not torch.cuda.is_available(), dataloader_num_workers=0,
    )
    trainer = Trainer(model=model, args=training_args, train_dataset=train,
                      data_collator=DataCollatorForTokenClassification(tokenizer))
    with contextlib.redirect_stdout(sys.stderr):  # Trainer prints its log dicts; stdout is for the JSON
        output = trainer.train()
    # Prediction: first subword of each CoNLL token.
    model.eval()
    predicted = []
    with torch.no_grad():
        for doc in test_docs:
            tokens = [doc.text[s:e] for s, e in doc.meta["tokens"]]
            enc = tokenizer(tokens, is_split_into_words=True, truncation=True, max_length=args.max_length,
                            return_tensors="pt")
            best = model(**enc).logits.argmax(-1)[0].tolist()
            tags, previous = ["O"] * len(tokens), None
            for position, word in enumerate(enc.word_ids(0)):
                if word is not None and word != previous:
                    tags[word] = labels[best[position]]
                previous = word
            predicted.append(tags)
    return {"train_samples_per_second": output.metrics["train_samples_per_second"],
            "train_seconds": output.metrics["train_runtime"], "token_tags": predicted}


def run_cardioner(args, backbone_name, train_docs, test_docs, use_crf):
    from cardioner.config import load_config
    from cardioner.training import ModelTrainer

    config = load_config(None, {
        "model.model": backbone_name, "model.use_crf": use_crf, "training.epochs": args.epochs,
        "training.batch_size": args.batch_size, "training.lr": args.lr, "training.seed": args.seed,
        "data.max_length": args.max_length, "training.patience": 0, "training.warmup_ratio": 0.1,
        **dict(item.split("=", 1) for item in args.set),
    })
    trainer = ModelTrainer(config)
    result = trainer.train(train_docs, None, None)
    started = time.perf_counter()
    predicted = list(trainer.predictor.with_batch_size(64).predict(test_docs))
    predict_seconds = time.perf_counter() - started
    return {
        "train_samples_per_second": result.train_samples_per_second,
        "train_seconds": result.train_seconds,
        "predict_seconds": predict_seconds,
        "documents": predicted,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument(
        "--train-limit", type=int, default=0, help="use the first N training sentences (0 = all)"
    )
    parser.add_argument("--systems", default="hf,linear,crf")
    parser.add_argument("--model", default="default", help="backbone (default: bundled all-MiniLM-L6-v2)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="config override for every cardioner system, e.g. --set model.prior_init=false")
    parser.add_argument("--work-dir", default="/tmp/cardioner-bench")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from cardioner.backbone import resolve_backbone
    from cardioner.data import read_corpus
    from cardioner.evaluation import score_spans, seqeval_scores
    from cardioner.labels import spans_to_word_tags

    train_docs, _ = read_corpus(DATA / "train.tsv")
    test_docs, _ = read_corpus(DATA / "test.tsv")
    if args.train_limit:
        train_docs = train_docs[: args.train_limit]
    labels = ["O", "B-Disease", "I-Disease"]
    backbone = resolve_backbone(args.model)
    gold_tags = [spans_to_word_tags(d.meta["tokens"], d.spans)[0] for d in test_docs]

    results = {}
    for system in args.systems.split(","):
        torch.manual_seed(args.seed)
        if system == "hf":
            run = run_hf_recipe(args, backbone, train_docs, test_docs, labels)
            token_tags = run.pop("token_tags")
            predicted = {
                d.id: spans_from_token_tags(d, tags) for d, tags in zip(test_docs, token_tags, strict=False)
            }
        else:
            run = run_cardioner(args, args.model, train_docs, test_docs, use_crf=system == "crf")
            documents = run.pop("documents")
            predicted = {d.id: d.spans for d in documents}
            token_tags = [spans_to_word_tags(d.meta["tokens"], predicted[d.id])[0] for d in test_docs]
        scores = score_spans(test_docs, predicted, match="exact")
        run["test_f1"] = round(scores["micro"]["f1"] * 100, 2)
        run["test_precision"] = round(scores["micro"]["precision"] * 100, 2)
        run["test_recall"] = round(scores["micro"]["recall"] * 100, 2)
        run["test_seqeval_f1"] = round(seqeval_scores(gold_tags, token_tags)["micro"]["f1"] * 100, 2)
        results[system] = run
        print(f"{system}: {json.dumps(run)}", file=sys.stderr, flush=True)
        gc.collect()

    summary = {
        "benchmark": "ncbi_disease",
        "backbone": args.model,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "seed": args.seed,
        "overrides": args.set,
        "max_length": args.max_length,
        "train_sentences": len(train_docs),
        "test_sentences": len(test_docs),
        "machine": (
            f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch "
            f"{torch.__version__}, threads {torch.get_num_threads()}"
        ),
        "systems": results,
    }
    if "hf" in results:
        base = results["hf"]
        for system in ("linear", "crf"):
            if system in results:
                summary[f"{system}_f1_minus_hf"] = round(results[system]["test_f1"] - base["test_f1"], 2)
                summary[f"{system}_throughput_ratio_vs_hf"] = round(
                    results[system]["train_samples_per_second"] / base["train_samples_per_second"], 2)
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
