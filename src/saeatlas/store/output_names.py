"""What an output's folder and name must allow before the work: a name short enough for
the ``.NAME.partial`` folder it is written into, and a folder that can hold a file.
:mod:`.lock` checks these (with the rest of what an output may be) as it takes the lock."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from ..errors import AtlasError
from .atomic import resolve


class OutputError(AtlasError):
    """An output cannot be written there (not a directory, no permission)."""


def probe_file_folder(path: Path) -> None:
    """Make a file in ``path`` (and the folders to it) and remove them again: a folder
    that cannot really hold one (``/proc/x``, a link to one, a read-only mount) passed
    the checks of :func:`.lock.check_writable` and failed only after the work."""
    real = resolve(os.path.abspath(path))
    made = [d for d in (real, *real.parents) if not d.exists()]
    try:
        real.mkdir(parents=True, exist_ok=True)
        # a file without a name where the system has them (O_TMPFILE): a named one that a
        # kill left between its making and its removal stayed in the folder, an atlas's
        # too, whose next `analyze --overwrite` refused the file as none of the atlas's
        with tempfile.TemporaryFile(dir=real):
            pass
    except OSError as e:
        named = f"'{path}'" if real == Path(os.path.abspath(path)) else f"'{path}' ('{real}')"
        raise OutputError(
            f"Cannot write a file into {named}: {e.strerror or e}. Choose another folder."
        ) from None
    finally:
        for d in made:  # deepest first; the writer makes them again
            try:
                d.rmdir()
            except OSError:
                break


def name_limit(path: str | os.PathLike) -> int:
    """The longest file name (bytes) the filesystem of ``path``'s nearest existing folder
    allows (255 where it does not say)."""
    folder = Path(os.path.abspath(path)).parent
    while not folder.exists():
        folder = folder.parent
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError):
        return 255


def check_name_length(path: Path) -> None:
    """Refuse a name too long for the ``.NAME.partial`` an output is written into (the
    longest name saeatlas gives it): a capture or training ran to its end and then
    failed with 'File name too long', losing the work."""
    name = Path(os.path.abspath(path)).name
    limit = name_limit(path)
    extra = len(".") + len(".partial")
    if len(name.encode()) + extra > limit:
        raise OutputError(
            f"The name of the output '{path}' is {len(name.encode())} bytes long; saeatlas "
            f"writes it as '.NAME.partial' first, which this filesystem allows up to {limit} "
            f"bytes. Choose a name of at most {limit - extra} bytes."
        )
