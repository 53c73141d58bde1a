"""Atomic writes of files and of whole directories.

Files: write a temporary file beside the target, fsync, rename. A reader sees
the old file or the complete new one, never a torn write; the new file gets the
mode a plain ``open(path, "w")`` would give it (``0666`` less the umask), not
``mkstemp``'s ``0600``.

Directories: a writer fills ``.NAME.partial`` beside ``NAME`` and
:func:`swap_in` renames it into place: the old directory is first renamed to
``.NAME.old`` and removed only after the new one is in place. A kill at any
point leaves ``NAME`` complete (old or new) or, in the one instant between the
two renames, absent with both siblings present; :func:`recover_dir` (called
under the output's lock before anything is written) finishes or undoes that
swap, so ``NAME`` is always the complete old or the complete new directory.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import stat
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..errors import ConfigError

#: Prefix of temporary files; a crash leaves at most one, which later writes ignore.
TMP_PREFIX = ".tmp-"


def _read_umask() -> int:
    # os.umask can only be read by setting it, which races with other threads that
    # create files; Linux shows it in /proc without changing it.
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK_AT_IMPORT = _read_umask()


def _umask() -> int:
    return _read_umask() if os.path.exists("/proc/self/status") else _UMASK_AT_IMPORT


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # directories cannot be opened on some platforms
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp_path)`` and move the finished file to ``path`` atomically. The
    folders made for ``path`` go again, while empty, when the write fails: a full disk at
    an SAE's first ``checkpoint.pt`` left an empty ``--out`` folder behind."""
    path = Path(path)
    made = [d for d in (path.parent, *path.parent.parents) if not d.exists()]
    try:
        _write_into(path, write)
    except BaseException:
        for d in made:  # deepest first
            try:
                d.rmdir()  # only ever removes an empty folder
            except OSError:
                break
        raise


def check_replaceable(path: str | os.PathLike) -> None:
    """Refuse ``path`` when a device, a named pipe or a socket is there: the rename that
    puts a written file in place replaces it (`report --out /dev/null` replaced the
    system's /dev/null with the page, as root). A file, a link and a missing path pass;
    a folder is refused by each writer in its own words."""
    try:
        mode = os.lstat(path).st_mode
    except OSError:  # missing, or unreadable: the write says what is wrong
        return
    if stat.S_ISREG(mode) or stat.S_ISLNK(mode) or stat.S_ISDIR(mode):
        return
    raise ConfigError(
        f"'{path}' is {special_kind(mode)}, not a file: saeatlas writes a file by replacing "
        "what is at its path. Give the path of a file (to discard the output, a file in a "
        "temporary folder)."
    )


def special_kind(mode: int) -> str:
    """What a path of ``mode`` that is no file, folder or link is, in words."""
    return (
        "a named pipe" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "a device"
    )


def _write_into(path: Path, write: Callable[[Path], None]) -> None:
    check_replaceable(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f"{TMP_PREFIX}{path.name}-", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        if e.filename is None:  # a full disk: write() and fsync() name no file
            raise OSError(e.errno, e.strerror or str(e), str(path)) from e
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def remove_killed_writes(path: str | os.PathLike) -> None:
    """Remove the temporary files that writes of ``path`` a kill cut short left beside
    it (``.tmp-NAME-`` and a random suffix); call it holding ``path``'s lock, so no
    write is live."""
    path = Path(path)
    for tmp in path.parent.glob(f"{TMP_PREFIX}{path.name}-*"):
        tmp.unlink(missing_ok=True)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    atomic_write(path, lambda tmp: tmp.write_bytes(data))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically (see :func:`json_text`)."""
    atomic_write_bytes(path, json_text(obj).encode())


def json_text(obj: Any) -> str:
    """``obj`` as indented JSON, NaN and Inf as ``null`` (Python's ``NaN`` is no JSON, and
    other tools' parsers, JavaScript's ``JSON.parse``, Rust's serde_json, refused an
    atlas.json holding one) and numpy numbers as the numbers they hold (an
    ``np.int64`` count set in Python ended ``Atlas.save`` in a TypeError). Raises
    TypeError for a value JSON has no kind for."""
    return json.dumps(_finite(obj), indent=2, sort_keys=False, allow_nan=False) + "\n"


def _finite(obj: Any) -> Any:
    """``obj`` with every non-finite float inside it replaced by None, and numpy scalars
    and arrays by Python's."""
    if hasattr(obj, "dtype") and hasattr(obj, "tolist"):  # numpy, without importing it
        obj = obj.tolist()
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


# -- directories -----------------------------------------------------------------------------


def refuse_current_folder(
    path: str | os.PathLike, what: str, error: type[Exception] = ConfigError
) -> None:
    """Raise ``error`` when ``path`` is the current folder or holds it ('.', '..', ''):
    ``what`` (``"a store"``) replaces its folder whole (:func:`swap_in`), and the
    folder a process runs in cannot be renamed aside. So too when ``path`` goes up
    ('..') out of a folder that does not exist: its working folder beside it is named
    from the path as written (``out/missing/..`` is ``out``), but no rename can reach
    it, and the work was done before the last rename failed."""
    parts = Path(path).parts
    for i in range(1, len(parts)):
        if parts[i] == ".." and not Path(*parts[:i]).is_dir():
            raise error(
                f"'{path}' goes up ('..') out of '{Path(*parts[:i])}', which is not a folder; "
                f"give the folder it means without '..' ('{os.path.abspath(path)}')."
            )
    here = Path.cwd()
    if resolve(path) in (here, *here.parents):
        raise error(
            f"'{path}' is the current folder or holds it, and {what} replaces its folder whole "
            f"(renamed into place); give a new folder inside it, such as '{Path(path) / 'out'}'."
        )


def check_output_dir(
    path: Path, what: str, whose: str, marker: str, is_ours: Callable[[Path], bool], overwrite: bool
) -> None:
    """Refuse to write ``what`` (``"an SAE"``) into ``path`` where that would lose
    something: ``path`` is a file, holds entries ``is_ours`` rejects (temporary files
    aside; named as not ``whose``, ``"an SAE's"``), or already holds a complete one
    (its ``marker`` file) and ``overwrite`` is false."""
    if path.exists() and not path.is_dir():
        raise ConfigError(f"'{path}' exists and is not a directory; choose another --out.")
    refuse_current_folder(path, what)
    if not path.is_dir():
        return
    foreign = sorted(
        p.name for p in path.iterdir() if not is_ours(p) and not p.name.startswith(TMP_PREFIX)
    )
    if foreign:
        raise ConfigError(
            f"'{path}' holds files that are not {whose} ({foreign[:5]}); move them away or "
            "choose another --out."
        )
    if (path / marker).exists() and not overwrite:
        raise ConfigError(
            f"'{path}' already holds {what}. Choose another --out, or pass --overwrite "
            "(`overwrite=True`) to replace it."
        )


def through_link(path: str | os.PathLike) -> Path:
    """``path``, or the path a symbolic link there names: a link to an output is written
    through, the directory it names replaced and the link kept (a directory swapped in
    at the link's place would drop it, and leave files written through it behind)."""
    path = Path(path)
    return resolve(path) if path.is_symlink() else path


def resolve(path: str | os.PathLike) -> Path:
    """``Path(path).resolve()``; a loop of symbolic links on the way (a link that names
    itself, or two that name each other) is a :class:`ConfigError` that names it."""
    try:
        return Path(path).resolve()
    except (RuntimeError, OSError) as e:  # Python < 3.13: RuntimeError; then OSError
        raise ConfigError(
            f"'{path}' leads through a loop of symbolic links ({e}); remove the link or "
            "choose another path."
        ) from None


def beside(path: str | os.PathLike, suffix: str) -> Path:
    """``.NAME{suffix}`` beside the output ``NAME``; a path without a name of its own
    (``.``, ``out/..``) is made absolute first, so that it has one."""
    path = Path(os.path.abspath(path))
    return path.parent / f".{path.name}{suffix}"


def partial_dir(path: str | os.PathLike) -> Path:
    """Where the next version of the directory ``path`` is written before :func:`swap_in`."""
    return beside(path, ".partial")


def _old_dir(path: Path) -> Path:
    return beside(path, ".old")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def recover_dir(path: str | os.PathLike) -> None:
    """Finish or undo a :func:`swap_in` that a kill interrupted. Call it holding the
    lock of ``path`` (:func:`saeatlas.store.lock.output_lock`)."""
    path = through_link(path)
    old, new = _old_dir(path), partial_dir(path)
    if not old.exists():
        return
    if not path.exists():
        # Killed between the two renames: the partial directory is complete.
        os.replace(new if new.is_dir() else old, path)
        _fsync_dir(path.parent)
    _remove(old) if old.exists() else None


#: Seconds a reader waits for another process that holds the lock while a complete
#: directory waits beside ``path`` to put it in place (it takes a few renames).
READER_WAIT_S = 10.0


def finish_swap_for_reader(
    path: str | os.PathLike,
    recover: Callable[[Path], None] = recover_dir,
    complete: str | None = None,
) -> None:
    """For a reader of the directory ``path``, absent while a sibling of a swap is
    there: take its lock and ``recover`` it (:func:`recover_dir`, or a stage's own that
    also finishes its last step), so that a complete directory a kill left beside
    ``path`` is read, not reported missing. ``complete``: the file that marks the
    partial directory complete (``recover`` then puts it in place too).

    Another process that holds the lock while there is such a directory to put in
    place is finishing the same swap (a writer does that first, and so does every
    reader: the other ranks of a ``torchrun`` job open their inputs at once): the
    reader waits for ``path`` up to :data:`READER_WAIT_S`. A writer that holds the
    lock otherwise is named (:class:`~saeatlas.store.lock.LockError`); a folder this
    process cannot write is left as it is."""
    from .lock import LockError, OutputError, output_lock

    path = Path(path)
    if not path.exists():
        resolve(path)  # a loop of symbolic links is named, not reported missing
    new = partial_dir(path)
    if path.exists() or not (_old_dir(path).exists() or new.exists()):
        return
    try:
        with output_lock(path):
            recover(path)
    except LockError:
        waits = _old_dir(path).exists() or (complete is not None and (new / complete).is_file())
        deadline = time.monotonic() + (READER_WAIT_S if waits else 0.0)
        while not path.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        if not path.exists():
            raise
    except OutputError:
        pass


def fresh_partial(path: str | os.PathLike, *, keep: bool = False) -> Path:
    """An empty ``.NAME.partial`` directory for a new version of ``path`` (a stale one,
    left by a killed writer, is removed; with ``keep`` it is returned as it is, for a
    writer that checks and reuses what it holds). Call it holding the lock of ``path``."""
    path = Path(path)
    recover_dir(path)
    new = partial_dir(path)
    if keep and new.is_dir() and not new.is_symlink():
        return new
    _remove(new)
    new.mkdir(parents=True)
    return new


def swap_in(new: str | os.PathLike, path: str | os.PathLike) -> Path:
    """Put the complete directory ``new`` at ``path``, replacing what is there.

    The old ``path`` (a directory or a file) is renamed aside first and removed only
    once ``new`` is in place. Returns ``path``.
    """
    new, path = Path(new), Path(path)
    old = _old_dir(path)
    _remove(old)
    for d in (new, *new.iterdir()):
        if d.is_file():
            continue
        _fsync_dir(d)
    if path.exists() or path.is_symlink():
        os.replace(path, old)
    os.replace(new, path)
    _fsync_dir(path.parent)
    _remove(old)
    return path


@contextmanager
def replacing_dir(
    path: str | os.PathLike,
    *,
    keep: bool = False,
    keep_failed: Callable[[Path], bool] | None = None,
) -> Iterator[Path]:
    """Hold the lock of the directory ``path`` and yield an empty partial directory to
    fill; when the block ends without an error, the partial directory replaces
    ``path`` (:func:`swap_in`), else it is removed and ``path`` is left as it was.
    The caller decides beforehand whether ``path`` may be replaced. ``keep``: yield the
    partial directory a killed writer left, as it is (:func:`fresh_partial`);
    ``keep_failed(partial)``: whether to keep it after an error, for ``keep`` to reuse."""
    from .lock import output_lock

    path = through_link(path)
    with output_lock(path):
        new = fresh_partial(path, keep=keep)
        try:
            yield new
        except BaseException:
            if keep_failed is None or not keep_failed(new):
                _remove(new)
            raise
        swap_in(new, path)
