"""Stamps of the files a run's capture reads (the model's code or its Hugging Face
directory, the inputs, the labels, the code they come from), kept in ``run.json``:
whether one was edited in place since, which the config alone does not show.

A stamp holds a file's size, modification and change times and the sha256 of its
bytes. A file whose size and both times are unchanged is not read again; one whose
times changed is compared by its bytes. A file written again with the same size and
its modification time set back (`os.utime`, `cp -p`, `tar x`, a file system that keeps
whole seconds) was taken for the old one, and the run skipped its capture; a change
time cannot be set back. A stamp that an older saeatlas recorded (size and
modification time alone) is compared on what it holds.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from ..store.manifest import file_sha256


def source_paths(cfg: Any) -> dict[str, Path]:
    """The model's file or directory, the inputs and the labels a run config names, by
    stage record key (those that are no file, a package's module, left out)."""
    out = {}
    for name, spec in (("model", cfg.model), ("inputs", cfg.inputs), ("labels", cfg.labels)):
        if not spec:
            continue
        path = Path(spec) if Path(spec).exists() else Path(spec.rpartition(":")[0])
        if path.is_file() or path.is_dir():
            out[name] = path
    return out


def source_files(cfg: Any, record: dict[str, Any] | None = None) -> dict[str, Any]:
    """Stamps of each of :func:`source_paths` and, under ``code``, of the Python files
    that the capture stage's ``record`` lists (:func:`.record.code_files`)."""
    out: dict[str, Any] = {name: stamp(path) for name, path in source_paths(cfg).items()}
    code = (record or {}).get("files", {}).get("code")  # a record's stamps, or paths
    if isinstance(code, (dict, list)) and code:
        out["code"] = {f: stamp(Path(f)) for f in code}
    return out


def files_edited(cfg: Any, record: dict[str, Any]) -> bool:
    """Whether a file that stage ``record`` stamped (``files``) differs now: edited,
    replaced, gone, or one more or fewer. A record without stamps is of none."""
    old = record.get("files")
    if not isinstance(old, dict):
        return False
    now = source_paths(cfg)
    if set(old) - {"code"} != set(now):
        return True
    code = old.get("code")
    if isinstance(code, list) or (code is not None and not isinstance(code, dict)):
        return True  # not what a run records
    pairs = [(old[n], p) for n, p in now.items()]
    pairs += [(s, Path(f)) for f, s in (code or {}).items()]
    return not all(_unchanged(s, p) for s, p in pairs)


def stamp(path: Path) -> list[int | str] | None:
    """``[size, mtime_ns, ctime_ns, sha256]`` of a file; of a directory (a Hugging Face
    model's), ``[n_files, total size, meta, meta and change times, sha256]`` of its own
    files (not hidden ones or those in folders below it, where a run directory, or the
    lock file beside one, may lie; `meta` hashes their names, sizes and modification
    times). None for neither."""
    quick = _quick(path)
    return None if quick is None else [*quick, _sha256(path)]


def _files(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))


def _quick(path: Path) -> list[int] | None:
    """A stamp's fields that need no reading of the bytes."""
    if path.is_file():
        st = path.stat()
        return [st.st_size, st.st_mtime_ns, st.st_ctime_ns]
    if not path.is_dir():
        return None
    meta, times, n, size = hashlib.sha256(), hashlib.sha256(), 0, 0
    for f in _files(path):
        st = f.stat()
        meta.update(f"{f.name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        times.update(f"{f.name}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ctime_ns}\n".encode())
        n, size = n + 1, size + st.st_size
    return [n, size, int(meta.hexdigest()[:15], 16), int(times.hexdigest()[:15], 16)]


def _sha256(path: Path) -> str:
    if path.is_file():
        return file_sha256(path)
    h = hashlib.sha256()
    for f in _files(path):
        h.update(f"{f.name}\0{file_sha256(f)}\n".encode())
    return h.hexdigest()


def _unchanged(old: Any, path: Path) -> bool:
    """Whether ``path`` is the file (or directory) of stamp ``old``."""
    quick = _quick(path)
    if not isinstance(old, list) or quick is None:
        return old == (None if quick is None else stamp(path))
    known = len(quick) - 1  # a file's size and mtime, a directory's count, size and meta
    if len(old) == known:  # recorded by an older saeatlas: its fields alone
        return old == quick[:known]
    if len(old) != len(quick) + 1:
        return False
    if old[:-1] == quick:  # not written to since: a change time cannot be set back
        return True
    size = 1 if path.is_dir() else 0  # the bytes decide; reading them needs the same size
    return old[: size + 1] == quick[: size + 1] and old[-1] == _sha256(path)
