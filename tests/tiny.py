"""Tiny backbones and tokenizers for tests: built locally in seconds, nothing downloaded.

``tiny_backbone(kind, directory)`` writes (once) a randomly initialised encoder (hidden 32, 2 layers, 2 heads)
and a fast tokenizer trained on a few sentences, in the format of the real family:

- WordPiece (``##`` continuation): bert, distilbert, electra
- byte-level BPE (``Ġ`` word marker): roberta, modernbert
- Unigram + Metaspace (``▁`` word marker): xlmr, deberta-v2

and returns the folder, loadable with ``AutoModel.from_pretrained`` / ``AutoTokenizer.from_pretrained``.
Also the tiny clinical corpus the tests train on (``CORPUS``, its ``ANNOTATIONS``, ``annotated_documents()``)
and ``load_script``, which imports a script of scripts/ or benchmarks/ as a module.

The tokenizers were trained once and are kept in ``tests/tokenizers/`` (delete a file to train it again): the
WordPiece and Unigram trainers of ``tokenizers`` give a different vocabulary in every process, which made
every tiny model, and whether a briefly trained one decodes any entity, change from run to run.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import torch
import transformers
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import AutoConfig, AutoModel, PreTrainedTokenizerFast

from cardioner.data.document import Document, Span

TOKENIZERS = Path(__file__).resolve().parent / "tokenizers"
CORPUS = [
    "The patient was admitted with acute myocardial infarction and chest pain.",
    "Aspirin 100 mg daily was started; heparin was stopped (bleeding risk).",
    "No history of diabetes mellitus, hypertension or heart failure.",
    "Echocardiography showed a reduced ejection fraction of 35%.",
    "El paciente presenta dolor torácico y disnea desde hace dos días.",
    "Se administró nitroglicerina sublingual con mejoría del dolor.",
    "Family history: father with coronary artery disease at age 54.",
    "She denies fever, cough, or recent travel; metoprolol was increased.",
]

# Entities in CORPUS, by phrase (nested ones included): the annotated form of the tiny corpus.
ANNOTATIONS = {0: [("acute myocardial infarction", "DISO"), ("myocardial", "ANAT")],
               1: [("Aspirin", "CHEM"), ("heparin", "CHEM")],
               2: [("diabetes mellitus", "DISO"), ("heart", "ANAT")]}


def annotated_documents() -> list[Document]:
    """CORPUS as cardioner Documents carrying ANNOTATIONS' spans."""
    docs = []
    for index, text in enumerate(CORPUS):
        spans = [Span(text.index(phrase), text.index(phrase) + len(phrase), label)
                 for phrase, label in ANNOTATIONS.get(index, [])]
        docs.append(Document(f"d{index}", text, spans))
    return docs


def load_script(path: Path, name: str) -> ModuleType:
    """A script of scripts/ or benchmarks/ imported as a module under ``name`` (they are not a package)."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


WORDPIECE_KINDS = ("bert", "distilbert", "electra")
BYTE_BPE_KINDS = ("roberta", "modernbert")
UNIGRAM_KINDS = ("xlmr", "deberta-v2")
KINDS = WORDPIECE_KINDS + BYTE_BPE_KINDS + UNIGRAM_KINDS


def available_kinds() -> tuple[str, ...]:
    """The kinds the installed transformers can build (ModernBERT needs a recent version)."""
    return tuple(kind for kind in KINDS if kind != "modernbert" or hasattr(transformers, "ModernBertConfig"))


def _training_text() -> list[str]:
    return CORPUS * 4


def _trained_once(name: str, train: Callable[[], Tokenizer]) -> Tokenizer:
    """The tokenizer kept in ``tests/tokenizers/<name>.json``;
    trained with ``train`` and kept there if missing."""
    path = TOKENIZERS / f"{name}.json"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        train().save(str(path))
    return Tokenizer.from_file(str(path))


def _train_wordpiece() -> Tokenizer:
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(vocab_size=220, special_tokens=specials, min_frequency=2)
    tokenizer.train_from_iterator(_training_text(), trainer)
    cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    return tokenizer


def _wordpiece_tokenizer() -> PreTrainedTokenizerFast:
    tokenizer = _trained_once("wordpiece", _train_wordpiece)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        pad_token="[PAD]",
        mask_token="[MASK]",
    )


def _train_byte_bpe() -> Tokenizer:
    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        min_frequency=2,
    )
    tokenizer.train_from_iterator(_training_text(), trainer)
    tokenizer.post_processor = processors.RobertaProcessing(
        ("</s>", tokenizer.token_to_id("</s>")), ("<s>", tokenizer.token_to_id("<s>")), trim_offsets=True
    )
    return tokenizer


def _byte_bpe_tokenizer() -> PreTrainedTokenizerFast:
    tokenizer = _trained_once("byte-bpe", _train_byte_bpe)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        cls_token="<s>",
        sep_token="</s>",
        pad_token="<pad>",
        mask_token="<mask>",
    )


def _unigram_specials(kind: str) -> tuple[str, str, str, str, str]:
    """cls, sep, pad, unk, mask of the Unigram family ``kind``."""
    if kind == "xlmr":
        return "<s>", "</s>", "<pad>", "<unk>", "<mask>"
    return "[CLS]", "[SEP]", "[PAD]", "[UNK]", "[MASK]"


def _train_unigram(kind: str) -> Tokenizer:
    cls, sep, pad, unk, mask = _unigram_specials(kind)
    specials = [cls, pad, sep, unk, mask] if kind == "xlmr" else [pad, cls, sep, unk, mask]
    tokenizer = Tokenizer(models.Unigram())
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.decoder = decoders.Metaspace()
    trainer = trainers.UnigramTrainer(vocab_size=200, special_tokens=specials, unk_token=unk)
    tokenizer.train_from_iterator(_training_text(), trainer)
    cls_id, sep_id = tokenizer.token_to_id(cls), tokenizer.token_to_id(sep)
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{cls} $A {sep}",
        pair=f"{cls} $A {sep} $B {sep}",
        special_tokens=[(cls, cls_id), (sep, sep_id)],
    )
    return tokenizer


def _unigram_tokenizer(kind: str) -> PreTrainedTokenizerFast:
    cls, sep, pad, unk, mask = _unigram_specials(kind)
    tokenizer = _trained_once(f"unigram-{kind}", lambda: _train_unigram(kind))
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        unk_token=unk,
        cls_token=cls,
        sep_token=sep,
        pad_token=pad,
        mask_token=mask,
    )


def tiny_tokenizer(kind: str) -> PreTrainedTokenizerFast:
    """A fast tokenizer of the family of ``kind``, trained on CORPUS."""
    if kind in WORDPIECE_KINDS:
        return _wordpiece_tokenizer()
    if kind in BYTE_BPE_KINDS:
        return _byte_bpe_tokenizer()
    if kind in UNIGRAM_KINDS:
        return _unigram_tokenizer(kind)
    raise ValueError(f"unknown tiny backbone kind {kind!r}; expected one of {KINDS}")


def tiny_config(kind: str, tokenizer: PreTrainedTokenizerFast) -> transformers.PretrainedConfig:
    """A hidden-32, 2-layer, 2-head config of the family of ``kind`` sized for ``tokenizer``."""
    size = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
    ids = dict(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id)
    if kind == "bert":
        return AutoConfig.for_model("bert", max_position_embeddings=128, **size, **ids)
    if kind == "electra":
        return AutoConfig.for_model("electra", embedding_size=32, max_position_embeddings=128, **size, **ids)
    if kind == "distilbert":
        return AutoConfig.for_model(
            "distilbert", dim=32, n_layers=2, n_heads=2, hidden_dim=64, max_position_embeddings=128, **ids
        )
    if kind == "roberta":
        return AutoConfig.for_model("roberta", max_position_embeddings=130, **size, **ids)
    if kind == "xlmr":
        return AutoConfig.for_model("xlm-roberta", max_position_embeddings=130, **size, **ids)
    if kind == "deberta-v2":
        return AutoConfig.for_model("deberta-v2", max_position_embeddings=128, **size, **ids)
    if kind == "modernbert":
        return AutoConfig.for_model(
            "modernbert",
            max_position_embeddings=128,
            global_attn_every_n_layers=2,
            local_attention=16,
            bos_token_id=tokenizer.cls_token_id,
            eos_token_id=tokenizer.sep_token_id,
            cls_token_id=tokenizer.cls_token_id,
            sep_token_id=tokenizer.sep_token_id,
            **size,
            **ids,
        )
    raise ValueError(f"unknown tiny backbone kind {kind!r}; expected one of {KINDS}")


def tiny_backbone(kind: str, directory: str | Path, seed: int = 0) -> Path:
    """Write (once) a tiny backbone + tokenizer of the family of ``kind`` under ``directory/kind``.

    Args:
        kind: one of KINDS ("bert", "distilbert", "electra", "roberta", "modernbert", "xlmr", "deberta-v2").
        directory: parent folder (e.g. a pytest tmp_path).
        seed: seed of the random weights.

    Returns:
        the folder, loadable with AutoModel/AutoTokenizer.from_pretrained.
    """
    path = Path(directory) / kind
    if (path / "config.json").exists():
        return path
    tokenizer = tiny_tokenizer(kind)
    torch.manual_seed(seed)
    model = AutoModel.from_config(tiny_config(kind, tokenizer))
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
