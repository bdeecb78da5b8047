"""The resumable prediction writer: output written as it comes, a killed run taken up again with --resume and
ending byte for byte as an uninterrupted run, partial outputs never trusted beyond the journal nor discarded
silently; and the lazy input reader."""

from __future__ import annotations

import json

import pytest

from cardioner.data.document import CorpusError, Document, Span
from cardioner.data.inputs import count_inputs, iter_inputs
from cardioner.data.resumable import ResumableWriter, partial_folder
from cardioner.errors import ConfigError

SETTINGS = {"model": "m", "dtype": "float32"}


def documents(n: int) -> list[Document]:
    return [Document(f"doc{i:03d}", f"Aspirin for pain {i}.", [Span(0, 7, "DRUG", score=0.5 + i / (4 * n))]
                     if i % 3 else []) for i in range(n)]


def run(target, format, docs, chunk=4, resume=False, stop_after=None, settings=SETTINGS, input=None):
    """Write ``docs`` committing every ``chunk``; with ``stop_after``, stop (as if killed) after that many
    documents were taken, without finishing."""
    writer = ResumableWriter(target, format, settings, resume=resume, input=input)
    done = writer.start()
    for index, doc in enumerate(writer.remaining(docs), start=done):
        if stop_after is not None and index == stop_after:
            writer.close()
            return writer
        writer.write(doc)
        if (index + 1) % chunk == 0:
            writer.commit()
    writer.finish()
    return writer


def snapshot(path):
    if path.is_file():
        return path.read_bytes()
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("format", ["jsonl", "tsv", "brat"])
def test_an_interrupted_run_resumed_ends_identical_to_an_uninterrupted_one(tmp_path, format):
    docs = documents(11)
    whole = tmp_path / f"whole.{format}"
    run(whole, format, docs)
    target = tmp_path / f"resumed.{format}"
    run(target, format, docs, stop_after=6)  # killed: 4 documents committed, 2 taken but not written
    assert not target.exists() and partial_folder(target).is_dir()
    payload = partial_folder(target) / "payload"
    if format != "brat":
        with open(payload, "ab") as handle:  # a record half-written when the kill came
            handle.write(b'{"id": "doc004", "text": "Asp')
    with open(partial_folder(target) / "journal", "a", encoding="utf-8") as handle:
        handle.write('{"documents": 8, "spa')  # a journal line cut short: not trusted
    with pytest.raises(CorpusError, match="--resume"):
        run(target, format, docs)  # never discarded silently
    writer = run(target, format, docs, resume=True)
    assert writer.documents == 11
    assert snapshot(target) == snapshot(whole)
    assert not partial_folder(target).exists()


def test_pending_brat_documents_of_a_killed_commit_are_removed_on_resume(tmp_path):
    docs = documents(8)
    target = tmp_path / "brat"
    run(target, "brat", docs, stop_after=4)
    payload = partial_folder(target) / "payload"
    journal = partial_folder(target) / "journal"
    with open(journal, "a", encoding="utf-8") as handle:  # killed while writing the next chunk
        handle.write(json.dumps({"pending": ["doc004", "zzz"]}) + "\n")
    (payload / "zzz.txt").write_text("an orphan", encoding="utf-8")
    (payload / "doc004.txt").write_text("half", encoding="utf-8")
    run(target, "brat", docs[:6], resume=True)  # the input now ends earlier: zzz must not survive
    expected = [".cardioner.jsonl"] + [f"doc00{i}.{s}" for i in range(6) for s in ("ann", "txt")]
    assert sorted(p.name for p in target.iterdir()) == expected


def test_resume_refuses_other_settings_and_a_changed_input(tmp_path):
    docs = documents(9)
    target = tmp_path / "out.jsonl"
    run(target, "jsonl", docs, stop_after=5)
    with pytest.raises(ConfigError, match=r"dtype: 'float32' then, 'bfloat16' now"):
        run(target, "jsonl", docs, resume=True, settings={"model": "m", "dtype": "bfloat16"})
    changed = [Document("other", "x", [])] + docs[1:]
    with pytest.raises(CorpusError, match="input changed"):
        run(target, "jsonl", changed, resume=True)
    with pytest.raises(CorpusError, match="has 2 documents"):
        run(target, "jsonl", docs[:2], resume=True)
    run(target, "jsonl", docs, resume=True)
    assert len(target.read_text(encoding="utf-8").splitlines()) == 9


def test_resume_without_a_partial_output_starts_afresh_and_an_unknown_output_is_refused(tmp_path):
    target = tmp_path / "out.tsv"
    run(target, "tsv", documents(5), resume=True)
    assert target.read_text(encoding="utf-8").splitlines()[0].endswith("\tscore")
    mine = tmp_path / "thesis.jsonl"
    mine.write_text("my thesis\n", encoding="utf-8")
    with pytest.raises(CorpusError, match="does not hold JSON Lines"):
        run(mine, "jsonl", documents(2))
    assert mine.read_text(encoding="utf-8") == "my thesis\n"


def test_duplicate_ids_are_refused_before_they_overwrite(tmp_path):
    docs = documents(3) + [Document("DOC001", "x", [])]
    with pytest.raises(CorpusError, match="duplicate document id 'DOC001'"):
        run(tmp_path / "brat", "brat", docs)


def test_brat_into_an_existing_folder_writes_beside_the_texts(tmp_path):
    folder = tmp_path / "notes"
    folder.mkdir()
    docs = documents(5)
    for doc in docs:
        (folder / f"{doc.id}.txt").write_text(doc.text, encoding="utf-8")
    (folder / "keep.txt").write_text("not predicted", encoding="utf-8")
    run(folder, "brat", docs, input=folder)  # predict into its own input folder
    assert (folder / "keep.txt").exists()
    assert (folder / "doc001.ann").read_text(encoding="utf-8").startswith("T1")


def test_inputs_are_read_one_at_a_time_in_corpus_order(tmp_path):
    folder = tmp_path / "in"
    (folder / "a").mkdir(parents=True)
    for name in ("b.txt", "a/z.txt", "a.txt", ".hidden.txt", "c.ann"):
        (folder / name).write_text(name, encoding="utf-8")
    assert [doc.id for doc in iter_inputs(folder)] == ["a/z", "a", "b"]
    assert count_inputs(folder) == 3
    jsonl = tmp_path / "in.jsonl"
    jsonl.write_bytes(b'\xef\xbb\xbf{"id": "x", "text": "one"}\n\n{"text": "two"}\n{"text": 3}\n')
    reader = iter_inputs(jsonl)
    assert next(reader).id == "x" and next(reader).id == "in#3"
    with pytest.raises(CorpusError, match=r"in\.jsonl:4"):
        next(reader)
    assert count_inputs(jsonl) == 3
    (tmp_path / "empty").mkdir()
    with pytest.raises(CorpusError, match="no .txt files"):
        list(iter_inputs(tmp_path / "empty"))
