"""Rows the store holds more than once, exactly (the same inputs captured again, a
``.npy`` of ``np.tile``'d rows): every test of the atlas counts each copy as evidence,
so co-firing seen on 600 rows held five times beat the null models that the 600 did not
(the verdict went from "no reproducible modules" to "3 reproducible modules"). The
analysis counts them (``atlas.json``'s ``n_repeated_rows``), warns when they are many,
and the report says so beside the rows analysed."""

from __future__ import annotations

import logging

from ..store import ActivationStore
from .graph.codes import Codes

log = logging.getLogger(__name__)

#: The share of the encoded rows repeating another row from which the analysis warns (a
#: language model's first token is the same row in every text: a few per cent).
REPEATED_SHARE = 0.1


def repeated_rows(codes: Codes) -> int | None:
    """The encoded rows that repeat an earlier one exactly (None: not counted)."""
    if codes.n_distinct_rows is None:
        return None
    return codes.n_rows - codes.n_distinct_rows


def repeated_text(n_repeated: object, n_rows: object) -> str:
    """What the copies do to the analysis, or "" when they are few (or not counted)."""
    if not isinstance(n_repeated, int) or not isinstance(n_rows, int) or n_rows <= 0:
        return ""
    if n_repeated < REPEATED_SHARE * n_rows:
        return ""
    return (
        f"{n_repeated:,} of the {n_rows:,} rows ({n_repeated / n_rows:.0%}) repeat another "
        "row exactly; every copy counts as evidence in the co-firing tests and the null "
        "models, so significance is overstated where the same inputs were captured more "
        "than once (capture each input once)"
    )


def warn_repeated_rows(codes: Codes, store: ActivationStore) -> None:
    """Warn when many of the encoded rows of ``store`` are copies of others."""
    text = repeated_text(repeated_rows(codes), codes.n_rows)
    if text:
        log.warning("'%s': %s (atlas.json: n_repeated_rows).", store.path, text)
