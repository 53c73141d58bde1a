"""Rows waiting to become a shard: the pieces of input batches the writer holds,
cut at shard boundaries, each cut with the point a resumed capture picks up from."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .progress import ResumePoint


@dataclass
class Piece:
    """Rows of one input batch (all of them, or a run of them after a cut)."""

    x: torch.Tensor
    """``[rows, n_units]`` activations."""
    meta: dict[str, np.ndarray]
    """Per-row metadata columns."""
    batch: int
    """Index of the input batch."""
    offset: int
    """Index of the first row inside its batch."""
    batch_rows: int
    """Rows of the whole batch."""
    sample_start: int
    """Index of the batch's first sample."""
    n_samples: int
    """Samples of the batch."""

    def split(self, n: int) -> tuple[Piece, Piece]:
        """The first ``n`` rows, and the rest."""
        head = Piece(
            self.x[:n],
            {k: v[:n] for k, v in self.meta.items()},
            self.batch,
            self.offset,
            self.batch_rows,
            self.sample_start,
            self.n_samples,
        )
        tail = Piece(
            self.x[n:],
            {k: v[n:] for k, v in self.meta.items()},
            self.batch,
            self.offset + n,
            self.batch_rows,
            self.sample_start,
            self.n_samples,
        )
        return head, tail


class RowBuffer:
    """Pieces in input order, taken from the front ``n`` rows at a time."""

    def __init__(self) -> None:
        self.pieces: list[Piece] = []
        self.n_rows = 0

    def append(self, piece: Piece) -> None:
        # Empty pieces are kept too: they move the resume point.
        self.pieces.append(piece)
        self.n_rows += piece.x.shape[0]

    def take(self, n: int) -> tuple[list[Piece], ResumePoint]:
        """The pieces of the first ``n`` rows, and where a capture resumes once they
        are committed."""
        taken: list[Piece] = []
        need = n
        while need > 0:
            head = self.pieces[0]
            if head.x.shape[0] <= need:
                taken.append(self.pieces.pop(0))
                need -= head.x.shape[0]
            else:
                part, rest = head.split(need)
                taken.append(part)
                self.pieces[0] = rest
                need = 0
        # Empty pieces right after the cut belong to batches that are complete too.
        while self.pieces and self.pieces[0].x.shape[0] == 0 and self.pieces[0].batch_rows == 0:
            taken.append(self.pieces.pop(0))
        self.n_rows -= n
        last = taken[-1]
        consumed = last.offset + last.x.shape[0]
        if consumed == last.batch_rows:
            point = ResumePoint(last.batch + 1, 0, last.sample_start + last.n_samples)
        else:
            point = ResumePoint(last.batch, consumed, last.sample_start)
        return taken, point
