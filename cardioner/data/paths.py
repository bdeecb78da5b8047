"""Where cardioner reads and writes: one path-safety rule for
every writer and reader, and crash-safe replacement.

Every writer (brat, JSONL, CoNLL, TSV; ``convert``, ``predict``, ``evaluate --output``, the model export) goes
through ``staged_output`` or ``write_into_folder``, so one rule holds for all of them:

- **The output.** A path that does not exist yet, or one that holds an earlier output of the same kind (an
  export, a brat folder with cardioner's record ``OUTPUT_RECORD``, a file in the format being written:
  ``looks_ours``) — never anything else: a ``thesis.docx`` given as ``--output`` is refused and left as it
  was; inside a brat output, a file is replaced only when the record shows cardioner wrote its bytes
  (``brat``). The output's own name must not be a
  symbolic link (the folders above it may be).
- **Document ids** name files (brat): a relative POSIX path in canonical form — no empty, ``.``
  or ``..`` part, no leading or trailing ``/`` — whose parts do not start with ``.`` (the
  readers skip hidden files), hold no NUL, control character or backslash and fit a file name
  (255 bytes). ``./a`` and ``c/`` are refused naming the id, not silently renamed. Ids must
  stay unique up to case and Unicode normalisation (NFC), which macOS and Windows fold: ``A``
  and ``a`` would be one file there. A TSV row cannot hold a TAB or a line break in its id.
- **No link is followed when writing.** Every folder on the way to a written file must be a real folder, the
  file itself must not be a link, and its resolved path lies inside the output.

Reading a corpus folder, a symbolic link inside it (to a file or a folder) is refused with a CorpusError
naming it and where it points — a link could bring any file of the machine into a corpus and from there into
outputs; the user copies the file in, or reads the folder it lives in. Hidden entries are skipped and counted
in the read report. The path the user names (the corpus folder itself) may be a link.

**Crash safety.** Output is written into a hidden staging folder beside
the target, ``.NAME.cardioner-tmp-XXXX``, that holds a marker file (pid,
host, target) proving it ours; it becomes the output in one rename:

- a file: ``os.replace`` (atomic on POSIX);
- a new folder: ``rename`` (with ``RENAME_NOREPLACE`` where the kernel offers it);
- an existing folder (an earlier export): Linux ``renameat2(RENAME_EXCHANGE)`` swaps the new folder and the
  old one in one step, so that the target path always holds one complete export — the old one up to the
  exchange, the new one from then on — and the old one, now in the staging folder, is deleted after. Where the
  exchange is not available (another OS, a file system without it), the old folder is first moved *into* the
  marked staging folder as ``previous`` and the new one renamed onto the target; a kill between the two
  renames leaves no folder at the target for that moment, and the next run of the command puts ``previous``
  back before anything else (``clean_stale_staging``), so the old export is never lost.

The next run of the same command removes staging folders left by a killed run — only those whose marker names
the same target, this host and a process that is no longer running (never a concurrent run's).
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import re
import shutil
import socket
import stat
import tempfile
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from cardioner.errors import CorpusError

#: the marker file inside every staging folder
STAGING_MARK = ".cardioner-staging"
#: the marker while it is written (renamed to STAGING_MARK when whole: a marker is complete or absent)
STAGING_MARK_PART = ".cardioner-staging.part"
#: staging folders beside an output are ``.NAME`` + this + a random part; inside a folder written into, this
STAGING_INFIX = ".cardioner-tmp-"
#: the hidden record in every brat folder cardioner writes (``brat.read_record``): what it wrote there
OUTPUT_RECORD = ".cardioner.jsonl"
HIDDEN_NOTE = "hidden files and folders (names starting with '.') not read"
#: longest file name most file systems take, in bytes
MAX_NAME_BYTES = 255
_ID_SUFFIX_ROOM = len(".ann")
_CONTROL = re.compile(r"[\x00-\x1f\x7f\x85\u2028\u2029]")
_TSV_FORBIDDEN = re.compile(r"[\t\n\r\x00]")


# ---------------------------------------------------------------------------------------------------- ids
def id_problem(doc_id: object, to: str) -> str | None:
    """Why ``doc_id`` cannot be written as format ``to`` (and read back as the same id), or None.

    Args:
        doc_id: the document id.
        to: "brat" (ids name files), "tsv" (ids fill a column), or another format (any text).
    """
    if not isinstance(doc_id, str) or not doc_id:
        return "an id must be non-empty text"
    if to == "tsv":
        found = _TSV_FORBIDDEN.search(doc_id)
        return None if found is None else f"holds {found.group()!r}, which a TSV row cannot hold"
    if to != "brat":
        return None
    found = _CONTROL.search(doc_id) or re.search(r"\\", doc_id)
    if found is not None:
        return f"holds {found.group()!r}, which a file name should not hold"
    if doc_id.startswith("/"):
        return "is an absolute path; ids are paths relative to the output folder"
    parts = doc_id.split("/")
    if ".." in parts:
        return "is not a plain relative path (it has a '..' part, which leaves the folder)"
    for part in parts:
        if part in ("", "."):
            canonical = canonical_id(doc_id)
            suggestion = f"; write it as {canonical!r}" if canonical else ""
            return (
                f"is not a plain relative path (it has {'an empty' if not part else repr(part)}"
                f" part){suggestion}"
            )
        if part.startswith("."):
            return f"has a part starting with '.' ({part!r}): a hidden file, which readers skip"
        if len(part.encode("utf-8")) + _ID_SUFFIX_ROOM > MAX_NAME_BYTES:
            return f"has a part of {len(part.encode('utf-8'))} bytes, longer than a file name can be"
    return None


def canonical_id(doc_id: str) -> str:
    """``doc_id`` without empty and ``.`` parts (``./a/`` -> ``a``); ``..`` parts are kept (and refused)."""
    return "/".join(part for part in doc_id.split("/") if part not in ("", "."))


def id_key(doc_id: str) -> str:
    """What two ids that would name one file share: NFC, case folded (macOS and Windows fold both)."""
    return unicodedata.normalize("NFC", canonical_id(doc_id)).casefold()


def check_writable_ids(ids: Sequence[str], to: str, where: str | Path | None) -> None:
    """Raise CorpusError naming the id when one cannot be written as ``to``, or two would be one output.

    Args:
        ids: the document ids, in order.
        to: the output format ("brat", "tsv", "jsonl", "conll").
        where: the output (for the message).
    """
    first_seen: dict[str, int] = {}
    for i, doc_id in enumerate(ids):
        problem = id_problem(doc_id, to)
        if problem is not None:
            raise CorpusError(f"document {i + 1}: id {doc_id!r} {problem}", where)
        key = id_key(doc_id) if to == "brat" else doc_id
        if key in first_seen:
            other = ids[first_seen[key]]
            same = (
                ""
                if other == doc_id
                else (
                    f" (as {other!r}: ids that differ only in case or Unicode form name "
                    "one file on macOS and Windows)"
                )
            )
            raise CorpusError(
                f"duplicate document id {doc_id!r} (documents {first_seen[key] + 1} and {i + 1} in "
                f"the documents to write{same})",
                where,
            )
        first_seen[key] = i


# ---------------------------------------------------------------------------------------------------- reading
def corpus_files(folder: str | Path, report=None) -> list[Path]:
    """The regular files under ``folder``, recursively, sorted; hidden entries are skipped and counted.

    Args:
        folder: the corpus folder (itself may be a link).
        report: a ReadReport where skipped hidden entries are counted.

    Returns:
        The files.

    Raises:
        CorpusError: a symbolic link, or something that is neither a file nor a folder (a pipe), inside it.
    """
    hidden: list[Path] = []
    found = list(walk_corpus_files(folder, hidden))
    if hidden and report is not None:
        report.note("skipped", HIDDEN_NOTE, str(hidden[0]), n=len(hidden))
    return sorted(found)


def walk_corpus_files(folder: str | Path, hidden: list[Path] | None = None) -> Iterator[Path]:
    """``corpus_files`` one file at a time, in the same order (each folder's entries sorted by name, a
    folder's files where its name sorts), never holding more than one folder's listing: for folders of
    millions of files. Hidden entries are skipped (and appended to ``hidden`` when given).
    """
    folder = Path(folder)

    def walk(current: Path) -> Iterator[Path]:
        try:
            with os.scandir(current) as entries:
                ordered = sorted(entries, key=lambda entry: entry.name)
        except OSError as error:
            raise CorpusError(f"cannot list the folder ({error.strerror or error})", current) from None
        for entry in ordered:
            path = Path(entry.path)
            if entry.name == OUTPUT_RECORD:  # cardioner's own record of an output folder: not data
                continue
            if entry.name.startswith("."):
                if hidden is not None:
                    hidden.append(path)
            elif entry.is_symlink():
                raise CorpusError(
                    f"{path.relative_to(folder)} is a symbolic link (to {os.readlink(path)}); links "
                    "inside a corpus folder are not followed: copy the file in, or read the folder "
                    "it is in",
                    folder,
                )
            elif entry.is_dir(follow_symlinks=False):
                yield from walk(path)
            elif entry.is_file(follow_symlinks=False):
                yield path
            else:
                raise CorpusError(
                    f"{path.relative_to(folder)} is neither a file nor a folder (a pipe, socket or "
                    "device)",
                    folder,
                )

    yield from walk(folder)


def inside(root: str | Path, relative: str, what: str = "file") -> Path:
    """``root/relative``, checked without following links: each existing folder on the way is a real folder,
    the file itself (if it exists) a regular file, and the resolved path lies inside ``root``.

    Args:
        root: the output (or input) folder.
        relative: a checked id plus its suffix (``notes/a.txt``).
        what: what the path is for (for the message).

    Raises:
        CorpusError: naming the path.
    """
    root = Path(root)
    current = root
    parts = relative.split("/")
    for i, part in enumerate(parts):
        current = current / part
        try:
            mode = os.lstat(current).st_mode
        except FileNotFoundError:
            break
        except OSError as error:
            raise CorpusError(f"cannot use this {what} path ({error.strerror or error})", current) from None
        last = i == len(parts) - 1
        if stat.S_ISLNK(mode):
            raise CorpusError(
                f"is a symbolic link (to {os.readlink(current)}); cardioner never writes or reads "
                "through a link inside a corpus or output folder",
                current,
            )
        if not last and not stat.S_ISDIR(mode):
            raise CorpusError(f"is not a folder, so {relative!r} cannot be under it", current)
        if last and not stat.S_ISREG(mode):
            raise CorpusError(f"is not a regular file, so it cannot be the {what} {relative!r}", current)
    target = root / relative
    if not target.resolve().is_relative_to(root.resolve()):
        raise CorpusError(f"{relative!r} resolves outside {root}", root)
    return target


def make_folders(root: Path, relative: str) -> None:
    """Create the folders of ``relative`` (a file path) under
    ``root``, one at a time, never through a link."""
    current = root
    for part in relative.split("/")[:-1]:
        current = current / part
        try:
            os.mkdir(current)
        except FileExistsError:
            pass
        if not stat.S_ISDIR(os.lstat(current).st_mode):  # a link or a file put there since the check
            raise CorpusError("is not a folder (a link or a file appeared while writing)", current)


# ---------------------------------------------------------------------------------------------------- outputs
def check_output(target: str | Path, kind: str, looks_ours: Callable[[Path], bool] | None = None,
                 what: str = "an earlier output") -> bool:
    """Raise CorpusError unless ``target`` may be written; returns whether it exists.

    Args:
        target: the output file or folder.
        kind: "file" or "folder".
        looks_ours: whether an existing, non-empty target holds an earlier output of this kind (it may be
            replaced); None: any regular file, only an empty folder.
        what: what ``looks_ours`` recognises (for the message).
    """
    target = Path(target)
    try:
        mode = os.lstat(target).st_mode
    except FileNotFoundError:
        return False
    except OSError as error:  # a name too long, a file where a folder should be, no permission
        raise CorpusError(f"cannot use this output path ({error.strerror or error})", target) from None
    if stat.S_ISLNK(mode):
        raise CorpusError(
            f"the output is a symbolic link (to {os.readlink(target)}); cardioner does not write "
            "through links: give the path it points to, or another output",
            target,
        )
    if kind == "file":
        if stat.S_ISDIR(mode):
            raise CorpusError("the output is a folder; a file was expected", target)
        if not stat.S_ISREG(mode):
            raise CorpusError("the output exists and is not a regular file", target)
        if looks_ours is not None and os.lstat(target).st_size and not looks_ours(target):
            raise CorpusError(
                f"the output exists and does not hold {what}; it is left as it is (move it away or "
                "choose another output)",
                target,
            )
        return True
    if not stat.S_ISDIR(mode):
        raise CorpusError(
            f"the output exists and is not a folder; it is left as it is ({what} is written as a " "folder)",
            target,
        )
    with os.scandir(target) as entries:
        empty = next(entries, None) is None
    if not empty and (looks_ours is None or not looks_ours(target)):
        raise CorpusError(f"the output is a folder that is neither empty nor {what}; it is left as it is "
                          "(choose a new or empty folder)", target)
    return True


def check_not_input(output: str | Path, input: object, inside_too: bool = False) -> None:
    """Raise CorpusError when ``output`` is the corpus ``input`` itself (the same file or folder, however
    written) or, with ``inside_too``, when one lies inside the other: the output would replace the data being
    read, become part of it, or be written among it (``--output .`` above the input folder). ``input`` may be
    a ``datasets`` object (nothing to compare)."""
    if not isinstance(input, (str, Path)):
        return
    target, source = Path(os.path.realpath(output)), Path(os.path.realpath(input))
    same = target == source or (target.exists() and source.exists() and os.path.samefile(target, source))
    if same:
        raise CorpusError(f"the output is the input ({input}); writing it would replace the data being "
                          "read: choose another output", output)
    if inside_too and source.is_dir() and target.is_relative_to(source):
        raise CorpusError(f"the output lies inside the input folder ({input}), so the next read of that "
                          "folder would read it too: choose an output outside it", output)
    if inside_too and source.is_relative_to(target):
        raise CorpusError(f"the input ({input}) lies inside the output, so the output would be written among "
                          "it: choose an output outside the input's folders", output)


def check_output_folder(folder: str | Path, names: Sequence[str], what: str) -> None:
    """Raise CorpusError unless ``folder`` may receive a command's output files (``names``, written one by
    one): it is new, empty, or already holds one of them (an earlier output of that command). Anything else —
    a project, a corpus — is refused and left as it is."""
    check_output(folder, "folder", lambda existing: any((existing / name).exists() for name in names),
                 f"{what} (with {' or '.join(names)})")


def _staging_prefix(target: Path) -> str:
    return f".{target.name[:100]}{STAGING_INFIX}"


def pid_running(pid: int) -> bool:
    """Whether a process with this id is running (on this host); ours always is."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextmanager
def staging_folder(where: Path, prefix: str, target: Path) -> Iterator[Path]:
    """A new hidden folder in ``where`` with a marker naming this process and ``target``; removed on exit."""
    marker = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "target": os.path.abspath(target)})
    for attempt in range(3):
        holder = Path(tempfile.mkdtemp(prefix=prefix, dir=where))
        try:  # written aside, then renamed: a kill mid-write leaves no half marker that would keep it forever
            (holder / STAGING_MARK_PART).write_text(marker, encoding="utf-8")
            os.rename(holder / STAGING_MARK_PART, holder / STAGING_MARK)
            break
        except FileNotFoundError:  # a concurrent clean_stale_staging took it for an empty leftover: again
            if attempt == 2:
                raise
        except BaseException:  # disk full: no half-marked folder is left behind
            shutil.rmtree(holder, ignore_errors=True)
            raise
    try:
        yield holder
    finally:
        remove_staging(holder)


def remove_staging(holder: Path) -> None:
    """Delete a staging folder: its contents first, the
    marker last, so that a kill part-way leaves it marked."""
    if not holder.is_dir() or holder.is_symlink():
        return
    for entry in holder.iterdir():
        if entry.name == STAGING_MARK:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
    (holder / STAGING_MARK).unlink(missing_ok=True)
    try:
        holder.rmdir()
    except OSError:
        pass


def _stale_marker(holder: Path, target: Path) -> bool:
    """Whether ``holder`` is a staging folder of a finished or killed run for ``target`` on this host."""
    try:
        marker = json.loads((holder / STAGING_MARK).read_text(encoding="utf-8"))
        pid, host, marked = int(marker["pid"]), str(marker["host"]), str(marker["target"])
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return marked == os.path.abspath(target) and host == socket.gethostname() and not pid_running(pid)


def _unborn(holder: Path) -> bool:
    """Whether a folder named like our staging folders holds nothing but a marker being written: empty, a
    ``.part`` marker, or an empty marker (cardioner 0.x before the marker was renamed into place)."""
    names = {entry.name for entry in holder.iterdir()}
    if names <= {STAGING_MARK_PART}:
        return True
    try:  # a concurrent run deleting its own staging folder may remove the marker meanwhile: not ours to take
        return names == {STAGING_MARK} and (holder / STAGING_MARK).stat().st_size == 0
    except FileNotFoundError:
        return False


def clean_stale_staging(target: str | Path) -> list[Path]:
    """Remove the staging folders a killed run left for
    ``target``, first restoring an export it had moved aside.

    Only folders named like ours whose marker names ``target``, this host and a process no longer running are
    touched, plus folders named like ours that are empty or hold only a marker being written (a run killed
    while making or deleting its staging folder; ``rmdir`` never removes anything else). Returns them.
    """
    target = Path(target)
    places = [(target.parent, _staging_prefix(target))]
    if target.is_dir() and not target.is_symlink():
        places.append((target, STAGING_INFIX))
    removed = []
    for where, prefix in places:
        try:
            candidates = [entry for entry in where.iterdir() if entry.name.startswith(prefix)]
        except OSError:
            continue
        for holder in candidates:
            if holder.is_symlink() or not holder.is_dir():
                continue
            if _unborn(holder):  # a run killed while making or deleting it (or one just made: it retries)
                for name in (STAGING_MARK_PART, STAGING_MARK):
                    (holder / name).unlink(missing_ok=True)
                os.rmdir(holder)
                removed.append(holder)
            elif _stale_marker(holder, target):
                previous = holder / "previous"
                if previous.is_dir() and not os.path.lexists(target):
                    os.rename(previous, target)  # a kill between the two renames of the fallback replacement
                remove_staging(holder)
                removed.append(holder)
    return removed


_RENAME_NOREPLACE, _RENAME_EXCHANGE = 1, 2
_AT_FDCWD = -100


def _renameat2(source: Path, target: Path, flags: int) -> bool:
    """Linux ``renameat2``; False when this system or file
    system does not offer ``flags`` (then fall back)."""
    libc = _libc()
    function = getattr(libc, "renameat2", None) if libc is not None else None
    if function is None:
        return False
    result = function(_AT_FDCWD, os.fsencode(source), _AT_FDCWD, os.fsencode(target), ctypes.c_uint(flags))
    if result == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(source), None, str(target))


_LIBC: list = []


def _libc():
    if not _LIBC:
        try:
            _LIBC.append(ctypes.CDLL(None, use_errno=True))
        except OSError:
            _LIBC.append(None)
    return _LIBC[0]


def publish_folder(payload: Path, target: Path, holder: Path) -> None:
    """Make the complete folder ``payload`` the folder ``target`` in one step (see the module docstring).

    Args:
        payload: the new folder, inside the staging folder ``holder``.
        target: the output folder (absent, or an earlier output that ``check_output`` accepted).
        holder: the marked staging folder; it receives the old folder, deleted with it.
    """
    if not os.path.lexists(target):
        if not _renameat2(payload, target, _RENAME_NOREPLACE):
            os.rename(payload, target)
        return
    if _renameat2(payload, target, _RENAME_EXCHANGE):
        return  # the old folder is now at ``payload``, removed with the staging folder
    previous = holder / "previous"
    os.rename(target, previous)  # kept, marked, until the new folder is in place
    try:
        os.rename(payload, target)
    except BaseException:
        os.rename(previous, target)
        raise


@contextmanager
def staged_output(target: str | Path, kind: str, looks_ours: Callable[[Path], bool] | None = None,
                  what: str = "an earlier output") -> Iterator[Path]:
    """Yield a path to write ``target`` at (a file, or a new
    folder); it becomes ``target`` when the block ends.

    A failure or a kill leaves ``target`` as it was (an exception removes the staging folder at once; a kill
    leaves it to the next run, ``clean_stale_staging``).

    Args:
        target: the output file or folder.
        kind: "file" or "folder".
        looks_ours: see ``check_output``.
        what: see ``check_output``.
    """
    target = Path(target)
    check_output(target, kind, looks_ours, what)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise CorpusError(
            f"cannot create the folder of the output ({error.strerror or error})", target
        ) from None
    clean_stale_staging(target)
    with staging_folder(target.parent, _staging_prefix(target), target) as holder:
        payload = holder / "payload"
        if kind == "folder":
            payload.mkdir()
        yield payload
        check_output(target, kind, looks_ours, what)  # the target may have changed while we wrote
        if kind == "file":
            os.replace(payload, target)
        else:
            publish_folder(payload, target, holder)


def write_into_folder(folder: Path, files: Iterable[tuple[str, bytes | None]]) -> None:
    """Put ``files`` (relative path, content) into the
    existing ``folder``, each atomically, none through a link.

    Every file is staged first (a failure changes nothing); then they are moved in one at a time, in the order
    given. A kill part-way leaves each file either old or new, and the staging folder (inside ``folder``,
    hidden, marked) to the next run.

    Args:
        folder: an existing folder that ``check_output`` accepted.
        files: relative paths (checked ids plus suffixes) and their bytes, in the order to move them in; None
            for bytes: delete that file at its turn (a file that must be gone before the next one comes).
    """
    clean_stale_staging(folder)
    with staging_folder(folder, STAGING_INFIX, folder) as holder:
        staged: list[tuple[str, Path | None, Path]] = []
        for relative, content in files:
            target = inside(folder, relative)
            path = None if content is None else holder / str(len(staged))
            if path is not None:
                with open(path, "wb") as handle:
                    handle.write(content)
            staged.append((relative, path, target))
        for relative, path, target in staged:
            if path is None:
                inside(folder, relative).unlink(missing_ok=True)
                continue
            make_folders(folder, relative)
            inside(folder, relative)  # again, now that its folders exist
            os.replace(path, target)
