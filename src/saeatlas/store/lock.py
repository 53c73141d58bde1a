"""One writer per output directory: an exclusive ``fcntl.flock`` held for the whole run.

The lock file is ``.NAME.lock`` beside the output ``NAME`` (not inside it: the
directory itself is swapped in and out, :mod:`.atomic`). It holds the pid of the
process that has the lock, so a second writer fails at once with one line that
names it. The kernel drops the lock when its holder exits, even after ``kill -9``,
so a lock is never stale (the ranks of a ``torchrun`` job whose launcher is killed
stop too: :func:`saeatlas._launcher.stop_with_launcher`); the file is removed when the
lock is let go. Locks are re-entrant within one thread: a function
that writes ``OUT`` may be called by another that already holds ``OUT``'s lock; another
thread of the same process is refused like another process.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import stat
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import AtlasError
from .atomic import resolve, through_link
from .manifest import MANIFEST, ROWS
from .output_names import OutputError, check_name_length, probe_file_folder


class LockError(AtlasError):
    """Another process is writing the same output."""


#: resolved output path -> [fd, depth, owning thread, folders made for the lock file]
_held: dict[Path, list] = {}
_guard = threading.Lock()


def lock_path(path: str | os.PathLike) -> Path:
    """The lock file of the output ``path``."""
    path = _key(path)
    return path.parent / f".{path.name}.lock"


def _key(path: str | os.PathLike) -> Path:
    """``path`` absolute, its folder resolved: one name per output, so that ``.``,
    ``out/..`` and the full path share one lock (``'.'`` has no name of its own), and
    so does a link to the output (written through, :func:`.atomic.through_link`)."""
    path = Path(os.path.abspath(through_link(path)))
    return resolve(path.parent) / path.name


def check_writable(
    path: str | os.PathLike, *, holds_outputs: bool = False, for_file: bool = False
) -> None:
    """Raise :class:`OutputError` unless the output directory ``path`` can be written:
    it is a directory or does not exist yet, and its nearest existing folder is a
    writable directory. ``holds_outputs``: ``path`` is a folder of outputs (a run
    directory), which may hold others. ``for_file``: ``path`` is only the folder a file
    is written into (a report's page, which may lie in its atlas or beside other
    outputs), not an output: its name is not checked and it may hold outputs, but it
    may not be (or lie in) an output other than one this thread holds the lock of, and
    a file is made and removed there first (:func:`~.output_names.probe_file_folder`)."""
    if not for_file and os.fspath(path) == "-":
        raise OutputError(
            "The output '-' is not standard output: saeatlas writes its outputs as "
            "directories, and '-' would be a folder of that name. Choose a directory (write "
            "'./-' for a folder named '-')."
        )
    path = Path(path)
    try:
        os.path.abspath(path).encode("utf-8")
    except UnicodeEncodeError:  # a byte that is no UTF-8 (a Latin-1 name), kept by Python
        raise OutputError(
            f"{os.path.abspath(path)!r} is not UTF-8 text: the Parquet and JSON files of an "
            "output cannot name it. Choose an output whose path is UTF-8."
        ) from None
    if path.exists() and not path.is_dir():
        raise OutputError(f"'{path}' exists and is not a directory; choose another output.")
    if for_file:
        _check_file_folder(path)
        # a page in ATLAS/.figures.partial was deleted by the next report, which took the
        # folder for one a killed report left (and one in .ATLAS.partial, the report's own
        # atlas's, by the next analysis): no page is written into such a folder
        _check_working_name(path, ours=False)
    else:
        check_name_length(path)
        _check_working_name(path)
        _check_nesting(path, holds_outputs)
    if path.exists() and not os.access(path, os.W_OK | os.X_OK):
        raise OutputError(f"Cannot write to '{path}': permission denied. Choose another output.")
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise OutputError(
            f"Cannot create '{path}': '{parent}' is a file, not a directory. Choose another output."
        )
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(
            f"Cannot create '{path}': '{parent}' is not writable (permission denied). Choose "
            "another output."
        )
    if for_file:
        probe_file_folder(path)


def _check_file_folder(path: Path) -> None:
    """Refuse the folder of a file (a report's page) that is or lies in an output this
    thread does not hold: a page written in a store or an SAE went with that output's
    next ``--overwrite``."""
    real = resolve(os.path.abspath(path))
    for outer in (real, *real.parents):
        what = output_kind(outer)
        if what is not None and _written_here(outer) is None:
            where = "is" if outer == real else "is inside"
            raise OutputError(
                f"'{path}' {where} {what} '{outer}', which must hold only its own files; "
                "write the file elsewhere."
            )


def _check_working_name(path: Path, *, ours: bool = True) -> None:
    """Refuse an output named as what saeatlas keeps beside an output ``NAME`` while it
    writes it (``.NAME.partial``, ``.NAME.old``, ``.NAME.lock``), or inside such a folder
    (but, with ``ours``, the one this thread writes): a store written as ``.a.partial``
    was taken by the next reader of ``a`` for a capture a kill stopped before its swap,
    and moved to ``a``; one in ``.a.partial/x`` was deleted by the next capture of ``a``."""
    real = resolve(os.path.abspath(path))
    for folder in (real, *real.parents):
        own = re.fullmatch(r"\.(.+)\.(partial|old|lock)", folder.name)
        if own is not None and not (ours and _written_here(folder) is not None):
            where = "named as" if folder == real else f"inside '{folder}', named as"
            # `--out .a.partial --resume`, as `info .a.partial` advised, was told only this
            given = f" (to continue its work, give '{Path(path).parent / own[1]}' with --resume)"
            raise OutputError(
                f"The output '{path}' is {where} the folder saeatlas keeps beside an output "
                f"'{own[1]}' while it writes it ('.NAME.{own[2]}'): writing or reading "
                f"'{own[1]}' would move or delete it. Choose another name"
                f"{given if folder == real and own[2] == 'partial' else ''}."
            )


#: The files that mark a directory as a saeatlas output, and what that output is: two
#: each, so that a project folder with an `atlas.json` of its own is not taken for one.
#: (The SAE's are :mod:`saeatlas.sae.files`' names, not imported: ``store`` is upstream.)
OUTPUT_MARKERS: tuple[tuple[tuple[str, ...], str], ...] = (
    ((MANIFEST, ROWS), "the activation store"),
    (("cfg.json", "sae_weights.safetensors"), "the SAE"),
    (("atlas.json", "units.parquet"), "the atlas"),
    (("sweep.json", "pareto.json"), "the sweep"),
    # a report's page written into it blocked the next export (which replaces it whole)
    (("run_settings.json", "skipped_indexes.json"), "the Neuronpedia export"),
)


def output_kind(directory: Path) -> str | None:
    """What saeatlas output ``directory`` is (``"the SAE"``), or None."""
    for files, what in OUTPUT_MARKERS:
        if all((directory / f).is_file() for f in files):
            return what
    return None


def _check_nesting(path: Path, holds_outputs: bool) -> None:
    """Refuse an output inside another saeatlas output, or a plain folder that holds one:
    each output holds only its own files, so the other's next ``--overwrite`` would refuse
    or delete the one nested in it. An output that the command writing the outer one
    nests in it (a report's figures in its atlas) is that command's own; a run directory
    is a folder of outputs (``holds_outputs``), not one."""
    real = resolve(os.path.abspath(path))
    # an SAE's seed SAEs lie beside it, in a sweep too (`SWEEP/k-8/seed-0-seed1`)
    seed = re.fullmatch(r"(.+)-seed\d+", real.name)
    seed_of_sae = seed is not None and output_kind(real.parent / seed[1]) == "the SAE"
    for outer in () if seed_of_sae else real.parents:
        # one written as `.OUTER.partial` replaces the folder whole when it is put in
        # place: `OUTER/b` went with it, and an SAE trained into `SWEEP/mine` while that
        # sweep ran was deleted when it finished
        partial = (outer.parent / f".{outer.name}.partial").is_dir()
        what = output_kind(outer) or ("the output being written" if partial else None)
        if what is None or _written_here(outer) is not None:
            continue
        if partial:
            who = other_writer(outer)
            raise OutputError(
                f"'{path}' is inside the output being written '{outer}'"
                + (f", which {who} is writing" if who is not None else "")
                + ": it would be replaced when that output is put in place. Wait for it to "
                "finish, or choose an output outside it."
            )
        raise OutputError(
            f"'{path}' is inside {what} '{outer}', which must hold only its own files; "
            "choose an output outside it."
        )
    if holds_outputs or not real.is_dir() or output_kind(real) is not None:
        return
    try:
        if Path.cwd().resolve().is_relative_to(real):  # refused as the current folder
            return
    except OSError:  # the current folder was removed
        pass
    try:
        entries = sorted(real.iterdir())
    except OSError:  # not readable: refused as not writable below, or by its writer
        return
    for inner in entries:
        if inner.is_dir() and not inner.name.startswith(".") and output_kind(inner):
            raise OutputError(
                f"'{path}' holds {output_kind(inner)} '{inner}', which writing '{path}' "
                "would replace or be refused by; move it away or choose another output."
            )


def other_writer(directory: Path) -> str | None:
    """Who else holds the lock of the output ``directory`` (``"process 1234"``), or None.
    The lock is tried shared and let go at once, so it is never held for longer."""
    entry = _held.get(_key(directory))
    if entry is not None:
        return None if entry[2] == threading.get_ident() else "another thread of this process"
    try:
        fd = os.open(lock_path(directory), os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError:  # no lock file: nobody writes it
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        other = os.pread(fd, 32, 0).decode(errors="replace").strip()
        return f"process {other}" if other.isdigit() else "another process"
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _written_here(directory: Path) -> Path | None:
    """The output this thread holds the lock of that ``directory`` is, or is being
    written as (its ``.NAME.partial``), or None."""
    name = directory.name
    if name.startswith(".") and name.endswith(".partial"):
        directory = directory.parent / name[1 : -len(".partial")]
    entry = _held.get(_key(directory))
    return directory if entry is not None and entry[2] == threading.get_ident() else None


def acquire(path: str | os.PathLike, *, holds_outputs: bool = False) -> None:
    """Take the lock of the output ``path`` or raise :class:`LockError` at once.
    Checks first that ``path`` can be written (:func:`check_writable`)."""
    path = Path(path)
    key = _key(path)
    with _guard:
        if key in _held:
            if _held[key][2] != threading.get_ident():
                raise LockError(
                    f"'{path}' is being written by another thread of this process "
                    f"({os.getpid()}); wait for it to finish, or choose another output."
                )
            _held[key][1] += 1
            return
        check_writable(path, holds_outputs=holds_outputs)
        file = lock_path(path)
        # folders made for the lock file, deepest first: removed with it while empty, so
        # that an output refused before its work leaves no empty folder behind
        made = [d for d in (file.parent, *file.parent.parents) if not d.exists()]
        while True:
            fd = _open_and_lock(file, path)
            # The holder removes the file when it lets go; a lock taken on a file that
            # was removed meanwhile guards nothing, so try again on the new one.
            try:
                same = os.stat(file).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        _held[key] = [fd, 1, threading.get_ident(), made]


def _open_and_lock(file: Path, path: Path) -> int:
    try:
        for attempt in range(3):  # another writer may remove the folder it made (release)
            file.parent.mkdir(parents=True, exist_ok=True)
            try:
                # not through a link: the pid written would replace its target's bytes
                fd = os.open(file, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o666)
                break
            except FileNotFoundError:
                if attempt == 2:
                    raise
    except OSError as e:
        if file.is_symlink():
            raise LockError(
                f"The lock file '{file}' for '{path}' is a symbolic link, which saeatlas does "
                "not write through; remove the link."
            ) from None
        raise LockError(
            f"Cannot create the lock file '{file}' for '{path}' ({e.strerror}); "
            "check that the folder exists and is writable."
        ) from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):  # a pipe: writing its pid failed as a disk error
        os.close(fd)
        raise LockError(
            f"The lock file '{file}' for '{path}' is not a regular file (a named pipe or a "
            "device); remove it."
        )
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        try:
            other = os.pread(fd, 32, 0).decode(errors="replace").strip()
        finally:
            os.close(fd)
        if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            raise LockError(f"Cannot lock '{file}' ({e.strerror}).") from None
        who = f"process {other}" if other.isdigit() else "another process"
        raise LockError(
            f"'{path}' is being written by {who} (lock '{file}'); wait for it to finish, "
            "or choose another output."
        ) from None
    return fd


def release(path: str | os.PathLike) -> None:
    """Give back one level of the lock taken by :func:`acquire`."""
    key = _key(Path(path))
    with _guard:
        entry = _held.get(key)
        if entry is None or entry[2] != threading.get_ident():
            return
        entry[1] -= 1
        if entry[1] == 0:
            del _held[key]
            lock_path(key).unlink(missing_ok=True)  # while still locked: see acquire
            fcntl.flock(entry[0], fcntl.LOCK_UN)
            os.close(entry[0])
            for d in entry[3]:
                try:
                    d.rmdir()  # only ever removes an empty folder
                except OSError:
                    break


@contextmanager
def output_lock(*paths: str | os.PathLike | None, holds_outputs: bool = False) -> Iterator[None]:
    """Hold the locks of every output in ``paths`` (``None`` entries are skipped);
    ``holds_outputs``: they are folders of outputs (a run directory), which may hold
    other outputs (:func:`check_writable`).

    Two of ``paths`` that are one directory (one path twice, or a link to the other) are
    an error: a re-entrant lock let ``train --seeds 2`` write both SAEs into it, the
    second over the first, and report both as saved."""
    seen: dict[Path, Path] = {}
    for i, p in enumerate(paths):
        if p is not None and Path(p) in (Path(q) for q in paths[:i] if q is not None):
            raise OutputError(
                f"'{p}' is given twice as an output of this command: the second would be "
                "written over the first. Give each output its own directory."
            )
        if p is not None and seen.setdefault(_key(p), Path(p)) != Path(p):
            raise OutputError(
                f"'{seen[_key(p)]}' and '{p}' are one directory (one is a link to the other), "
                "but they are two outputs of this command; remove the link, or choose "
                "another output."
            )
    taken: list[Path] = []
    try:
        for p in paths:
            if p is not None:
                acquire(p, holds_outputs=holds_outputs)
                taken.append(Path(p))
        yield
    finally:
        for p in reversed(taken):
            release(p)
