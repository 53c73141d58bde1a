"""A ``torchrun`` rank that ends soon after its launcher is gone.

Kept apart from :mod:`saeatlas._world` (which imports torch) so that the command
line starts watching before its imports, which take seconds: a ``kill -9`` of
``torchrun`` in those seconds left ranks that had not yet started watching (they
then took the orphaned state for the normal one) waiting at the process group's
first meeting for the whole of its timeout, 30 minutes.
"""

from __future__ import annotations

import os
import sys
import threading
import time

#: Seconds between two looks of a ``torchrun`` rank for its launcher.
LAUNCHER_POLL_S = 1.0
_watching: list[int] = []


def stop_with_launcher() -> None:
    """Under ``torchrun``: end this rank soon after its launcher is gone.

    ``torchrun`` starts its ranks in sessions of their own, so a ``kill -9`` of it
    leaves them running, orphaned: they went on holding their outputs' locks (a rerun
    was refused, "being written by process N", by a job that had been killed), or
    hung at their next meeting. A rank now stops as a kill would stop it (what it
    committed stays, for ``--resume``) once its parent changes."""
    if "TORCHELASTIC_RUN_ID" not in os.environ or _watching:
        return
    parent = os.getppid()
    _watching.append(parent)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(LAUNCHER_POLL_S)
        sys.stderr.write(
            f"saeatlas: the torchrun launcher (process {parent}) is gone; rank "
            f"{os.environ.get('RANK', '?')} (process {os.getpid()}) stops. Run the command "
            "again (with --resume where it has one).\n"
        )
        sys.stderr.flush()
        os._exit(1)

    threading.Thread(target=watch, name="saeatlas-launcher", daemon=True).start()
