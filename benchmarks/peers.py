"""Accuracy against the real peers, side by side: cardioner, Flair, SpanMarker, the Trainer recipe, spaCy.

Every system trains on the same sentences (the documents cardioner reads from the corpus), with the same
backbone folder, epochs, learning rate, batch size, seed and window length, and no dev selection (the last
epoch's weights are scored). Each system runs in its own child process: the peers in virtual environments
this script creates (``--venv-dir``; versions pinned in ``PEER_PACKAGES``), cardioner in the interpreter
running this script. A child writes its test predictions as JSONL spans with character offsets into
cardioner's reconstruction of the test documents; this process scores every system with
``cardioner.evaluation.score_spans`` (exact match). Per system: test span F1 (P/R, per type), training and
prediction sentences per second (wall clock of the training phase: building the system's data and model,
then every epoch; of the prediction phase: test sentences in, spans out, batches of 64), and the child's
peak RSS. Prints one JSON object (also written to ``--output`` after every system, so a long run keeps what
finished).

    python benchmarks/peers.py --corpus ncbi --epochs 3 --seed 42 --output ncbi-s42.json
    python benchmarks/peers.py --corpus conll2003 --epochs 1 --systems cardioner,flair-flert --output c.json
    python benchmarks/peers.py --corpus ncbi --system "lr=cardioner model.use_crf=true training.head_lr=1e-3"
    python benchmarks/peers.py --aggregate ncbi-s42.json ncbi-s1.json conll-s42.json   # markdown table + JSON

Systems (``--systems`` picks built-ins by name; ``--system "NAME=RUNNER KEY=VALUE ..."`` adds one): the
runner is ``cardioner`` (KEY=VALUE are cardioner config overrides, e.g. ``model.use_crf=true``, plus
``bench.sentences=true`` to train and predict sentence by sentence), ``flair``, ``spanmarker``, ``trainer`` or
``spacy`` (KEY=VALUE are the runner's options, listed in ``RUNNER_OPTIONS``). ``--set KEY=VALUE`` applies to
every cardioner system.

``--aggregate`` reads runs (any corpora, budgets, seeds and systems; runs of one budget and seed are merged,
so systems run side by side in separate processes count as one run) and prints, per budget and system, the
mean ± sd over seeds of test F1, P and R, the mean ratios of training and prediction speed to
``--reference`` (per seed, where it ran), and the peak RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
CORPORA = {
    "ncbi": ("ncbi_disease/conll/train.tsv", "ncbi_disease/conll/test.tsv"),
    # the same sentences, tokens and tags, grouped into their abstracts (see abstract_groups)
    "ncbi-abstracts": ("ncbi_disease/conll/train.tsv", "ncbi_disease/conll/test.tsv"),
    "conll2003": ("conll2003/train.txt", "conll2003/test.txt"),
}
NCBI_STANDOFF = {"train": "ncbi_disease/standoff/train", "test": "ncbi_disease/standoff/test"}
#: what each peer's virtual environment gets, after ``torch==2.13.0`` (the CPU wheel on this machine).
PEER_PACKAGES = {
    "flair": ["flair==0.15.1", "transformers==4.57.6", "huggingface_hub<1"],
    "spanmarker": ["span-marker==1.8.1", "transformers==4.57.6", "huggingface_hub<1"],
    "trainer": ["transformers==5.24.0", "accelerate==1.16.0"],
    "spacy": ["spacy==3.8.18", "spacy-transformers==1.4.0", "transformers==4.53.2", "huggingface_hub<1"],
}
TORCH = "torch==2.13.0"
#: each peer runner's options and their defaults (``--system "NAME=RUNNER KEY=VALUE"`` sets them).
RUNNER_OPTIONS = {
    # Flair's fine-tuning recipe (FLERT): last layer, first-subword pooling, linear or CRF on top, no RNN.
    # use_context: false, true (64 Flair tokens each side) or a number of tokens;
    # decoder_lr: none = the learning rate.
    "flair": {"use_crf": "false", "use_context": "false", "context_dropout": "0.5", "decoder_lr": "none"},
    # SpanMarker's recommended settings: spans of up to 8 words, 128 marker pairs; model_max_length: the text
    # part of a sample in subwords (default --max-length); every sample is padded to model_max_length + 2 x
    # marker_max_length. document_context: each sample is filled up to model_max_length with neighbouring
    # sentences of the same document.
    "spanmarker": {"entity_max_length": "8", "marker_max_length": "128", "model_max_length": "default",
                   "document_context": "false"},
    # run_ner's recipe with length-grouped batches (transformers 5: train_sampling_strategy="group_by_length",
    # 4.x: group_by_length=True); first-subword labels; linear warm-up and decay.
    "trainer": {"group_by_length": "true", "weight_decay": "0.01"},
    # spacy-transformers NER (transition-based parser on a transformer listener); documents: one Doc per
    # cardioner document (its strided windows see neighbouring sentences; batches of as many words as
    # --batch-size average sentences), else one Doc per sentence (batches of --batch-size sentences).
    "spacy": {"documents": "false"},
}
SYSTEMS = {
    "cardioner": ("cardioner", {}),
    "cardioner-crf": ("cardioner", {"model.use_crf": "true"}),
    "trainer": ("trainer", {}),
    "flair": ("flair", {}),
    "flair-crf": ("flair", {"use_crf": "true"}),
    "flair-flert": ("flair", {"use_context": "true"}),
    "flair-crf-flert": ("flair", {"use_crf": "true", "use_context": "true"}),
    "spanmarker": ("spanmarker", {}),
    "spanmarker-doc": ("spanmarker", {"document_context": "true"}),
    "spacy": ("spacy", {}),
    "spacy-doc": ("spacy", {"documents": "true"}),
    "cardioner-sentences": ("cardioner", {"bench.sentences": "true"}),
    "cardioner-crf-sentences": ("cardioner", {"model.use_crf": "true", "bench.sentences": "true"}),
}
#: built-ins that only differ from another system by document context: pointless on lone sentences.
CONTEXT_SYSTEMS = ("flair-flert", "flair-crf-flert", "spanmarker-doc", "spacy-doc", "cardioner-sentences",
                   "cardioner-crf-sentences")
PREDICT_BATCH = 64


# ---------------------------------------------------------------------------------------------- pure helpers
def tags_to_word_spans(tags: list[str]) -> list[tuple[int, int, str]]:
    """(first word, end word exclusive, type) of every entity in word tags, decoded leniently.

    The rules of ``cardioner.labels.tags_to_entities``: ``B-T`` starts an entity; ``I-T`` continues one of
    type T, else starts one; ``E-T`` ends one of type T (alone: a one-word entity); ``S-T`` is a one-word
    entity; ``O`` ends the open entity. Stdlib only: the peers' children run it without cardioner.
    """
    spans: list[tuple[int, int, str]] = []
    current: list | None = None  # [first, last, type]
    for i, tag in enumerate(tags):
        prefix, _, label = tag.partition("-")
        if prefix in ("I", "E") and current is not None and current[2] == label:
            current[1] = i
        else:
            if current is not None:
                spans.append((current[0], current[1] + 1, current[2]))
            current = [i, i, label] if prefix != "O" else None
        if prefix in ("E", "S") and current is not None:
            spans.append((current[0], current[1] + 1, current[2]))
            current = None
    if current is not None:
        spans.append((current[0], current[1] + 1, current[2]))
    return spans


def word_spans_to_char_spans(offsets: list[list[int]], spans) -> list[dict]:
    """Character spans ``{"start", "end", "label"}`` from word spans (first, end exclusive, label)."""
    out = []
    for first, end, label in spans:
        if not 0 <= first < end <= len(offsets):
            raise ValueError(f"word span {first}-{end} outside a sentence of {len(offsets)} words")
        out.append({"start": offsets[first][0], "end": offsets[end - 1][1], "label": label})
    return out


def group_by_document(records: list[dict]) -> list[list[dict]]:
    """Consecutive sentence records of one document (``"doc"``), in order."""
    groups: list[list[dict]] = []
    for record in records:
        if groups and groups[-1][0]["doc"] == record["doc"]:
            groups[-1].append(record)
        else:
            groups.append([record])
    return groups


def entity_types(records: list[dict]) -> list[str]:
    """The sorted entity types of the sentence records' tags."""
    return sorted({tag.partition("-")[2] for record in records for tag in record["tags"] if tag != "O"})


def parse_system(text: str) -> tuple[str, str, dict[str, str]]:
    """``"NAME=RUNNER KEY=VALUE ..."`` (or a built-in name) -> (name, runner, options); ValueError if
    malformed."""
    if "=" not in text.split(None, 1)[0]:
        name = text.strip()
        if name not in SYSTEMS:
            raise ValueError(f"unknown system {name!r}; built-ins: {', '.join(SYSTEMS)}; "
                             "or 'NAME=RUNNER KEY=VALUE ...'")
        runner, options = SYSTEMS[name]
        return name, runner, dict(options)
    head, *items = shlex.split(text)
    name, runner = head.split("=", 1)
    if runner in SYSTEMS and runner not in RUNNER_OPTIONS and runner != "cardioner":
        name_runner, options = SYSTEMS[runner]  # a built-in as the base: "flair-lr=flair-crf decoder_lr=1e-3"
        runner, options = name_runner, dict(options)
    else:
        options = {}
    if runner != "cardioner" and runner not in RUNNER_OPTIONS:
        raise ValueError(
            f"system {name!r}: unknown runner {runner!r} (cardioner, {', '.join(RUNNER_OPTIONS)})")
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"system {name!r}: expected KEY=VALUE, got {item!r}")
        if runner != "cardioner" and key not in RUNNER_OPTIONS[runner]:
            raise ValueError(
                f"system {name!r}: {runner} has no option {key!r} ({', '.join(RUNNER_OPTIONS[runner])})")
        options[key] = value
    return name, runner, options


def runner_options(runner: str, options: dict[str, str]) -> dict[str, str]:
    """A peer runner's options: its defaults updated with ``options``."""
    return {**RUNNER_OPTIONS.get(runner, {}), **options}


def as_bool(value: str) -> bool:
    if value.lower() in ("true", "1", "yes"):
        return True
    if value.lower() in ("false", "0", "no"):
        return False
    raise ValueError(f"expected true or false, got {value!r}")


def mean_sd(values: list[float]) -> tuple[float, float | None]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


#: what makes runs comparable: runs equal in all of these (and the seed) are merged into one.
BUDGET_KEYS = ("corpus", "epochs", "lr", "batch_size", "max_length", "train_limit", "test_limit", "overrides",
               "threads")


#: speeds (sentences per wall-clock second and per CPU second of the child) and the names of their ratios
SPEEDS = {"train_sentences_per_cpu_second": "train_cpu_ratio",
          "predict_sentences_per_cpu_second": "predict_cpu_ratio",
          "train_sentences_per_second": "train_ratio", "predict_sentences_per_second": "predict_ratio"}


def budget_label(run: dict) -> str:
    sentences = run.get("train_sentences")
    return f"{run['corpus']} ({f'{sentences:,} sentences, ' if sentences else ''}{run['epochs']} ep)"


def aggregate(runs: list[dict], reference: str = "cardioner") -> list[dict]:
    """One row per (budget, system): mean ± sd over seeds of F1/P/R, mean speed ratios to a reference, RSS.

    Runs of one budget (``BUDGET_KEYS``) and seed are merged whatever their files (systems run in separate
    processes side by side); a system run twice with one seed counts once (the later file wins). ``reference``
    names one system or several, comma-separated: per budget, the first of them that ran is the one speeds
    are divided by (``"reference"`` in each row). Speed ratios are taken per seed, where the reference ran
    with that budget and seed, then averaged.
    """
    merged: dict[tuple, dict[int, dict[str, dict]]] = defaultdict(lambda: defaultdict(dict))
    labels: dict[tuple, str] = {}
    for run in runs:
        budget = tuple(json.dumps(run.get(k)) for k in BUDGET_KEYS)
        labels.setdefault(budget, budget_label(run))
        merged[budget][run["seed"]].update(
            {name: row for name, row in run["systems"].items() if row.get("status") == "ok"})
    table = []
    for budget, seeds in merged.items():
        names = list(dict.fromkeys(name for systems in seeds.values() for name in systems))
        base = next((r for r in reference.split(",") if r in names), None)
        for name in names:
            rows = [seeds[seed][name] for seed in sorted(seeds) if name in seeds[seed]]
            entry = {"budget": labels[budget], "system": name, "reference": base,
                     "seeds": [seed for seed in sorted(seeds) if name in seeds[seed]]}
            for metric in ("test_f1", "test_precision", "test_recall"):
                mean, sd = mean_sd([row[metric] for row in rows])
                entry[metric] = round(mean, 2)
                entry[metric + "_sd"] = None if sd is None else round(sd, 2)
            for speed, ratio in SPEEDS.items():
                entry[speed] = round(statistics.fmean(row[speed] for row in rows), 1)
                values = [seeds[seed][name][speed] / seeds[seed][base][speed]
                          for seed in entry["seeds"] if base in seeds[seed]]
                entry[ratio] = round(statistics.fmean(values), 2) if values else None
            entry["peak_rss_mb"] = round(statistics.fmean(row["peak_rss_mb"] for row in rows))
            entry["versions"] = rows[-1].get("versions", {})
            table.append(entry)
    return table


def markdown_table(table: list[dict]) -> str:
    """The aggregate as a markdown table: F1 ± sd where there are several seeds, speeds with their ratios."""

    def with_sd(entry: dict, metric: str) -> str:
        sd = entry[metric + "_sd"]
        return f"{entry[metric]:.2f}" + (f" ± {sd:.2f}" if sd is not None else "")

    def speed(entry: dict, key: str) -> str:
        value = entry[SPEEDS[key]]
        return f"{entry[key]:.1f}" + ("" if value is None else f" ({value:.2f}×)")

    lines = ["| corpus (training budget) | system | seeds | test F1 | P | R | train sent/CPU-s "
             "| predict sent/CPU-s | train sent/s | predict sent/s | peak RSS MB |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for e in table:
        lines.append(
            f"| {e['budget']} | {e['system']} | {len(e['seeds'])} | {with_sd(e, 'test_f1')} | "
            f"{with_sd(e, 'test_precision')} | {with_sd(e, 'test_recall')} | "
            + " | ".join(speed(e, key) for key in SPEEDS) + f" | {e['peak_rss_mb']} |")
    return "\n".join(lines)


# -------------------------------------------------------------------------- corpus (main venv, cardioner)
def cut_document(doc, num_sentences: int):
    """``doc`` cut after its first ``num_sentences`` sentences (text, spans and token meta)."""
    from cardioner.data import Document

    sentences = doc.meta["sentences"][:num_sentences]
    last_token = sentences[-1][1]
    tokens = doc.meta["tokens"][:last_token]
    end = tokens[-1][1]
    meta = {**doc.meta, "tokens": tokens, "sentences": sentences}
    meta.pop("columns", None)
    return Document(doc.id, doc.text[:end], [s for s in doc.spans if s.end <= end], meta)


def abstract_groups(sentences: list[str], abstracts: dict[str, str]) -> list[tuple[str, int]]:
    """(abstract name, number of sentences) for consecutive sentences, found by their text without whitespace.

    NCBI-disease's CoNLL files hold the sentences of the standoff abstracts in the order of their file names,
    without document markers; each abstract must be exactly the concatenation of its sentences.
    """
    groups, i = [], 0
    for name in sorted(abstracts):
        text, pos, first = "".join(abstracts[name].split()), 0, i
        while pos < len(text) and i < len(sentences) and text.startswith(sentences[i], pos):
            pos += len(sentences[i])
            i += 1
        if pos != len(text) or i == first:
            raise ValueError(f"abstract {name}: the CoNLL sentences from {first + 1} on do not spell it")
        groups.append((name, i - first))
    if i != len(sentences):
        raise ValueError(f"{len(sentences) - i} CoNLL sentences after the last abstract")
    return groups


def merge_documents(doc_id: str, docs):
    """One document from single-sentence documents: their texts joined by newlines, as read_conll joins
    sentences."""
    from cardioner.data import Document, Span

    text, spans, tokens, sentences = "", [], [], []
    for doc in docs:
        shift = len(text) + (1 if text else 0)
        text = f"{text}\n{doc.text}" if text else doc.text
        spans += [Span(s.start + shift, s.end + shift, s.label) for s in doc.spans]
        sentences.append([len(tokens), len(tokens) + len(doc.meta["tokens"])])
        tokens += [[a + shift, b + shift] for a, b in doc.meta["tokens"]]
    return Document(doc_id, text, spans, {"tokens": tokens, "sentences": sentences})


def load_corpus(corpus: str, split: str, limit: int = 0, data_dir: Path = DATA):
    """cardioner's documents of one split, cut to the first ``limit`` sentences (0 = all)."""
    from cardioner.data import read_corpus

    path = data_dir / CORPORA[corpus][0 if split == "train" else 1]
    docs, _ = read_corpus(path)
    if corpus == "ncbi-abstracts":
        folder = data_dir / NCBI_STANDOFF[split]
        abstracts = {p.stem: p.read_text(encoding="utf-8") for p in folder.glob("*.txt")}
        groups, merged = abstract_groups(["".join(d.text.split()) for d in docs], abstracts), []
        for name, n in groups:
            merged.append(merge_documents(f"{split}/{name}", docs[:n]))
            docs = docs[n:]
        docs = merged
    if not limit:
        return docs
    kept, count = [], 0
    for doc in docs:
        n = len(doc.meta["sentences"])
        if count + n >= limit:
            kept.append(cut_document(doc, limit - count))
            break
        kept.append(doc)
        count += n
    return kept


def sentence_records(docs) -> list[dict]:
    """One record per sentence: document id, sentence index, tokens, their character offsets, IOB2 tags."""
    from cardioner.labels import spans_to_word_tags

    records = []
    for doc in docs:
        tags, inexact = spans_to_word_tags(doc.meta["tokens"], doc.spans)
        if inexact:
            raise ValueError(
                f"document {doc.id}: {len(inexact)} spans do not fit its tokens, e.g. {inexact[0]}")
        for k, (first, last) in enumerate(doc.meta["sentences"]):
            offsets = doc.meta["tokens"][first:last]
            records.append({"doc": doc.id, "sent": k, "tokens": [doc.text[s:e] for s, e in offsets],
                            "offsets": [list(o) for o in offsets], "tags": tags[first:last]})
    return records


def split_sentences(docs):
    """One document per sentence (id ``DOC@k``), offsets shifted; and {new id: (doc id, character shift)}."""
    from cardioner.data import Document, Span

    out, shifts = [], {}
    for doc in docs:
        for k, (first, last) in enumerate(doc.meta["sentences"]):
            start, end = doc.meta["tokens"][first][0], doc.meta["tokens"][last - 1][1]
            spans = [Span(s.start - start, s.end - start, s.label)
                     for s in doc.spans if start <= s.start and s.end <= end]
            tokens = [[s - start, e - start] for s, e in doc.meta["tokens"][first:last]]
            sentence_id = f"{doc.id}@{k}"
            out.append(Document(sentence_id, doc.text[start:end], spans,
                                {"tokens": tokens, "sentences": [[0, len(tokens)]]}))
            shifts[sentence_id] = (doc.id, start)
    return out, shifts


def clean_backbone(source: Path, target: Path) -> Path:
    """A view of the backbone folder whose tokenizer.json saves no truncation or padding.

    all-MiniLM-L6-v2's tokenizer.json truncates and pads to 128 (a sentence-transformers setting): a library
    that calls the backend tokenizer directly would cut sentences silently. Weights are symlinked, not copied.
    """
    target.mkdir(parents=True, exist_ok=True)
    for item in source.iterdir():
        link = target / item.name
        if item.name == "tokenizer.json":
            tokenizer = json.loads(item.read_text(encoding="utf-8"))
            tokenizer["truncation"] = None
            tokenizer["padding"] = None
            link.write_text(json.dumps(tokenizer, ensure_ascii=False), encoding="utf-8")
        elif not link.exists():
            link.symlink_to(item.resolve())
    return target


# ---------------------------------------------------------------------------------- virtual environments
def ensure_venv(runner: str, venv_dir: Path, log) -> Path:
    """The python of the runner's virtual environment, created (torch CPU first, then the pins) if missing."""
    venv = venv_dir / runner
    python = venv / "bin" / "python"
    wanted = [TORCH, *PEER_PACKAGES[runner]]
    stamp = venv / "cardioner-peers.json"
    if python.exists() and stamp.exists() and json.loads(stamp.read_text())["packages"] == wanted:
        return python
    if venv.exists():
        shutil.rmtree(venv)
    print(f"[peers] creating {venv}: {' '.join(wanted)}", file=sys.stderr, flush=True)
    base = getattr(sys, "_base_executable", sys.executable)
    for command in ([base, "-m", "venv", str(venv)],
                    [str(python), "-m", "pip", "install", TORCH],
                    [str(python), "-m", "pip", "install", *wanted]):
        done = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT)
        if done.returncode:
            raise RuntimeError(f"{' '.join(command)} failed (exit {done.returncode}); see {log.name}")
    frozen = subprocess.run([str(python), "-m", "pip", "freeze"], capture_output=True,
                            text=True).stdout.split()
    stamp.write_text(json.dumps({"packages": wanted, "freeze": frozen}, indent=1))
    return python


def thread_env(threads: int) -> dict[str, str]:
    """Environment that caps the child's math libraries at ``threads`` (0: their defaults)."""
    if not threads:
        return {}
    return {name: str(threads) for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}


def last_lines(path: Path, n: int = 12) -> str:
    lines = [line for line in path.read_text(errors="replace").splitlines()
             if not line.startswith("WARNING: Location")]
    return "\n".join(lines[-n:])


# --------------------------------------------------------------------------------------------- the driver
def run_system(name: str, runner: str, options: dict, args, work: Path, backbone: Path) -> dict:
    """Train and predict one system in its child process; its result row (scores added by the caller)."""
    out = work / name
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    log_path = out / "log.txt"
    with open(log_path, "w") as log:
        if runner == "cardioner":
            python = Path(sys.executable)
        else:
            try:
                python = ensure_venv(runner, Path(args.venv_dir), log)
            except RuntimeError as error:
                log.flush()
                return {"runner": runner, "options": options, "status": "not installed",
                        "error": f"{error}\n{last_lines(log_path)}"}
        spec = {"runner": runner, "options": runner_options(runner, options), "backbone": str(backbone),
                "epochs": args.epochs, "lr": args.lr, "batch_size": args.batch_size, "seed": args.seed,
                "max_length": args.max_length, "corpus": args.corpus, "train_limit": args.train_limit,
                "test_limit": args.test_limit, "data_dir": str(args.data_dir), "overrides": args.set,
                "threads": args.threads, "train": str(work / "train.jsonl"), "test": str(work / "test.jsonl"),
                "out": str(out)}
        (out / "spec.json").write_text(json.dumps(spec, indent=1))
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
               "TOKENIZERS_PARALLELISM": "false", **thread_env(args.threads), "WANDB_DISABLED": "true",
               "HF_HOME": str(work / "hf_home"),
               "PYTHONPATH": str(ROOT) if runner == "cardioner" else ""}
        started = time.perf_counter()
        child = subprocess.Popen(
            [str(python), str(Path(__file__).resolve()), "--child", str(out / "spec.json")],
            stdout=log, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - started
    result_path = out / "result.json"
    if os.waitstatus_to_exitcode(status) or not result_path.exists():
        return {"runner": runner, "options": options, "status": "failed", "wall_seconds": round(wall, 1),
                "error": last_lines(log_path), "log": str(log_path)}
    row = json.loads(result_path.read_text())
    row.update({"runner": runner, "options": options, "status": "ok", "wall_seconds": round(wall, 1),
                "peak_rss_mb": round(max(row.pop("maxrss_kb"), usage.ru_maxrss) / 1024),
                "log": str(log_path)})
    return row


def score_row(row: dict, test_docs, predictions_path: Path) -> None:
    """Add span scores (exact match, cardioner's scorer) of the child's JSONL predictions to ``row``."""
    from cardioner.evaluation import score_spans

    predicted = {}
    with open(predictions_path, encoding="utf-8") as handle:
        for line in handle:
            record = json.loads(line)
            predicted[record["id"]] = record["spans"]
    scores = score_spans(test_docs, predicted, match="exact")
    micro = scores["micro"]
    row.update({"test_f1": round(100 * micro["f1"], 2), "test_precision": round(100 * micro["precision"], 2),
                "test_recall": round(100 * micro["recall"], 2),
                "tp_fp_fn": [micro["tp"], micro["fp"], micro["fn"]],
                "test_f1_per_type": {t: round(100 * s["f1"], 2) for t, s in scores["per_type"].items()},
                "unknown_documents": scores["unknown_documents"]["documents"]})


def machine() -> str:
    load = os.getloadavg()
    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, python "
            f"{platform.python_version()}, load average at start {load[0]:.1f}")


def git_commit() -> str:
    """The checkout's commit; for a snapshot outside git (``git archive``), its folder name."""
    done = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True)
    return done.stdout.strip() if done.returncode == 0 else f"{ROOT.name} (no git)"


def run_benchmark(args) -> dict:
    from cardioner.backbone import resolve_backbone
    from cardioner.config import load_config

    systems = [parse_system(name) for name in args.systems.split(",") if name]
    systems += [parse_system(s) for s in args.system]
    if len({name for name, _, _ in systems}) != len(systems):
        raise ValueError("two systems share a name")
    for _, runner, options in systems:  # a bad cardioner key fails now, not after an hour of peers
        if runner == "cardioner":
            load_config(None, cardioner_overrides(args.__dict__ | {"backbone": "default"}, options, args.set))
    train_docs = load_corpus(args.corpus, "train", args.train_limit, Path(args.data_dir))
    test_docs = load_corpus(args.corpus, "test", args.test_limit, Path(args.data_dir))
    work = Path(args.work_dir) / f"{args.corpus}-e{args.epochs}-s{args.seed}-{time.strftime('%Y%m%d-%H%M%S')}"
    work.mkdir(parents=True)
    for split, docs in (("train", train_docs), ("test", test_docs)):
        with open(work / f"{split}.jsonl", "w", encoding="utf-8") as handle:
            for record in sentence_records(docs):
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    backbone = clean_backbone(Path(resolve_backbone(args.model)), work / "backbone")
    summary = {
        "benchmark": "peers", "corpus": args.corpus, "epochs": args.epochs, "batch_size": args.batch_size,
        "lr": args.lr, "seed": args.seed, "max_length": args.max_length, "overrides": args.set,
        "backbone": args.model, "threads": args.threads, "train_limit": args.train_limit,
        "test_limit": args.test_limit,
        "train_documents": len(train_docs), "test_documents": len(test_docs),
        "train_sentences": sum(len(d.meta["sentences"]) for d in train_docs),
        "test_sentences": sum(len(d.meta["sentences"]) for d in test_docs),
        "test_spans": sum(len(d.spans) for d in test_docs), "machine": machine(), "commit": git_commit(),
        "work_dir": str(work), "systems": {},
    }
    lone_sentences = all(len(d.meta["sentences"]) == 1 for d in train_docs + test_docs)
    for name, runner, options in systems:
        print(f"[peers] {name} ({runner} {options}) ...", file=sys.stderr, flush=True)
        if lone_sentences and name in CONTEXT_SYSTEMS:
            summary["systems"][name] = {"runner": runner, "options": options, "status": "skipped",
                                        "error": "every document is one sentence: no context to add"}
            continue
        row = run_system(name, runner, options, args, work, backbone)
        if row["status"] == "ok":
            score_row(row, test_docs, work / name / "predictions.jsonl")
        summary["systems"][name] = row
        brief = {k: row.get(k) for k in ("status", "test_f1", "train_sentences_per_second",
                                         "predict_sentences_per_second", "peak_rss_mb", "error")}
        print(f"[peers] {name}: {json.dumps(brief)}", file=sys.stderr, flush=True)
        if args.output:
            Path(args.output).write_text(json.dumps(summary, indent=2))
    base = summary["systems"].get(args.reference)
    if base and base["status"] == "ok":
        for row in summary["systems"].values():
            if row["status"] == "ok":
                for phase in ("train", "predict"):
                    speed = f"{phase}_sentences_per_second"
                    row[f"{phase}_ratio"] = round(row[speed] / base[speed], 2)
    if args.output:
        Path(args.output).write_text(json.dumps(summary, indent=2))
    return summary


# ---------------------------------------------------------------------------- children (one per system)
class Stopwatch:
    """Wall-clock and CPU seconds (this process, all its threads) since it was made."""

    def __init__(self) -> None:
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def stop(self) -> tuple[float, float]:
        return time.perf_counter() - self.wall, time.process_time() - self.cpu


def read_jsonl(path: str) -> list[dict]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


def write_predictions(path: Path, records: list[dict], word_spans: list[list]) -> None:
    """JSONL, one line per document: ``{"id", "spans": [{"start", "end", "label"}]}`` (character offsets)."""
    documents: dict[str, list[dict]] = {}
    for record, spans in zip(records, word_spans, strict=True):
        documents.setdefault(record["doc"], []).extend(word_spans_to_char_spans(record["offsets"], spans))
    with open(path, "w", encoding="utf-8") as handle:
        for doc_id, spans in documents.items():
            handle.write(json.dumps({"id": doc_id, "spans": spans}) + "\n")


def versions(*distributions: str) -> dict[str, str]:
    """The installed version of each distribution."""
    from importlib.metadata import version

    return {name: version(name) for name in distributions}


def seed_everything(seed: int) -> None:
    import numpy
    import torch

    random.seed(seed)
    numpy.random.seed(seed)
    torch.manual_seed(seed)


def cardioner_overrides(spec: dict, options: dict, global_overrides: list[str]) -> dict:
    """The cardioner config of one system: the shared budget, then ``--set``, then the system's own keys."""
    return {"model.model": spec["backbone"], "training.epochs": spec["epochs"],
            "training.batch_size": spec["batch_size"], "training.lr": spec["lr"],
            "training.seed": spec["seed"],
            "data.max_length": spec["max_length"], "training.patience": 0, "training.warmup_ratio": 0.1,
            **dict(item.split("=", 1) for item in global_overrides),
            **{k: v for k, v in options.items() if not k.startswith("bench.")}}


def child_cardioner(spec: dict, train: list[dict], test: list[dict]) -> dict:
    """cardioner on the documents it reads itself (the ones the records came from)."""
    import cardioner
    from cardioner.config import load_config
    from cardioner.training import ModelTrainer

    options = spec["options"]
    data_dir = Path(spec["data_dir"])
    train_docs = load_corpus(spec["corpus"], "train", spec["train_limit"], data_dir)
    test_docs = load_corpus(spec["corpus"], "test", spec["test_limit"], data_dir)
    by_sentence = as_bool(options.get("bench.sentences", "false"))
    if by_sentence:
        train_docs, _ = split_sentences(train_docs)
        test_docs, shifts = split_sentences(test_docs)
    config = load_config(None, cardioner_overrides(spec, options, spec["overrides"]))
    watch = Stopwatch()
    trainer = ModelTrainer(config)
    result = trainer.train(train_docs, None, None)
    train_time = watch.stop()
    watch = Stopwatch()
    predicted = list(trainer.predictor.with_batch_size(PREDICT_BATCH).predict(test_docs))
    predict_time = watch.stop()
    documents: dict[str, list[dict]] = {}
    for doc in predicted:
        doc_id, shift = shifts[doc.id] if by_sentence else (doc.id, 0)
        documents.setdefault(doc_id, []).extend(
            {"start": s.start + shift, "end": s.end + shift, "label": s.label} for s in doc.spans)
    with open(Path(spec["out"]) / "predictions.jsonl", "w", encoding="utf-8") as handle:
        for doc_id, spans in documents.items():
            handle.write(json.dumps({"id": doc_id, "spans": spans}) + "\n")
    return {"train_time": train_time, "predict_time": predict_time,
            "steps_seconds": result.train_seconds,
            "train_windows_per_second": result.train_samples_per_second,
            "versions": {"cardioner": f"{cardioner.__version__} ({git_commit()})",
                         **versions("transformers", "torch")}}


def child_trainer(spec: dict, train: list[dict], test: list[dict]) -> dict:
    """The run_ner recipe: AutoModelForTokenClassification + Trainer, first-subword labels, length-grouped
    batches."""
    import torch
    import transformers
    from transformers import (
        AutoModelForTokenClassification,
        AutoTokenizer,
        DataCollatorForTokenClassification,
        Trainer,
        TrainingArguments,
    )

    options = spec["options"]
    transformers.set_seed(spec["seed"])
    labels = ["O"] + [f"{p}-{t}" for t in entity_types(train) for p in "BI"]
    label2id = {label: i for i, label in enumerate(labels)}
    watch = Stopwatch()
    tokenizer = AutoTokenizer.from_pretrained(spec["backbone"])
    truncated = 0

    def encode(record: dict, with_labels: bool) -> tuple[dict, list[int]]:
        nonlocal truncated
        enc = tokenizer(record["tokens"], is_split_into_words=True, truncation=True,
                        max_length=spec["max_length"])
        word_ids = enc.word_ids()
        firsts = [i for i, w in enumerate(word_ids) if w is not None and (i == 0 or word_ids[i - 1] != w)]
        truncated += len(record["tokens"]) - len(firsts)
        features = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
        if with_labels:
            first_set = set(firsts)
            features["labels"] = [label2id[record["tags"][w]] if i in first_set else -100
                                  for i, w in enumerate(word_ids)]
        return features, firsts

    train_features = [encode(record, True)[0] for record in train]
    model = AutoModelForTokenClassification.from_pretrained(
        spec["backbone"], num_labels=len(labels), id2label=dict(enumerate(labels)), label2id=label2id)
    training_args = TrainingArguments(
        output_dir=str(Path(spec["out"]) / "trainer"), per_device_train_batch_size=spec["batch_size"],
        learning_rate=spec["lr"], num_train_epochs=spec["epochs"], seed=spec["seed"],
        weight_decay=float(options["weight_decay"]), warmup_steps=0.1, lr_scheduler_type="linear",
        train_sampling_strategy="group_by_length" if as_bool(options["group_by_length"]) else "random",
        save_strategy="no", eval_strategy="no", report_to=[],
        logging_steps=50, disable_tqdm=True, use_cpu=True, dataloader_num_workers=0)
    trainer = Trainer(model=model, args=training_args, train_dataset=train_features,
                      data_collator=DataCollatorForTokenClassification(tokenizer))
    output = trainer.train()
    train_time = watch.stop()
    train_truncated, truncated = truncated, 0

    watch = Stopwatch()
    model.eval()
    encoded = [encode(record, False) for record in test]
    order = sorted(range(len(test)), key=lambda i: len(encoded[i][0]["input_ids"]))
    word_spans: list[list] = [[] for _ in test]
    collator = DataCollatorForTokenClassification(tokenizer)
    with torch.inference_mode():
        for b in range(0, len(order), PREDICT_BATCH):
            batch = order[b : b + PREDICT_BATCH]
            inputs = collator([encoded[i][0] for i in batch])
            best = model(**inputs).logits.argmax(-1).tolist()
            for row, i in enumerate(batch):
                tags = ["O"] * len(test[i]["tokens"])
                for word, position in enumerate(encoded[i][1]):
                    tags[word] = labels[best[row][position]]
                word_spans[i] = tags_to_word_spans(tags)
    predict_time = watch.stop()
    write_predictions(Path(spec["out"]) / "predictions.jsonl", test, word_spans)
    return {"train_time": train_time, "predict_time": predict_time,
            "steps_seconds": output.metrics["train_runtime"],
            "notes": {"truncated_train_words": train_truncated, "truncated_test_words": truncated},
            "versions": versions("transformers", "accelerate", "torch")}


def child_flair(spec: dict, train: list[dict], test: list[dict]) -> dict:
    """Flair's SequenceTagger on TransformerWordEmbeddings, fine-tuned (the FLERT recipe; CRF and context
    optional)."""
    import flair
    import torch
    from flair.data import Corpus, Sentence
    from flair.datasets import SentenceDataset
    from flair.embeddings import TransformerWordEmbeddings
    from flair.models import SequenceTagger
    from flair.trainers import ModelTrainer

    options = spec["options"]
    flair.set_seed(spec["seed"])
    flair.device = torch.device("cpu")
    context = options["use_context"]
    use_context: bool | int = as_bool(context) if context.lower() in ("true", "false") else int(context)

    def sentences(records: list[dict], with_labels: bool) -> list:
        out = []
        for document in group_by_document(records):
            doc_sentences = []
            for record in document:
                sentence = Sentence(record["tokens"])
                if with_labels:
                    for first, end, label in tags_to_word_spans(record["tags"]):
                        sentence[first:end].add_label("ner", label)
                doc_sentences.append(sentence)
            Sentence.set_context_for_sentences(doc_sentences)  # context never crosses a document
            out.extend(doc_sentences)
        return out

    watch = Stopwatch()
    corpus = Corpus(train=SentenceDataset(sentences(train, True)), dev=None, test=None,
                    sample_missing_splits=False)
    tag_dictionary = corpus.make_label_dictionary("ner", add_unk=False)
    embeddings = TransformerWordEmbeddings(spec["backbone"], layers="-1", subtoken_pooling="first",
                                           fine_tune=True, use_context=use_context,
                                           context_dropout=float(options["context_dropout"]))
    tagger = SequenceTagger(hidden_size=256, embeddings=embeddings, tag_dictionary=tag_dictionary,
                            tag_type="ner", use_crf=as_bool(options["use_crf"]), use_rnn=False,
                            reproject_embeddings=False)
    decoder_lr = None if options["decoder_lr"] == "none" else float(options["decoder_lr"])
    ModelTrainer(tagger, corpus).fine_tune(
        Path(spec["out"]) / "flair", learning_rate=spec["lr"], decoder_learning_rate=decoder_lr,
        mini_batch_size=spec["batch_size"], max_epochs=spec["epochs"], warmup_fraction=0.1,
        save_final_model=False, create_file_logs=False, create_loss_file=False)
    train_time = watch.stop()

    watch = Stopwatch()
    test_sentences = sentences(test, False)
    tagger.predict(test_sentences, mini_batch_size=PREDICT_BATCH, label_name="predicted")
    word_spans = [[(span.tokens[0].idx - 1, span.tokens[-1].idx, span.get_label("predicted").value)
                   for span in sentence.get_spans("predicted")] for sentence in test_sentences]
    predict_time = watch.stop()
    write_predictions(Path(spec["out"]) / "predictions.jsonl", test, word_spans)

    return {"train_time": train_time, "predict_time": predict_time,
            "notes": {"tag_dictionary": tagger.label_dictionary.get_items(),
                      "context_length": embeddings.context_length},
            "versions": versions("flair", "transformers", "torch")}


def child_spanmarker(spec: dict, train: list[dict], test: list[dict]) -> dict:
    """SpanMarker: every span of up to ``entity_max_length`` words classified from its start/end markers."""
    import transformers
    from datasets import Dataset
    from span_marker import SpanMarkerModel, Trainer
    from transformers import TrainingArguments

    options = spec["options"]
    transformers.set_seed(spec["seed"])
    labels = ["O"] + [f"{p}-{t}" for t in entity_types(train) for p in "BI"]
    label2id = {label: i for i, label in enumerate(labels)}
    entity_max_length = int(options["entity_max_length"])
    model_max_length = (spec["max_length"] if options["model_max_length"] == "default"
                        else int(options["model_max_length"]))
    with_context = as_bool(options["document_context"])
    doc_index = {doc: i for i, doc in enumerate(dict.fromkeys(r["doc"] for r in train + test))}

    def dataset(records: list[dict], with_labels: bool):
        columns = {"tokens": [r["tokens"] for r in records]}
        if with_labels:
            columns["ner_tags"] = [[label2id[t] for t in r["tags"]] for r in records]
        if with_context:
            columns["document_id"] = [doc_index[r["doc"]] for r in records]
            columns["sentence_id"] = [r["sent"] for r in records]
        return Dataset.from_dict(columns)

    watch = Stopwatch()
    model = SpanMarkerModel.from_pretrained(spec["backbone"], labels=labels,
                                            model_max_length=model_max_length,
                                            entity_max_length=entity_max_length,
                                            marker_max_length=int(options["marker_max_length"]))
    training_args = TrainingArguments(
        output_dir=str(Path(spec["out"]) / "spanmarker"), per_device_train_batch_size=spec["batch_size"],
        learning_rate=spec["lr"], num_train_epochs=spec["epochs"], seed=spec["seed"], weight_decay=0.01,
        warmup_ratio=0.1, lr_scheduler_type="linear", save_strategy="no", eval_strategy="no", report_to=[],
        logging_steps=50, disable_tqdm=True, use_cpu=True, dataloader_num_workers=0)
    trainer = Trainer(model=model, args=training_args, train_dataset=dataset(train, True))
    output = trainer.train()
    train_time = watch.stop()

    watch = Stopwatch()
    entities = model.predict(dataset(test, False), batch_size=PREDICT_BATCH)
    word_spans = [[(e["word_start_index"], e["word_end_index"], e["label"]) for e in sentence]
                  for sentence in entities]
    predict_time = watch.stop()
    write_predictions(Path(spec["out"]) / "predictions.jsonl", test, word_spans)
    too_long = sum(end - first > entity_max_length
                   for r in test for first, end, _ in tags_to_word_spans(r["tags"]))
    return {"train_time": train_time, "predict_time": predict_time,
            "steps_seconds": output.metrics["train_runtime"],
            "notes": {"entity_max_length": entity_max_length, "model_max_length": model_max_length,
                      "test_entities_longer": too_long},
            "versions": versions("span-marker", "transformers", "datasets", "torch")}


def child_spacy(spec: dict, train: list[dict], test: list[dict]) -> dict:
    """spacy-transformers: the transition-based NER on a transformer listener, trained by spaCy's own loop."""
    import spacy
    import spacy_transformers  # noqa: F401  (registers the transformer component)
    from spacy.cli.init_config import init_config
    from spacy.tokens import Doc, DocBin, Span
    from spacy.training.initialize import init_nlp
    from spacy.training.loop import train as spacy_train

    options = spec["options"]
    out = Path(spec["out"])
    spacy.util.fix_random_seed(spec["seed"])
    whole_documents = as_bool(options["documents"])
    nlp_blank = spacy.blank("en")

    def units(records: list[dict]) -> list[list[dict]]:
        return group_by_document(records) if whole_documents else [[r] for r in records]

    def make_doc(unit: list[dict], with_labels: bool):
        words = [w for r in unit for w in r["tokens"]]
        doc = Doc(nlp_blank.vocab, words=words,
                  sent_starts=[k == 0 for r in unit for k in range(len(r["tokens"]))])
        if with_labels:
            spans, base = [], 0
            for r in unit:
                spans += [Span(doc, base + first, base + end, label=label)
                          for first, end, label in tags_to_word_spans(r["tags"])]
                base += len(r["tokens"])
            doc.ents = spans
        return doc

    watch = Stopwatch()
    train_units = units(train)
    DocBin(docs=[make_doc(u, True) for u in train_units]).to_disk(out / "train.spacy")
    # spaCy's loop needs a dev set; nothing is selected on it
    DocBin(docs=[make_doc(u, True) for u in train_units[:8]]).to_disk(out / "dev.spacy")
    if whole_documents:  # as many words per batch as batch_size average sentences
        words = sum(len(r["tokens"]) for r in train)
        batch_words = max(1, round(spec["batch_size"] * words / len(train)))
        batcher = {"@batchers": "spacy.batch_by_words.v1", "size": batch_words, "tolerance": 0.2,
                   "discard_oversize": False, "get_length": None}
        steps = spec["epochs"] * -(-words // batch_words)
    else:
        batcher = {"@batchers": "spacy.batch_by_sequence.v1", "size": spec["batch_size"], "get_length": None}
        steps = spec["epochs"] * -(-len(train_units) // spec["batch_size"])
    # gpu=True asks for spaCy's transformer pipeline (it runs on CPU: use_gpu=-1 below)
    config = init_config(lang="en", pipeline=["ner"], optimize="accuracy", gpu=True)
    config["components"]["transformer"]["model"]["name"] = spec["backbone"]
    config["components"]["transformer"]["model"]["get_spans"] = {
        "@span_getters": "spacy-transformers.strided_spans.v1", "window": spec["max_length"] // 2,
        "stride": spec["max_length"] * 3 // 8}
    config["paths"]["train"] = str(out / "train.spacy")
    config["paths"]["dev"] = str(out / "dev.spacy")
    config["system"]["seed"] = spec["seed"]
    config["system"]["gpu_allocator"] = None
    training = config["training"]
    training.update({"max_epochs": spec["epochs"], "max_steps": 0, "patience": 0, "eval_frequency": 10**9,
                     "accumulate_gradient": 1, "seed": spec["seed"], "gpu_allocator": None})
    training["batcher"] = batcher
    training["optimizer"]["learn_rate"] = {"@schedules": "warmup_linear.v1",
                                           "warmup_steps": max(1, steps // 10), "total_steps": steps,
                                           "initial_rate": spec["lr"]}
    (out / "config.cfg").write_text(config.to_str())
    nlp = init_nlp(config, use_gpu=-1)
    (out / "model").mkdir()
    spacy_train(nlp, out / "model", use_gpu=-1, stdout=sys.stdout, stderr=sys.stderr)
    nlp = spacy.load(out / "model" / "model-last")  # what spaCy saved: the averaged parameters
    train_time = watch.stop()

    watch = Stopwatch()
    test_units = units(test)
    docs = list(nlp.pipe((make_doc(u, False) for u in test_units), batch_size=PREDICT_BATCH))
    word_spans: list[list] = []
    for unit, doc in zip(test_units, docs, strict=True):
        base = 0
        for r in unit:
            n = len(r["tokens"])
            word_spans.append([(e.start - base, e.end - base, e.label_)
                               for e in doc.ents if base <= e.start < base + n])
            base += n
    predict_time = watch.stop()
    crossing = sum(end > len(r["tokens"])
                   for r, spans in zip(test, word_spans, strict=True) for _, end, _ in spans)
    word_spans = [[(first, min(end, len(r["tokens"])), label) for first, end, label in spans]
                  for r, spans in zip(test, word_spans, strict=True)]
    write_predictions(out / "predictions.jsonl", test, word_spans)
    return {"train_time": train_time, "predict_time": predict_time,
            "notes": {"entities_across_sentences_cut": crossing, "units": len(train_units)},
            "versions": versions("spacy", "spacy-transformers", "transformers", "torch")}


CHILDREN = {"cardioner": child_cardioner, "trainer": child_trainer, "flair": child_flair,
            "spanmarker": child_spanmarker, "spacy": child_spacy}


def run_child(spec_path: str) -> None:
    """Child process: train and predict one system; write result.json (times, versions, peak RSS)."""
    spec = json.loads(Path(spec_path).read_text())
    train, test = read_jsonl(spec["train"]), read_jsonl(spec["test"])
    if spec["threads"]:
        import torch

        torch.set_num_threads(spec["threads"])
    seed_everything(spec["seed"])
    result = CHILDREN[spec["runner"]](spec, train, test)
    for phase, sentences in (("train", len(train) * spec["epochs"]), ("predict", len(test))):
        wall, cpu = result.pop(f"{phase}_time")
        result[f"{phase}_seconds"] = round(wall, 1)
        result[f"{phase}_cpu_seconds"] = round(cpu, 1)
        result[f"{phase}_sentences_per_second"] = round(sentences / wall, 2)
        result[f"{phase}_sentences_per_cpu_second"] = round(sentences / cpu, 2)
    import torch

    result["torch_threads"] = torch.get_num_threads()
    result["maxrss_kb"] = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                              resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    Path(spec["out"], "result.json").write_text(json.dumps(result, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", choices=sorted(CORPORA), default="ncbi")
    parser.add_argument("--systems", default=",".join(SYSTEMS),
                        help="built-in systems, comma-separated (default: all; context variants are "
                             "skipped on corpora of lone sentences)")
    parser.add_argument("--system", action="append", default=[], metavar="'NAME=RUNNER KEY=VALUE ...'",
                        help="an extra system, e.g. 'plain=cardioner model.prior_init=false' or "
                             "'flair-lr=flair-crf decoder_lr=1e-3'")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="cardioner config override for every cardioner system")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--max-length", type=int, default=256, help="window / sequence length in subwords")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch/OpenMP threads per system (0 = torch's default); on a shared 2-core "
                             "machine two threads spin-wait: one thread was 2.5x faster per training step "
                             "under load")
    parser.add_argument("--train-limit", type=int, default=0, help="the first N training sentences (0 = all)")
    parser.add_argument("--test-limit", type=int, default=0, help="the first N test sentences (0 = all)")
    parser.add_argument("--model", default="default",
                        help="backbone folder (default: the bundled all-MiniLM-L6-v2)")
    parser.add_argument("--data-dir", default=str(DATA), help="the shared corpora folder")
    parser.add_argument("--venv-dir", default=str(Path.home() / ".cache" / "cardioner-peers" / "venvs"),
                        help="the peers' virtual environments (created once, reused)")
    parser.add_argument("--work-dir", default="peers-runs", help="the runs' corpora, models, predictions")
    parser.add_argument("--output", help="write the JSON here too (after every system)")
    parser.add_argument("--reference", default="cardioner",
                        help="the system speeds are divided by; with --aggregate, several comma-separated "
                             "names: per budget, the first that ran")
    parser.add_argument("--aggregate", nargs="+", metavar="RUN.json",
                        help="merge runs into a table; trains nothing")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        run_child(args.child)
        return
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.aggregate:
        table = aggregate([json.loads(Path(p).read_text()) for p in args.aggregate], args.reference)
        print(markdown_table(table), file=sys.stderr)
        print(json.dumps(table, indent=2))
        return
    print(json.dumps(run_benchmark(args), indent=2))


if __name__ == "__main__":
    main()
