"""Error analysis of an exported model on an annotated corpus: what it confuses, misses and invents, and how
the backbone lays out words of each type.

``analyze_model(model_dir, data_path, output_dir)`` writes:

- ``confusion_matrix.json`` / ``.png``: span-level confusion over entity types. Gold and
  predicted spans are paired one-to-one: exact matches first, then overlaps of the same type,
  then overlaps of any type (each greedy, most shared characters first, as the overlap scorer
  does); rows are gold types plus ``spurious`` (a prediction overlapping no gold span),
  columns are predicted types plus ``missed`` (a gold span overlapping no prediction).
- ``errors.json`` / ``errors.md``: per gold type, counts and examples (with context) of missed spans, wrong
  types, wrong boundaries (same type, overlapping, not exact) and spurious predictions.
- ``words_pca.png`` / ``words_tsne.png``: the backbone's representation of each word's first subword (what
  the head reads), projected to 2-D by PCA and by t-SNE, coloured by the word's gold type (a sample).
"""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path

import numpy as np
import torch

from cardioner import processes
from cardioner.data.document import Document, Span
from cardioner.data.io import read_corpus
from cardioner.data.paths import check_output_folder
from cardioner.errors import CorpusError
from cardioner.inference import load_predictor
from cardioner.labels import LabelSet
from cardioner.metrics.span_matching import greedy_overlap_pairs, span_key
from cardioner.plots import plot_confusion, plot_projection
from cardioner.predictor import Predictor
from cardioner.values import counted

logger = logging.getLogger("cardioner")

MISSED, SPURIOUS, OUTSIDE = "missed", "spurious", "O"


# ------------------------------------------------------------------------------------------------------------
# Span confusion
# ------------------------------------------------------------------------------------------------------------


def match_spans(gold: list[Span], predicted: list[Span]) -> list[tuple[Span | None, Span | None]]:
    """Pair one document's gold and predicted spans one-to-one, in three rounds: exact matches (same type,
    same boundaries) first, then overlaps of the same type, then overlaps of any type (each round greedy by
    shared characters). An exactly right span nested in another gold span is thus paired with its own gold
    span, as the span scorer counts it, and not with the enclosing one.

    Returns:
        (gold, predicted) pairs: both set for overlapping spans, (gold, None) for a missed span,
        (None, predicted) for a spurious one; every span appears once.
    """
    gold_keys = [span_key(s.label, s.start, s.end, s.fragments or ()) for s in gold]
    pred_keys = [span_key(s.label, s.start, s.end, s.fragments or ()) for s in predicted]
    pairs: list[tuple[int, int]] = []
    used_gold: set[int] = set()
    used_pred: set[int] = set()
    for g, key in enumerate(gold_keys):  # round 1: exact
        p = next((p for p, other in enumerate(pred_keys) if p not in used_pred and other == key), None)
        if p is not None:
            pairs.append((g, p))
            used_gold.add(g)
            used_pred.add(p)
    labels = sorted({s.label for s in gold})
    for group in [[label] for label in labels] + [None]:  # round 2: overlaps per type; round 3: any overlap
        free_gold = [
            g for g in range(len(gold)) if g not in used_gold and (group is None or gold[g].label in group)
        ]
        free_pred = [p for p in range(len(predicted))
                     if p not in used_pred and (group is None or predicted[p].label in group)]
        for g, p in greedy_overlap_pairs(
            [gold_keys[g] for g in free_gold], [pred_keys[p] for p in free_pred]
        ):
            pairs.append((free_gold[g], free_pred[p]))
            used_gold.add(free_gold[g])
            used_pred.add(free_pred[p])
    result: list[tuple[Span | None, Span | None]] = [(gold[g], predicted[p]) for g, p in sorted(pairs)]
    result += [(span, None) for g, span in enumerate(gold) if g not in used_gold]
    result += [(None, span) for p, span in enumerate(predicted) if p not in used_pred]
    return result


def confusion_matrix(gold_docs: list[Document], predicted_docs: list[Document], types: list[str]) -> dict:
    """Span-level confusion over entity types (overlap matching; see the module docstring).

    Args:
        gold_docs: documents with gold spans.
        predicted_docs: the same documents (same ids) with predicted spans.
        types: the entity types, in display order (types found only in the data are appended).

    Returns:
        {"gold": row labels (types + "spurious"), "predicted": column labels (types + "missed"),
        "counts": rows x columns, "exact_boundaries": how many overlapping pairs also match exactly}.
    """
    found = sorted({s.label for d in (*gold_docs, *predicted_docs) for s in d.spans} - set(types))
    types = [*types, *found]
    rows, cols = [*types, SPURIOUS], [*types, MISSED]
    counts = np.zeros((len(rows), len(cols)), dtype=int)
    exact = 0
    predicted_by_id = {d.id: d for d in predicted_docs}
    for doc in gold_docs:
        predicted = predicted_by_id[doc.id].spans if doc.id in predicted_by_id else []
        for gold, pred in match_spans(doc.spans, predicted):
            row = rows.index(gold.label) if gold else rows.index(SPURIOUS)
            col = cols.index(pred.label) if pred else cols.index(MISSED)
            counts[row, col] += 1
            exact += bool(gold and pred and (gold.start, gold.end) == (pred.start, pred.end))
    return {"match": "overlap", "gold": rows, "predicted": cols, "counts": counts.tolist(),
            "exact_boundaries": exact}


def error_examples(gold_docs: list[Document], predicted_docs: list[Document], max_examples: int = 20,
                   context: int = 40) -> dict:
    """Per gold type: counts and examples of missed, wrong-type, wrong-boundary and spurious spans.

    Spurious predictions are filed under their predicted type. Examples are the first ``max_examples`` of each
    kind in document order; counts are complete.
    """
    errors: dict[str, dict] = {}
    predicted_by_id = {d.id: d for d in predicted_docs}

    def entry(entity_type: str) -> dict:
        kinds = ("missed", "wrong_type", "wrong_boundary", "spurious")
        return errors.setdefault(entity_type, {"correct": 0, "counts": dict.fromkeys(kinds, 0),
                                               "examples": {kind: [] for kind in kinds}})

    def describe(doc: Document, span: Span | None) -> dict | None:
        if span is None:
            return None
        return {"label": span.label, "start": span.start, "end": span.end,
                "text": doc.text[span.start : span.end]}

    for doc in gold_docs:
        predicted = predicted_by_id[doc.id].spans if doc.id in predicted_by_id else []
        for gold, pred in match_spans(doc.spans, predicted):
            if (
                gold
                and pred
                and gold.label == pred.label
                and (gold.start, gold.end) == (pred.start, pred.end)
            ):
                entry(gold.label)["correct"] += 1
                continue
            if gold is None:
                kind = "spurious"
            elif pred is None:
                kind = "missed"
            else:
                kind = "wrong_type" if gold.label != pred.label else "wrong_boundary"
            record = entry(gold.label if gold else pred.label)
            record["counts"][kind] += 1
            if len(record["examples"][kind]) < max_examples:
                spans = [s for s in (gold, pred) if s is not None]
                start, end = min(s.start for s in spans), max(s.end for s in spans)
                record["examples"][kind].append({
                    "document": doc.id, "gold": describe(doc, gold), "predicted": describe(doc, pred),
                    "context": _context(doc.text, start, end, context),
                })
    return dict(sorted(errors.items()))


def _context(text: str, start: int, end: int, width: int) -> str:
    """The text around [start, end) with the span in [[double brackets]], on one line."""
    left = text[max(0, start - width) : start]
    right = text[end : end + width]
    before = "…" if start > width else ""
    after = "…" if end + width < len(text) else ""
    return " ".join(f"{before}{left}[[{text[start:end]}]]{right}{after}".split())


def errors_markdown(errors: dict, title: str) -> str:
    """errors.md: a count table, then examples per type and kind."""
    lines = [f"# {title}", "", "| type | correct | missed | wrong type | wrong boundary | spurious |",
             "|---|---:|---:|---:|---:|---:|"]
    for entity_type, record in errors.items():
        c = record["counts"]
        lines.append(f"| {entity_type} | {record['correct']} | {c['missed']} | {c['wrong_type']} | "
                     f"{c['wrong_boundary']} | {c['spurious']} |")
    for entity_type, record in errors.items():
        lines += ["", f"## {entity_type}"]
        for kind, examples in record["examples"].items():
            if not examples:
                continue
            count = record["counts"][kind]
            shown = f"{count}; the first {len(examples)} shown" if len(examples) < count else f"{count}"
            lines += ["", f"### {kind.replace('_', ' ')} ({shown})", ""]
            for example in examples:
                gold, pred = example["gold"], example["predicted"]
                said = f"gold {gold['label']} “{gold['text']}”" if gold else "no gold span"
                said += f" → predicted {pred['label']} “{pred['text']}”" if pred else " → nothing predicted"
                context = example["context"].replace("|", "\\|")
                lines.append(f"- `{example['document']}`: {said} — {context}")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------------------
# Word representations
# ------------------------------------------------------------------------------------------------------------


@torch.no_grad()
def word_representations(predictor: Predictor, docs: list[Document]) -> tuple[np.ndarray, list[str]]:
    """The backbone features at each word's first subword (each word taken from the first window holding it).

    Returns:
        (features (num_words, feature_size) float32, gold entity type of each word, "O" outside entities).
    """
    model, batch_size = predictor.model, predictor.batch_size
    model.eval()
    device = next(model.parameters()).device
    encoded, _ = predictor.encoder.encode(docs)
    rows: list[np.ndarray] = []
    types: list[str] = []
    for enc in encoded:
        seen: set[int] = set()
        for start in range(0, len(enc.windows), batch_size):
            windows = enc.windows[start : start + batch_size]
            batch = predictor.collate(windows)
            features = model.backbone_features(
                batch["input_ids"].to(device), batch["attention_mask"].to(device),
                batch["token_type_ids"].to(device) if "token_type_ids" in batch else None,
            )  # shape: (windows, seq_len, *feature_shape)
            features = features.flatten(2).float().cpu().numpy()  # shape: (windows, seq_len, feature_size)
            for row, window in zip(features, windows, strict=True):
                for position, word in enumerate(window["word_ids"]):
                    if word < 0 or word in seen:
                        continue
                    seen.add(word)
                    rows.append(row[position])
                    types.append(_word_type(predictor.labels, enc.word_labels[word]))
    size = rows[0].shape[0] if rows else 0
    return np.stack(rows) if rows else np.zeros((0, size), dtype=np.float32), types


def _word_type(labels: LabelSet, word_label: list[int]) -> str:
    """The entity type of a word's gold tags: that of its first channel whose tag is not O."""
    for channel, tag_id in zip(labels.channels, word_label, strict=True):
        tag = channel.typed_tag(int(tag_id))
        if tag != OUTSIDE:
            return tag.split("-", 1)[1]
    return OUTSIDE


def sample_words(types: list[str], max_words: int, seed: int = 0) -> list[int]:
    """Indices of at most ``max_words`` words (seeded): up to
    half of them entity words, shared by type; then O words."""
    rng = random.Random(seed)
    by_type: dict[str, list[int]] = {}
    for index, entity_type in enumerate(types):
        by_type.setdefault(entity_type, []).append(index)
    entity_types = sorted(t for t in by_type if t != OUTSIDE)
    chosen: list[int] = []
    share = max_words // 2 // max(len(entity_types), 1)
    for entity_type in entity_types:
        indices = by_type[entity_type]
        chosen += rng.sample(indices, min(share, len(indices)))
    outside = by_type.get(OUTSIDE, [])
    chosen += rng.sample(outside, min(max_words - len(chosen), len(outside)))
    return sorted(chosen)


# ------------------------------------------------------------------------------------------------------------
# The command
# ------------------------------------------------------------------------------------------------------------


def default_output(model_dir: str | Path) -> Path:
    """Where ``analyze`` writes when not told: ``<model_dir>.analysis``, beside the export."""
    model_dir = Path(model_dir).absolute()
    return model_dir.parent / f"{model_dir.name}.analysis"


def analyze_model(model_dir: str | Path, data_path: str | Path, output_dir: str | Path | None = None,
                  format: str | None = None, batch_size: int = 32, max_words: int = 2000,
                  max_examples: int = 20, seed: int = 0) -> dict[str, Path]:
    """Predict ``data_path`` with the export in ``model_dir`` and write the analysis files to ``output_dir``.

    Args:
        model_dir: an exported model folder.
        data_path: an annotated corpus (any format ``read_corpus`` reads).
        output_dir: where the files go; default ``<model_dir>.analysis`` beside the export (never inside it: a
            later export to that folder replaces it whole).
        format: the corpus format (default: detect).
        batch_size: windows per batch.
        max_words: words in the PCA / t-SNE plots (entity words first, then a sample of O words).
        max_examples: examples per type and error kind.
        seed: seed of the word sample and of t-SNE.

    Returns:
        {name: path} of the files written.
    """
    from sklearn.decomposition import PCA  # optional (the analysis extra), and slow to import
    from sklearn.manifold import TSNE

    processes.refuse_several("the analysis of an export")
    output = Path(output_dir) if output_dir is not None else default_output(model_dir)
    check_output_folder(output, ("confusion_matrix.json",), "an earlier analysis")  # never another folder
    docs, report = read_corpus(data_path, format=format)
    if not docs:
        raise CorpusError("no documents", data_path)
    if not any(d.spans for d in docs):
        raise CorpusError("no annotated spans to analyse", data_path)
    predictor = load_predictor(model_dir, batch_size=batch_size)
    output.mkdir(parents=True, exist_ok=True)
    name = Path(model_dir).name
    predicted = list(predictor.predict(docs))
    paths: dict[str, Path] = {}

    matrix = confusion_matrix(docs, predicted, list(predictor.labels.types))
    paths["confusion_json"] = output / "confusion_matrix.json"
    paths["confusion_json"].write_text(json.dumps(matrix, indent=2), encoding="utf-8")
    paths["confusion_png"] = plot_confusion(
        matrix,
        output / "confusion_matrix.png",
        f"Span confusion (overlap match) — {name} on {Path(data_path).name}",
    )
    errors = error_examples(docs, predicted, max_examples)
    paths["errors_json"] = output / "errors.json"
    paths["errors_json"].write_text(json.dumps(errors, indent=2, ensure_ascii=False), encoding="utf-8")
    paths["errors_md"] = output / "errors.md"
    paths["errors_md"].write_text(errors_markdown(errors, f"Errors of {name} on {Path(data_path).name}"),
                                  encoding="utf-8")

    features, types = word_representations(predictor, docs)
    chosen = sample_words(types, max_words, seed)
    features, types = features[chosen], [types[i] for i in chosen]
    if len(types) < 5:
        raise CorpusError(f"only {counted(len(types), 'word')}; too few to plot", data_path)
    pca = PCA(n_components=2, random_state=seed).fit(features)
    paths["pca_png"] = plot_projection(
        pca.transform(features), types, output / "words_pca.png",
        f"Word representations (PCA, {counted(len(types), 'word')}) — {name}", "PC",
        list(pca.explained_variance_ratio_))
    tsne = TSNE(n_components=2, perplexity=min(30.0, (len(types) - 1) / 3), init="pca", random_state=seed)
    paths["tsne_png"] = plot_projection(
        tsne.fit_transform(features), types, output / "words_tsne.png",
        f"Word representations (t-SNE, {counted(len(types), 'word')}) — {name}", "t-SNE")
    logger.info("analysis of %s on %s written to %s", model_dir, data_path, output)
    return paths
