"""The random unit sets an ablation is compared with: how many a module draws, when its
draws stop, and the p-value they give.

Every module is tested, so the causal count reads each module's p adjusted over the
modules (Benjamini & Hochberg 1995). The smallest p of n sets is 1 / (1 + n), and the
adjustment multiplies it by the number of modules, so by default the sets grow with the
modules (:func:`random_sets_needed`). A module's sets stop once :data:`STOP_AFTER` did at
least its damage (Besag & Clifford 1991, "Sequential Monte Carlo p-values"), so only the
modules whose p may be small pay for the full number.
"""

from __future__ import annotations

import logging
import math

from ..inference.outcome import ABLATION_ALPHA as ALPHA

log = logging.getLogger(__name__)

#: Random unit sets per module: at least 2 for a spread, at most this many (each is a
#: forward pass over the inputs; 10,000 reach p = 1e-4).
MAX_RANDOM = 10_000
#: The fewest random unit sets drawn by default (p down to 0.01).
MIN_RANDOM = 100
#: A module's random sets stop once this many did at least its damage: its p is then
#: no longer small, and drawing on would only refine a large p (Besag & Clifford 1991).
STOP_AFTER = 10


def random_sets_needed(n_tested: int) -> int:
    """Random unit sets per module that let one module alone among ``n_tested`` reach an
    adjusted p of :data:`ALPHA`: its p is at least ``1 / (1 + n_random)``, which the
    adjustment multiplies by ``n_tested`` (at least 100, at most :data:`MAX_RANDOM`)."""
    return min(MAX_RANDOM, max(MIN_RANDOM, math.ceil(n_tested / ALPHA)))


def monte_carlo_p(as_bad: int, drawn: int, n_random: int) -> float:
    """The p-value of a module against random unit sets drawn one at a time, up to
    ``n_random`` and stopped once :data:`STOP_AFTER` did at least its damage, when
    ``as_bad`` of the ``drawn`` sets did (Besag & Clifford 1991, "Sequential Monte
    Carlo p-values"):
    ``as_bad / drawn`` when stopped, else ``(1 + as_bad) / (1 + n_random)`` (all were
    drawn)."""
    if as_bad >= STOP_AFTER:
        return as_bad / drawn
    return (1 + as_bad) / (1 + n_random)


def draws_for(n_random: int | None, n_tested: int) -> int:
    """The random unit sets per module: ``n_random``, or by default enough for the
    adjustment over ``n_tested`` modules; too few for it are drawn, with a warning."""
    if n_random is None:
        return random_sets_needed(n_tested)
    if n_random and n_tested / (1 + n_random) > ALPHA:
        log.warning(
            "%d random unit sets per module cannot give any of %d modules an adjusted p "
            "at or below %g unless several modules hurt the loss; draw at least %d (or "
            "leave the number out for that default).",
            n_random,
            n_tested,
            ALPHA,
            random_sets_needed(n_tested),
        )
    return n_random
