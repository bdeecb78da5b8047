"""Corpus readers and writers: every format in, ``Document``s with exact character offsets out."""

from cardioner.data.brat import read_brat, write_brat
from cardioner.data.conll import read_conll, write_conll
from cardioner.data.document import (
    CorpusError,
    Document,
    ReadReport,
    Span,
    check_flat,
    find_overlap,
    resolve_overlaps,
)
from cardioner.data.hf import read_hf
from cardioner.data.io import detect_format, read_corpus, write_corpus
from cardioner.data.jsonl import read_jsonl, write_jsonl
from cardioner.data.tsv import read_tsv, write_tsv

__all__ = [
    "CorpusError",
    "Document",
    "ReadReport",
    "Span",
    "check_flat",
    "detect_format",
    "find_overlap",
    "read_brat",
    "read_conll",
    "read_corpus",
    "read_hf",
    "read_jsonl",
    "read_tsv",
    "resolve_overlaps",
    "write_brat",
    "write_conll",
    "write_corpus",
    "write_jsonl",
    "write_tsv",
]
