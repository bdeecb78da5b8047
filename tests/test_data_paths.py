"""One path-safety rule for every writer and reader (issue 15, items 1, 2, 5 and 9): outputs that are not ours
are never modified, nothing is written through a link or outside the output, ids that would collide or vanish
are refused, and a replacement survives a kill at any moment."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cardioner.cli import app
from cardioner.data import CorpusError, Document, ReadReport, Span, read_brat, read_corpus, write_corpus
from cardioner.data.io import convert_corpus
from cardioner.data.paths import STAGING_MARK, STAGING_MARK_PART, clean_stale_staging, staged_output
from cardioner.inference import calibrate_path, evaluate_path, predict_path, read_inputs

REPO = Path(__file__).resolve().parents[1]
DOCS = [Document("a", "fiebre alta", [Span(0, 6, "S")]), Document("sub/b", "tos seca", [Span(0, 3, "S")])]
FORMATS = ("brat", "jsonl", "tsv", "conll")


def tree(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` (links listed, not followed) with its bytes."""
    found = {}
    for path in sorted(root.rglob("*")):
        if path.is_symlink():
            found[str(path.relative_to(root))] = b"-> " + os.readlink(path).encode()
        elif path.is_file():
            found[str(path.relative_to(root))] = path.read_bytes()
    return found


# ------------------------------------------------------------------------ 1: an output that is not ours
@pytest.mark.parametrize("to", FORMATS)
def test_an_existing_file_that_is_not_ours_is_never_modified(tmp_path: Path, to: str) -> None:
    thesis = tmp_path / "thesis.docx"
    thesis.write_bytes(b"PK\x03\x04 four years of work")
    with pytest.raises(
        CorpusError, match="thesis.docx: the output exists and (is not a folder|does not hold)"
    ):
        write_corpus(DOCS, thesis, to)
    assert thesis.read_bytes() == b"PK\x03\x04 four years of work"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["thesis.docx"]  # no staging leftovers


def test_an_existing_folder_that_is_not_ours_is_never_modified(tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "thesis.docx").write_bytes(b"work")
    for to in FORMATS:
        with pytest.raises(CorpusError, match="project: the output (is a folder|exists)"):
            write_corpus(DOCS, project, to)
    assert tree(project) == {"thesis.docx": b"work"}


@pytest.mark.parametrize("to", ["jsonl", "tsv", "conll"])
def test_an_earlier_output_of_the_same_format_is_replaced(tmp_path: Path, to: str) -> None:
    output = tmp_path / f"out.{to}"
    write_corpus(DOCS, output, to)
    write_corpus(DOCS[:1], output, to)
    docs, _ = read_corpus(output, format=to)
    assert len(docs) == 1


def test_convert_and_predict_refuse_a_file_given_as_output_before_any_work(tmp_path: Path) -> None:
    thesis = tmp_path / "thesis.docx"
    thesis.write_bytes(b"work")
    result = CliRunner().invoke(app, ["convert", "--input", str(REPO / "examples" / "ncbi_sample" / "dev"),
                                      "--output", str(thesis), "--to", "brat"])
    assert result.exit_code == 1 and "the output exists and is not a folder" in result.stderr
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "a.txt").write_text("fiebre", encoding="utf-8")
    with pytest.raises(CorpusError, match="thesis.docx: the output exists and is not a folder"):
        predict_path(tmp_path / "no-model", notes, thesis, "brat")  # refused before the model is even loaded
    with pytest.raises(CorpusError, match="report.pdf: the output exists and does not hold JSON Lines"):
        (tmp_path / "report.pdf").write_bytes(b"%PDF")
        predict_path(tmp_path / "no-model", notes, tmp_path / "report.pdf", "jsonl")
    assert thesis.read_bytes() == b"work" and (tmp_path / "report.pdf").read_bytes() == b"%PDF"


def test_an_output_that_is_a_symbolic_link_is_refused(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere.jsonl"
    write_corpus(DOCS, elsewhere, "jsonl")
    before = elsewhere.read_bytes()
    (tmp_path / "link.jsonl").symlink_to(elsewhere)
    with pytest.raises(CorpusError, match="link.jsonl: the output is a symbolic link"):
        write_corpus(DOCS[:1], tmp_path / "link.jsonl", "jsonl")
    assert elsewhere.read_bytes() == before and (tmp_path / "link.jsonl").is_symlink()


def test_the_input_given_as_output_is_refused_and_left_as_it_is(tmp_path: Path) -> None:
    gold = tmp_path / "gold.jsonl"
    write_corpus(DOCS[:1], gold, "jsonl")  # one record: a JSONL file that also parses as JSON
    before = gold.read_bytes()
    with pytest.raises(CorpusError, match="gold.jsonl: the output is the input"):
        convert_corpus(gold, gold, "jsonl")
    with pytest.raises(CorpusError, match="gold.jsonl: the output is the input"):
        predict_path(tmp_path / "no-model", gold, tmp_path / "." / "gold.jsonl", "jsonl")
    with pytest.raises(CorpusError, match="gold.jsonl: the output is the input"):
        evaluate_path(tmp_path / "no-model", gold, output=gold)
    with pytest.raises(CorpusError, match="gold.jsonl: the output is the input"):
        calibrate_path(tmp_path / "no-model", gold, output=gold)
    assert gold.read_bytes() == before
    corpus = tmp_path / "corpus"
    write_corpus(DOCS, corpus, "brat")
    before = tree(corpus)
    with pytest.raises(CorpusError, match="corpus: the output is the input"):
        convert_corpus(corpus, corpus, "brat")
    with pytest.raises(CorpusError, match="corpus/converted: the output lies inside the input folder"):
        convert_corpus(corpus, corpus / "converted", "brat")  # the next read of the corpus would read it too
    with pytest.raises(CorpusError, match=f"{tmp_path}: the input .* lies inside the output"):
        convert_corpus(corpus, tmp_path, "brat")  # `--output .` above the corpus: among the user's files
    assert tree(corpus) == before and sorted(p.name for p in tmp_path.iterdir()) == ["corpus", "gold.jsonl"]


# ------------------------------------------------------------------------ 2: links, inside and outside
def test_a_link_inside_the_output_folder_is_never_written_through(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    output = tmp_path / "out"
    write_corpus(DOCS[:1], output, "brat")
    (output / "sub").symlink_to(outside, target_is_directory=True)
    with pytest.raises(CorpusError, match=r"out/sub: is a symbolic link"):
        write_corpus(DOCS, output, "brat")
    assert list(outside.iterdir()) == []
    (output / "b.ann").symlink_to(outside / "b.ann")
    with pytest.raises(CorpusError, match=r"out/b.ann: is a symbolic link"):
        write_corpus([Document("b", "x", [])], output, "brat")
    assert list(outside.iterdir()) == []
    assert sorted(tree(output)) == [".cardioner.jsonl", "a.ann", "a.txt", "b.ann", "sub"]


@pytest.mark.parametrize("kind", ["txt", "folder"])
def test_a_link_inside_an_input_folder_is_refused_naming_it_never_read_or_skipped_silently(tmp_path: Path,
                                                                                          kind: str) -> None:
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "key.txt").write_text("private key", encoding="utf-8")
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.txt").write_text("fiebre", encoding="utf-8")
    (corpus / "a.ann").write_text("T1\tS 0 6\tfiebre\n", encoding="utf-8")
    if kind == "txt":
        (corpus / "b.txt").symlink_to(secret / "key.txt")
    else:
        (corpus / "more").symlink_to(secret, target_is_directory=True)
    name = "b.txt" if kind == "txt" else "more"
    for read in (read_brat, lambda folder: read_corpus(folder, format="brat"), read_inputs):
        with pytest.raises(CorpusError, match=rf"corpus: {name} is a symbolic link \(to {secret}"):
            read(corpus)
    (corpus / "a.conll").write_text("fiebre\tB-S\n", encoding="utf-8")
    (corpus / "a.txt").unlink()
    (corpus / "a.ann").unlink()
    with pytest.raises(CorpusError, match=f"{name} is a symbolic link"):
        read_corpus(corpus, format="conll")


def test_hidden_entries_are_not_read_and_are_counted(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    (corpus / ".ipynb_checkpoints").mkdir(parents=True)
    (corpus / "a.txt").write_text("fiebre", encoding="utf-8")
    (corpus / ".b.txt").write_text("hidden", encoding="utf-8")
    report = ReadReport()
    assert [doc.id for doc in read_brat(corpus, report)] == ["a"]
    assert report.skipped["hidden files and folders (names starting with '.') not read"] == 2


# ------------------------------------------------------------------------ 5: ids that collide or vanish
@pytest.mark.parametrize(("ids", "problem"), [
    (["a", "./a"], r"id './a' is not a plain relative path .*write it as 'a'"),
    (["c", "c/"], r"id 'c/' is not a plain relative path"),
    (["x", "a//b"], r"id 'a//b' is not a plain relative path"),
    (["Notes", "notes"], r"duplicate document id 'notes' .*as 'Notes': ids that differ only in case"),
    (["caf\u00e9", "cafe\u0301"], r"duplicate document id .*Unicode form"),
    ([".hidden"], r"id '.hidden' has a part starting with '.'"),
    (["sub/.x"], r"has a part starting with '.'"),
    (["/etc/passwd"], "is an absolute path"),
    (["../escape"], r"is not a plain relative path \(it has a '..' part, which leaves the folder\)$"),
    (["a\x00b"], r"holds '\\x00'"),
    (["a\\b"], r"holds '\\\\'"),
    (["x" * 300], "longer than a file name can be"),
    ([""], "an id must be non-empty text"),
])
def test_brat_ids_that_would_collide_escape_or_vanish_are_refused_naming_the_id(
    tmp_path: Path, ids: list[str], problem: str
) -> None:
    docs = [Document(doc_id, "fiebre", [Span(0, 6, "S")]) for doc_id in ids]
    with pytest.raises(CorpusError, match=problem):
        write_corpus(docs, tmp_path / "out", "brat")
    assert sorted(tmp_path.iterdir()) == []


@pytest.mark.parametrize("doc_id", ["a\tb", "a\nb", "a\rb", "a\x00b"])
def test_tsv_ids_a_row_cannot_hold_are_refused(tmp_path: Path, doc_id: str) -> None:
    with pytest.raises(CorpusError, match=f"id {doc_id!r}".replace("\\", "\\\\") + " holds"):
        write_corpus([Document(doc_id, "fiebre", [Span(0, 6, "S")])], tmp_path / "out.tsv", "tsv")
    assert not (tmp_path / "out.tsv").exists()


def test_predict_checks_the_ids_of_jsonl_inputs_before_the_model_runs(tmp_path: Path) -> None:
    inputs = tmp_path / "in.jsonl"
    inputs.write_text('{"id": "a", "text": "x"}\n{"id": "./a", "text": "y"}\n', encoding="utf-8")
    with pytest.raises(CorpusError, match="id './a' is not a plain relative path"):
        predict_path(tmp_path / "no-model", inputs, tmp_path / "out", "brat")
    assert not (tmp_path / "out").exists()


def test_what_is_written_reads_back_with_every_document(tmp_path: Path) -> None:
    docs = [Document(doc_id, "fiebre", [Span(0, 6, "S")]) for doc_id in ("a", "b/c", "b/d/e", "caf\u00e9")]
    write_corpus(docs, tmp_path / "out", "brat")
    assert [doc.id for doc in read_brat(tmp_path / "out")] == sorted(doc.id for doc in docs)


# ------------------------------------------------------------------------ 9: crash safety
def test_writing_into_a_brat_folder_never_replaces_a_text_with_another(tmp_path: Path) -> None:
    folder = tmp_path / "notes"
    write_corpus([Document("b", "tos", [])], folder, "brat")  # an earlier output: it holds the record
    (folder / "a.txt").write_text("my own notes", encoding="utf-8")  # the user's, among ours
    before = tree(folder)
    with pytest.raises(CorpusError, match="a.txt: exists and holds another text than document 'a', and "
                       "cardioner's record"):
        write_corpus([Document("a", "fiebre", [Span(0, 6, "S")])], folder, "brat")
    assert tree(folder) == before
    write_corpus([Document("b", "tos seca", [Span(0, 3, "S")])], folder, "brat")  # ours: replaced
    assert [(d.id, d.text, d.spans) for d in read_brat(folder)] == [("a", "my own notes", []),
                                                                     ("b", "tos seca", [Span(0, 3, "S")])]


def moves_into(folder: Path, docs: list[Document], monkeypatch) -> list[str]:
    """The files ``write_corpus`` moves into ``folder``, in order."""
    moved = []
    real_replace = os.replace

    def replace(source, target, *args, **kwargs):
        if Path(target).parent.is_relative_to(folder) and STAGING_MARK not in str(target):
            moved.append(str(Path(target).relative_to(folder)))
        return real_replace(source, target, *args, **kwargs)

    monkeypatch.setattr(os, "replace", replace)
    write_corpus(docs, folder, "brat")
    monkeypatch.undo()
    return moved


def test_a_pair_is_moved_in_an_order_that_never_leaves_a_mismatched_pair(tmp_path: Path, monkeypatch) -> None:
    folder = tmp_path / "notes"
    write_corpus([Document("orphan", "abc", [Span(0, 3, "S")]), Document("same", "tos", []),
                  Document("changed", "old text", [Span(0, 3, "S")])], folder, "brat")
    (folder / "orphan.txt").unlink()  # an .ann (ours) without its .txt
    docs = [Document("changed", "new text", [Span(4, 8, "S")]), Document("new", "fiebre", [Span(0, 6, "S")]),
            Document("orphan", "dolor", [Span(0, 5, "S")]), Document("same", "tos", [Span(0, 3, "S")])]
    # both files of "changed" replaced: its old .ann is deleted before the new text comes (not a move)
    assert moves_into(folder, docs, monkeypatch) == ["changed.txt", "changed.ann", "new.txt", "new.ann",
                                                     "orphan.ann", "orphan.txt", "same.ann"]
    assert [(d.id, d.text, d.spans) for d in read_brat(folder)] == [(d.id, d.text, d.spans) for d in docs]


def test_a_brat_write_cut_short_leaves_only_files_the_record_vouches_for(tmp_path: Path, monkeypatch) -> None:
    folder = tmp_path / "out"
    write_corpus([Document("a", "fiebre", []), Document("b", "tos", [])], folder, "brat")
    new = [Document("a", "fiebre", [Span(0, 6, "S")]), Document("b", "tos", [Span(0, 3, "S")])]
    real_replace = os.replace

    def replace(source, target, *args, **kwargs):  # killed after a.ann was moved in, before b.ann
        if Path(target).name == "b.ann":
            raise OSError("killed")
        return real_replace(source, target, *args, **kwargs)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(OSError, match="killed"):
        write_corpus(new, folder, "brat")
    monkeypatch.undo()
    assert [len(doc.spans) for doc in read_brat(folder)] == [1, 0]  # the new a.ann, the old b.ann
    write_corpus(new, folder, "brat")  # both are bytes cardioner wrote: replaced, not refused
    assert [len(doc.spans) for doc in read_brat(folder)] == [1, 1]


def test_staging_folders_of_a_killed_run_are_removed_by_the_next_run_and_only_ours(tmp_path: Path) -> None:
    output = tmp_path / "out.jsonl"
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    dead_pid = int(dead.stdout)
    ours = tmp_path / ".out.jsonl.cardioner-tmp-killed"
    ours.mkdir()
    (ours / STAGING_MARK).write_text(json.dumps({"pid": dead_pid, "host": os.uname().nodename,
                                                 "target": str(output)}), encoding="utf-8")
    (ours / "payload").write_text("half", encoding="utf-8")
    running = tmp_path / ".out.jsonl.cardioner-tmp-running"  # a concurrent run: its process is alive
    running.mkdir()
    (running / STAGING_MARK).write_text(json.dumps({"pid": os.getppid(), "host": os.uname().nodename,
                                                    "target": str(output)}), encoding="utf-8")
    unmarked = tmp_path / ".out.jsonl.cardioner-tmp-user"  # named like ours, but nothing proves it is
    unmarked.mkdir()
    (unmarked / "keep").write_text("user data", encoding="utf-8")
    write_corpus(DOCS, output, "jsonl")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([output.name, running.name, unmarked.name])
    assert (unmarked / "keep").read_text() == "user data"


@pytest.mark.parametrize("marker", ["part", "empty"])
def test_a_staging_folder_killed_while_its_marker_was_written_is_removed_by_the_next_run(tmp_path: Path,
                                                                                        marker: str) -> None:
    """The slow kill -9 test of predict found one: a kill between creating the marker and writing its bytes
    left an empty marker that named no process, so no later run removed the folder."""
    output = tmp_path / "out.jsonl"
    unborn = tmp_path / ".out.jsonl.cardioner-tmp-unborn"
    unborn.mkdir()
    (unborn / (STAGING_MARK_PART if marker == "part" else STAGING_MARK)).write_text("", encoding="utf-8")
    write_corpus(DOCS, output, "jsonl")
    assert sorted(p.name for p in tmp_path.iterdir()) == [output.name]


KILL_AT_EACH_STEP = textwrap.dedent("""
    import os, sys
    from pathlib import Path
    import cardioner.data.paths as paths

    step, target, kind = int(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
    calls = [0]

    def dies(function):
        def wrapped(*args, **kwargs):
            calls[0] += 1
            if calls[0] == step:
                os._exit(9)  # like kill -9: no cleanup runs
            return function(*args, **kwargs)
        return wrapped

    for name in ("rename", "replace", "rmdir", "unlink", "mkdir"):
        setattr(os, name, dies(getattr(os, name)))
    paths._renameat2 = dies(paths._renameat2)
    with paths.staged_output(target, kind, lambda p: True) as payload:
        if kind == "file":
            payload.write_text("new", encoding="utf-8")
        else:
            payload.mkdir(exist_ok=True)
            (payload / "config.json").write_text("new", encoding="utf-8")
    print("completed")
""")


@pytest.mark.parametrize("kind", ["file", "folder"])
@pytest.mark.parametrize("exchange", [True, False])
def test_a_kill_at_every_step_of_a_replacement_leaves_the_old_or_the_new_output(tmp_path: Path, kind: str,
                                                                               exchange: bool) -> None:
    """Each file-system call of ``staged_output`` in turn is where the process dies; the target then holds the
    old or the new content, never nothing, and the next run cleans up (restoring the old folder if needed)."""
    script = tmp_path / "kill.py"
    script.write_text(KILL_AT_EACH_STEP + ("" if exchange else "\n"), encoding="utf-8")
    if not exchange:  # the fallback where renameat2 is missing: two renames, recovered by the next run
        script.write_text(KILL_AT_EACH_STEP.replace("paths._renameat2 = dies(paths._renameat2)",
                                                    "paths._renameat2 = lambda *a: False"), encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    step = 0
    while True:
        step += 1
        target = tmp_path / f"run{step}" / ("out.jsonl" if kind == "file" else "export")
        target.parent.mkdir()
        if kind == "file":
            target.write_text("old", encoding="utf-8")
        else:
            target.mkdir()
            (target / "config.json").write_text("old", encoding="utf-8")
        result = subprocess.run([sys.executable, str(script), str(step), str(target), kind], env=env,
                                capture_output=True, text=True)
        clean_stale_staging(target)  # what the next run of the command does first
        content = (target if kind == "file" else target / "config.json").read_text(encoding="utf-8")
        assert content in ("old", "new"), (step, content)
        assert sorted(p.name for p in target.parent.iterdir()) == [target.name], step  # no staging left
        if "completed" in result.stdout:
            assert content == "new"
            break
    assert step > 4  # the kill landed at every step of a real replacement


def test_staged_output_replaces_an_existing_folder_in_one_exchange(tmp_path: Path) -> None:
    target = tmp_path / "export"
    target.mkdir()
    (target / "config.json").write_text("old", encoding="utf-8")
    inode = target.stat().st_ino
    with staged_output(target, "folder", lambda p: True) as payload:
        (payload / "config.json").write_text("new", encoding="utf-8")
        assert (target / "config.json").read_text() == "old"  # untouched until the block completes
    assert (target / "config.json").read_text() == "new" and target.stat().st_ino != inode
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]


# --------------------------------------------------------------------- Done-when 3: kill -9 at random moments
KILLS = 20


def cardioner_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "cardioner", *[str(a) for a in args]]


def run_env() -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO), "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1",
           "HF_HUB_OFFLINE": "1"}
    env.pop("CARDIONER_DEBUG", None)
    return env


def run_to_completion(args: list[str]) -> float:
    """Run a command to its end; returns how long it took."""
    started = time.perf_counter()
    result = subprocess.run(args, env=run_env(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return time.perf_counter() - started


def staging_in(*folders: Path) -> list[Path]:
    return [
        p for folder in folders if folder.is_dir() for p in folder.iterdir() if ".cardioner-tmp-" in p.name
    ]


def kill_at_a_random_moment(args: list[str], duration: float, watch: list[Path], rng) -> bool:
    """Start ``args`` and SIGKILL it: at a uniformly random moment of a full run,
    or (half the time) a random few milliseconds after its staging folder
    appears, so that many kills land while the output is being written.

    Returns:
        Whether the kill landed while a staging folder existed (the output was being written or replaced).
    """
    process = subprocess.Popen(args, env=run_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        if rng.random() < 0.5:
            time.sleep(rng.uniform(0, duration))
        else:
            deadline = time.perf_counter() + duration * 2
            while not staging_in(*watch) and process.poll() is None and time.perf_counter() < deadline:
                time.sleep(0.001)
            time.sleep(rng.choice([0.0, rng.uniform(0, 0.005), rng.uniform(0, 0.05)]))
        writing = process.poll() is None and bool(staging_in(*watch))
    finally:
        process.kill()
        process.wait()
    return writing


def kill_repeatedly(args: list[str], watch: list[Path], check: Callable[[], None], seed: int,
                    measure: list[str] | None = None) -> None:
    """Measure a full run (of ``measure``, else of ``args``), then KILLS runs killed at random moments, each
    followed by ``check``; then a full run, after which no staging folder may be left."""
    import random

    rng = random.Random(seed)
    duration = run_to_completion(measure or args)
    check()
    while_writing = 0
    for _ in range(KILLS):
        while_writing += kill_at_a_random_moment(args, duration, watch, rng)
        check()
    assert while_writing >= 3, f"only {while_writing} of {KILLS} kills landed while the output was written"
    run_to_completion(args)
    check()
    assert staging_in(*watch) == []


def old_or_new_file(target: Path) -> Callable[[], None]:
    """A check that ``target`` holds, whole, its content from before or the one complete new content (its
    ``seen`` set collects them), and reads as JSONL."""
    def check() -> None:
        check.seen.add(target.read_bytes())
        assert len(check.seen) <= 2, "a third content: part of a file"
        assert read_corpus(target, format="jsonl")[0]

    check.seen = {target.read_bytes()}
    return check


def corpus_files_for(tmp_path: Path, docs: int) -> Path:
    """A JSONL corpus big enough that writing it takes a moment."""
    path = tmp_path / "corpus.jsonl"
    lines = [json.dumps({"id": f"notes/{i}", "text": f"Paciente {i} con fiebre alta y dolor torácico. " * 20,
                         "spans": [{"start": 12 + len(str(i)), "end": 23 + len(str(i)), "label": "SINTOMA"}]})
             for i in range(docs)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.mark.slow
def test_kill_9_during_convert_never_loses_or_half_writes_the_previous_output(tmp_path: Path) -> None:
    corpus = corpus_files_for(tmp_path, 4000)
    target = tmp_path / "out.jsonl"
    write_corpus([Document(f"old/{i}", "fiebre", [Span(0, 6, "S")]) for i in range(50)], target, "jsonl")
    check = old_or_new_file(target)
    kill_repeatedly(
        cardioner_command("convert", "-i", corpus, "-o", target, "--to", "jsonl"), [tmp_path], check, 1
    )
    assert len(check.seen) == 2


@pytest.mark.slow
def test_kill_9_while_writing_into_a_brat_folder_never_leaves_a_mismatched_pair(tmp_path: Path) -> None:
    corpus = corpus_files_for(tmp_path, 1500)
    folder = tmp_path / "brat"
    old = [Document(f"old/{i}", "fiebre", [Span(0, 6, "S")]) for i in range(20)]
    write_corpus(old, folder, "brat")
    old_files = tree(folder)

    def check() -> None:
        files = tree(folder)
        # nothing of before lost; the record only grows (appended before each file moves in)
        assert all(files.get(name) == content for name, content in old_files.items()
                   if name != ".cardioner.jsonl")
        assert files[".cardioner.jsonl"].startswith(old_files[".cardioner.jsonl"])
        docs, _ = read_corpus(folder, format="brat")  # every pair matches: a mismatch is a CorpusError
        for doc in docs:
            if doc.id.startswith("notes/") and (folder / f"{doc.id}.ann").exists():
                number = doc.id.split("/")[1]
                assert doc.spans == [Span(12 + len(number), 23 + len(number), "SINTOMA")], doc.id

    elsewhere = tmp_path / "measure"  # measured elsewhere: the killed runs still add new .txt files
    kill_repeatedly(cardioner_command("convert", "-i", corpus, "-o", folder, "--to", "brat"),
                    [folder, tmp_path], check, 2,
                    cardioner_command("convert", "-i", corpus, "-o", elsewhere, "--to", "brat"))
    assert len(read_corpus(folder, format="brat")[0]) == 1520


@pytest.fixture(scope="module")
def tiny_exports(tmp_path_factory) -> dict[str, Path]:
    """A tiny BERT, a small brat corpus and a first export (the one a later run replaces)."""
    from tiny import tiny_backbone

    root = tmp_path_factory.mktemp("kill")
    corpus = root / "train"
    corpus.mkdir()
    for path in sorted((REPO / "examples" / "ncbi_sample" / "train").iterdir())[:20]:
        (corpus / path.name).write_bytes(path.read_bytes())
    paths = {"backbone": tiny_backbone("bert", root), "train": corpus, "export": root / "export",
             "root": root}
    run_to_completion(train_command(paths, seed=1))
    return paths


def train_command(paths: dict[str, Path], seed: int) -> list[str]:
    return cardioner_command("train", "--train", paths["train"], "--model", paths["backbone"], "--output",
                             paths["export"], "--epochs", "1", "--max-length", "64", "--batch-size", "8",
                             "--seed", seed, "--set", "training.max_steps=2", "--set", "training.patience=0")


@pytest.mark.slow
def test_kill_9_during_an_export_never_leaves_a_half_export_or_loses_the_previous_one(tiny_exports) -> None:
    from cardioner.export import load_model

    export = tiny_exports["export"]
    weights = {(export / "model.safetensors").read_bytes()}  # the previous export's, then the new run's

    def check() -> None:
        load_model(export)  # complete: config, weights, tokenizer
        assert {"config.json", "model.safetensors", "modeling.py", "README.md", "training_config.yaml",
                "metrics.json"} <= {p.name for p in export.iterdir()}
        weights.add((export / "model.safetensors").read_bytes())
        assert len(weights) <= 2  # the old export or the (deterministic) new one, never a mixture

    kill_repeatedly(train_command(tiny_exports, seed=2), [tiny_exports["root"]], check, 3)
    assert len(weights) == 2


@pytest.mark.slow
def test_kill_9_during_predict_never_loses_or_half_writes_the_previous_predictions(
    tiny_exports, tmp_path
) -> None:
    # every split's .txt files: an output that takes a moment to write
    notes = REPO / "examples" / "ncbi_sample"
    target = tmp_path / "predictions.jsonl"
    target.write_text('{"id": "old", "text": "previous predictions", "spans": []}\n', encoding="utf-8")
    check = old_or_new_file(target)
    kill_repeatedly(  # --resume: each run continues the partial output a killed one left (data/resumable.py)
        cardioner_command("predict", "--model", tiny_exports["export"], "--input", notes, "--output", target,
                          "--format", "jsonl", "--resume"),
        [tmp_path],
        check,
        4,
    )


@pytest.mark.parametrize(
    "args",
    [
        ["compare", "--compare-only", str(REPO / "examples"), "--output", "{project}"],
        ["compare", "--train", str(REPO / "examples" / "ncbi_sample" / "train"), "--heads", "linear",
         "--output", "{project}"],
        ["analyze", "--model", "{project}/../no-model", "--data",
         str(REPO / "examples" / "ncbi_sample" / "dev"), "--output", "{project}"],
        ["tune", "--config", "{project}/../missing.yaml", "--trials", "1", "--output", "{project}"],
        ["train", "--folds", "2", "--train", str(REPO / "examples" / "ncbi_sample" / "train"), "--output",
         "{project}"],
    ],
)
def test_commands_that_fill_an_output_folder_refuse_one_that_is_not_theirs(
    tmp_path: Path, args: list[str]
) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "thesis.docx").write_bytes(b"work")
    result = CliRunner().invoke(app, [a.replace("{project}", str(project)) for a in args])
    assert result.exit_code == 1, result.output
    assert "the output is a folder that is neither empty nor" in result.stderr, result.stderr
    assert tree(project) == {"thesis.docx": b"work"}
