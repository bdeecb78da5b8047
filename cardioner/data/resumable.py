"""Predictions written as they come, crash-safe and resumable: one writer, fed documents in input order.

``predict`` over millions of documents cannot hold them, and a run killed after hours should not start again
from nothing. ``ResumableWriter`` takes predicted documents one at a time (``write``) and makes them durable
in groups (``commit``, after each chunk the predictor worked on); ``finish`` publishes the complete output in
one step. Everything in between lives in a hidden folder beside the output, ``.NAME.cardioner-partial``:

- ``run.json``: the output's format and path, the settings that decide its contents (model, input, dtype,
  quantisation, confidence threshold, windows, chunking), and the process writing it (pid, host);
- ``journal``: one JSON line per commit: ``{"documents", "spans", "bytes", "ids"}`` — documents and spans
  written so far, the payload's size after them (JSONL, TSV) and a SHA-256 of their ids in order; a new brat
  folder's commit is preceded by ``{"pending": [ids]}``, the documents whose files are about to be written;
- ``payload``: the JSONL or TSV file being written, or the brat folder of a new brat output.

A brat output that already exists (a folder of earlier predictions, known by its record, or the input
folder itself) is written into document by document (``brat.write_into_brat``: each file replaced
atomically, and only a file whose bytes the folder's record shows cardioner wrote); everything else appears
at the output path only when complete (a file: ``os.replace``; a new folder, its record inside: one
rename).

**What a kill leaves, and what resume trusts.** Only what the journal records: on ``--resume`` the payload is
cut back to the size of the last complete journal line (a record half-written after it is dropped; in a new
brat folder, the files of pending documents are deleted), the first
``documents`` input documents are skipped after checking that their ids hash to the journal's (the input must
not have changed), and the run continues with the same settings (anything else is refused, naming what
differs). Commits come every ``chunk`` documents counted from the start, so a resumed run predicts the same
chunks, in the same batches, as an uninterrupted one: the output is identical, byte for byte. A kill -9 loses
at most the chunk in flight; the journal and payload are flushed and fsync'ed at every commit.

Without ``--resume``, an existing partial folder is never discarded silently: the run stops and says how to
continue it or start over. A partial folder whose process is still running is another run's: refused.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
from collections.abc import Iterable, Iterator
from pathlib import Path

from cardioner.data.brat import (
    BRAT_OUTPUT,
    append_record,
    brat_output_check,
    document_files,
    files_into,
    has_record,
    read_record,
    record_lines,
    write_into_brat,
)
from cardioner.data.common import head_lines
from cardioner.data.document import CorpusError, Document, ReadReport
from cardioner.data.jsonl import document_to_record, looks_like_jsonl
from cardioner.data.paths import (
    check_output,
    clean_stale_staging,
    id_key,
    id_problem,
    inside,
    make_folders,
    pid_running,
    publish_folder,
)
from cardioner.data.tsv import format_rows, header_line, looks_like_tsv
from cardioner.errors import ConfigError
from cardioner.values import counted

RESUMABLE_FORMATS = ("jsonl", "tsv", "brat")
PARTIAL_SUFFIX = ".cardioner-partial"
#: how an existing output of each format is recognised (it may be replaced), and what it is called
OUTPUT_KINDS = {
    "jsonl": ("file", lambda path: looks_like_jsonl(head_lines(path)), "JSON Lines"),
    "tsv": ("file", lambda path: looks_like_tsv(head_lines(path)), "a MultiCardioNER TSV"),
    "brat": ("folder", has_record, BRAT_OUTPUT),
}


def partial_folder(target: str | Path) -> Path:
    """The hidden folder beside ``target`` where a run writes until it is complete."""
    target = Path(target)
    return target.parent / f".{target.name[:200]}{PARTIAL_SUFFIX}"


class ResumableWriter:
    """Writes predicted documents to ``target`` in input order (see the module docstring).

    Args:
        target: the output file (jsonl, tsv) or folder (brat).
        format: "jsonl", "tsv" or "brat".
        settings: what decides the output's contents (JSON-able); a resumed run must have the same.
        resume: continue an interrupted run's partial output (else a partial output is an error).
        score_notes: brat: write span confidences as AnnotatorNotes lines.
        input: brat: the input folder, which may be the output (each ``.ann`` written beside its ``.txt``).
    """

    def __init__(self, target: str | Path, format: str, settings: dict, resume: bool = False,
                 score_notes: bool = False, input: str | Path | None = None) -> None:
        if format not in RESUMABLE_FORMATS:
            raise ConfigError(f"format must be one of {', '.join(RESUMABLE_FORMATS)} to write as predictions "
                              f"come, got {format!r}")
        self.target = Path(target)
        self.format = format
        self.settings = json.loads(json.dumps({**settings, "format": format, "score_notes": score_notes}))
        self.resume = resume
        self.score_notes = score_notes
        self.partial = partial_folder(self.target)
        self.kind, self.looks_ours, self.what = OUTPUT_KINDS[format]
        if format == "brat":
            self.looks_ours = brat_output_check(input)
        self.record: dict[str, set[str]] = {}  # brat: the output's record (what cardioner wrote there)
        self.documents = 0  # committed so far (in the journal)
        self.spans = 0
        self._written_bytes = 0
        self._ids = hashlib.sha256()
        self._keys: set[int] = set()  # 8-byte digests of the ids written: a repeated id would overwrite one
        self._buffer: list[Document] = []
        self._payload_handle = None
        self.into_existing = False  # brat: writing into an existing folder, document by document

    # -- starting --------------------------------------------------------------------------------------------

    def start(self) -> int:
        """Check the output, set up (or take up again) the partial output; returns the documents to skip."""
        check_output(self.target, self.kind, self.looks_ours, self.what)
        clean_stale_staging(self.target)
        if self.partial.exists():
            run = self._read_run()
            pid, host = run.get("pid"), run.get("host")
            ours = host == socket.gethostname() and isinstance(pid, int) and pid != os.getpid()
            if ours and pid_running(pid):
                raise CorpusError(f"another cardioner run (pid {pid}) is writing this output; wait for it, "
                                  "or choose another output", self.target)
            if not self.resume:
                written = counted(self._journal()["documents"], "document")
                raise CorpusError(f"an interrupted run left a partial output ({written} written, in "
                                  f"{self.partial}): continue it with --resume, or "
                                  "delete that folder to start over", self.target)
            self._take_up(run)
        else:
            self._set_up()
        return self.documents

    def _set_up(self) -> None:
        try:
            self.target.parent.mkdir(parents=True, exist_ok=True)
            self.partial.mkdir()
        except OSError as error:
            raise CorpusError(f"cannot create the partial output folder ({error.strerror or error})",
                              self.partial) from None
        self.into_existing = self.format == "brat" and self.target.exists()
        if self.into_existing:
            self.record = read_record(self.target)
        self._write_run()
        (self.partial / "journal").touch()
        payload = self.partial / "payload"
        if self.format == "brat":
            if not self.into_existing:
                payload.mkdir()
                append_record(payload, "")  # published with the folder: it is cardioner's from the start
        else:
            payload.write_bytes((header_line(scores=True) if self.format == "tsv" else "").encode("utf-8"))
            self._written_bytes = payload.stat().st_size
        self._commit_journal()  # documents 0: the header is trusted

    def _take_up(self, run: dict) -> None:
        saved = run.get("settings", {})
        differ = sorted(key for key in set(saved) | set(self.settings)
                        if saved.get(key) != self.settings.get(key))
        if differ:
            shown = "; ".join(f"{key}: {saved.get(key)!r} then, {self.settings.get(key)!r} now"
                              for key in differ)
            raise ConfigError(f"cannot resume {self.target}: the interrupted run had other settings "
                              f"({shown}); resume with the same settings, or delete {self.partial} to start "
                              "over")
        self.into_existing = bool(run.get("into_existing"))
        self.record = read_record(self.target if self.into_existing else self.partial / "payload")
        journal = self._journal()
        self.documents, self.spans = journal["documents"], journal["spans"]
        self._written_bytes = journal["bytes"]
        self._write_run()
        payload = self.partial / "payload"
        if self.format == "brat" and not self.into_existing:
            for doc_id in journal.get("pending", []):  # written after the last commit: not trusted
                if id_problem(doc_id, "brat") is None:
                    for suffix in (".txt", ".ann"):
                        inside(payload, f"{doc_id}{suffix}").unlink(missing_ok=True)
            self._append_journal({key: journal[key] for key in ("documents", "spans", "bytes", "ids")})
        if self.format != "brat":
            size = payload.stat().st_size if payload.is_file() else -1
            if size < self._written_bytes:
                raise CorpusError(f"cannot resume: the partial output holds {max(size, 0)} bytes, fewer than "
                                  f"the {self._written_bytes} its journal records (a lost write?); delete "
                                  f"{self.partial} to start over", self.target)
            with open(payload, "r+b") as handle:  # anything after the last commit is not trusted
                handle.truncate(self._written_bytes)
                os.fsync(handle.fileno())

    def remaining(self, documents: Iterable[Document]) -> Iterator[Document]:
        """``documents`` without those an interrupted run already wrote, after checking that they are the
        same ones (their ids, in order)."""
        iterator = iter(documents)
        expected = self._journal()["ids"] if self.documents else None
        ids = hashlib.sha256()
        for index in range(self.documents):
            doc = next(iterator, None)
            if doc is None:
                raise CorpusError(f"cannot resume: the input has {counted(index, 'document')}, but the "
                                  f"interrupted run wrote {self.documents}", self.target)
            ids.update(doc.id.encode("utf-8") + b"\n")
            self._keys.add(self._key(doc.id))
        if expected is not None and ids.hexdigest() != expected:
            raise CorpusError(f"cannot resume: the first {counted(self.documents, 'input document')} are not "
                              "the ones the interrupted run wrote (the input changed); delete "
                              f"{self.partial} to start over", self.target)
        self._ids = ids
        yield from iterator

    # -- writing ---------------------------------------------------------------------------------------------

    def write(self, doc: Document) -> None:
        """Take one predicted document (written at the next ``commit``)."""
        problem = id_problem(doc.id, self.format)
        if problem is not None:
            raise CorpusError(f"document id {doc.id!r} {problem}", self.target)
        key = self._key(doc.id)
        if key in self._keys:
            raise CorpusError(f"duplicate document id {doc.id!r}: its predictions would overwrite (brat) or "
                              "merge with (TSV) another document's", self.target)
        self._keys.add(key)
        self._buffer.append(doc)

    def commit(self) -> None:
        """Write the documents taken since the last commit, durably, and record them in the journal."""
        if not self._buffer:
            return
        report = ReadReport()
        if self.format == "brat":
            if self.into_existing:
                files = files_into(self.target, self._buffer, report, self.score_notes, self.record)
                write_into_brat(self.target, files, self.record)
            else:
                self._append_journal({"pending": [doc.id for doc in self._buffer]})
                payload = self.partial / "payload"
                files = [file for doc in self._buffer
                         for file in document_files(doc, report, self.score_notes)]
                append_record(payload, record_lines(files, self.record))  # the folder is published with it
                for relative, content in files:
                    make_folders(payload, relative)
                    (payload / relative).write_bytes(content)
        else:
            if self._payload_handle is None:
                self._payload_handle = open(self.partial / "payload", "ab")
            text = "".join(self._format(doc) for doc in self._buffer)
            self._payload_handle.write(text.encode("utf-8"))
            self._payload_handle.flush()
            os.fsync(self._payload_handle.fileno())
            self._written_bytes = self._payload_handle.tell()
        for doc in self._buffer:
            self._ids.update(doc.id.encode("utf-8") + b"\n")
            self.spans += len(doc.spans)
        self.documents += len(self._buffer)
        self._buffer.clear()
        self._commit_journal()

    def finish(self) -> Path:
        """Commit what is left and publish the output (see the module docstring); returns its path."""
        self.commit()
        if self._payload_handle is not None:
            self._payload_handle.close()
            self._payload_handle = None
        payload = self.partial / "payload"
        check_output(self.target, self.kind, self.looks_ours, self.what)  # it may have changed meanwhile
        if self.format != "brat":
            os.replace(payload, self.target)
        elif not self.into_existing:
            publish_folder(payload, self.target, self.partial)
        shutil.rmtree(self.partial)
        return self.target

    def close(self) -> None:
        """Release the payload file (after an error: the partial output stays, for ``--resume``)."""
        if self._payload_handle is not None:
            self._payload_handle.close()
            self._payload_handle = None

    # -- helpers ---------------------------------------------------------------------------------------------

    def _format(self, doc: Document) -> str:
        if self.format == "jsonl":
            return json.dumps(document_to_record(doc), ensure_ascii=False, default=str) + "\n"
        return format_rows(doc, scores=True)

    def _key(self, doc_id: str) -> int:
        key = id_key(doc_id) if self.format == "brat" else doc_id
        return int.from_bytes(hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest(), "little")

    def _write_run(self) -> None:
        run = {"target": os.path.abspath(self.target), "format": self.format,
               "into_existing": self.into_existing, "pid": os.getpid(), "host": socket.gethostname(),
               "settings": self.settings}
        temporary = self.partial / "run.json.tmp"
        temporary.write_text(json.dumps(run, indent=1), encoding="utf-8")
        os.replace(temporary, self.partial / "run.json")

    def _read_run(self) -> dict:
        try:
            run = json.loads((self.partial / "run.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            run = None
        if not isinstance(run, dict) or run.get("target") != os.path.abspath(self.target):
            raise CorpusError(f"{self.partial} is not a partial output of this target (no readable "
                              "run.json); delete it to start over", self.target)
        return run

    def _journal(self) -> dict:
        """The last commit in the journal (a line cut by a kill does not count), with ``pending``: the ids of
        documents announced after it."""
        last = {"documents": 0, "spans": 0, "bytes": 0, "ids": hashlib.sha256().hexdigest()}
        pending: list[str] = []
        try:
            with open(self.partial / "journal", encoding="utf-8") as handle:
                for line in handle:
                    try:
                        entry = json.loads(line) if line.endswith("\n") else None
                    except ValueError:
                        entry = None
                    if not isinstance(entry, dict):
                        break
                    if "pending" in entry:
                        pending = [str(doc_id) for doc_id in entry["pending"]]
                    else:
                        last, pending = entry, []
        except OSError:
            pass
        return {**last, "pending": pending}

    def _commit_journal(self) -> None:
        self._append_journal({"documents": self.documents, "spans": self.spans, "bytes": self._written_bytes,
                              "ids": self._ids.hexdigest()})

    def _append_journal(self, entry: dict) -> None:
        with open(self.partial / "journal", "a", encoding="utf-8") as handle:
            handle.write(json.dumps(entry, ensure_ascii=False) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
