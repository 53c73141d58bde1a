"""Which SAEs an analysis may read together: the layers and rows they were trained on,
a seed SAE's training, a sweep member's own setting, and the warning of a transfer
analysis (an SAE read on rows other than its own)."""

from __future__ import annotations

import logging
import math

import torch

from ..errors import ConfigError
from ..sae import SparseAutoencoder
from ..sae.architectures import get_architecture
from ..sae.model import sae_layers
from ..store import ActivationStore
from ..train.rows import rows_digest

log = logging.getLogger(__name__)


def check_layers(
    sae: SparseAutoencoder, other: SparseAutoencoder, store: ActivationStore, what: str
) -> None:
    """``other`` (``what``, as "seed SAE 'DIR'") must read the layers of ``store`` that
    ``sae`` reads: the atlas compares their units one to one."""
    mine = [(l.name, l.n_units) for l in sae_layers(sae, store)]
    theirs = [(l.name, l.n_units) for l in sae_layers(other, store)]
    if theirs != mine:
        raise ConfigError(
            f"The {what} reads the layers {theirs} (name, units), the analysed SAE {mine}; "
            "it must be trained on the same layers of the same store."
        )


def check_rows(sae: SparseAutoencoder, other: SparseAutoencoder, what: str) -> None:
    """``other`` (``what``) must have been trained on the rows ``sae`` was trained on,
    where both record them (``rows_digest``): a seed SAE of other rows is another
    data's dictionary, not this one's with another seed, and a sweep of another store
    says nothing about why this SAE's sparsity was chosen."""
    mine, theirs = (s.cfg.metadata.get("rows_digest") for s in (sae, other))
    if isinstance(mine, str) and isinstance(theirs, str) and mine != theirs:
        raise ConfigError(
            f"The {what} was trained on other rows than the analysed SAE (rows digest "
            f"{theirs}, the analysed SAE's {mine}); give SAEs trained on the store the "
            "analysed SAE was trained on."
        )


def warn_transfer(sae: SparseAutoencoder, sae_path: str | None, store: ActivationStore) -> None:
    """Warn when ``sae`` records the rows it was trained on (``rows_digest``) and the
    store's are others (another capture, of other inputs or another model of the same
    layers): its atlas says how its features read these rows, a transfer analysis, not
    the SAE's own atlas, as `evaluate --model` of another network warns. Not refused: an
    SAE read on held-out inputs or a fine-tuned model is a question of its own."""
    trained = sae.cfg.metadata.get("rows_digest")
    here = rows_digest(store)
    if isinstance(trained, str) and trained != here:
        log.warning(
            "The SAE%s was trained on other rows than those of the store '%s' (rows digest "
            "%s, the store's %s): the atlas describes how its features read these rows (a "
            "transfer analysis), not the SAE's own atlas; give the store it was trained on "
            "(--acts) for that.",
            f" '{sae_path}'" if sae_path else "",
            store.path,
            trained,
            here,
        )


#: Training settings that do not change what an SAE learns (where and how it is logged).
_NOT_LEARNED = ("seed", "device", "log_every", "tensorboard", "checkpoint_every", "compile")


def settings_differ(
    sae: SparseAutoencoder, other: SparseAutoencoder, skip: tuple[str, ...] = ()
) -> list[tuple[str, object, object]]:
    """``(setting, other's, sae's)`` of each training setting (``train_config`` in
    ``cfg.json``) in which ``other`` differs from ``sae``, but the seed and the others of
    :data:`_NOT_LEARNED` and ``skip``, of those both record (an SAE of an older saeatlas
    lacks the settings added since); none where either records no settings."""
    settings = [(s.cfg.metadata or {}).get("train_config") for s in (sae, other)]
    if not all(isinstance(t, dict) for t in settings):
        return []
    mine, its = settings
    keys = sorted((set(mine) & set(its)) - set(_NOT_LEARNED + skip))
    return [(k, its[k], mine[k]) for k in keys if mine[k] != its[k]]


def check_twin(
    sae: SparseAutoencoder, other: SparseAutoencoder, store: ActivationStore, what: str
) -> SparseAutoencoder:
    """``other`` (``what``, as "seed SAE 'DIR'"), when it reads the same layers of
    ``store`` as ``sae``, was trained on its rows and has its architecture, d_sae and k
    (an SAE trained like ``sae`` with another seed); units and features of the two are
    compared one to one, so anything else would give a wrong atlas, not an error."""
    check_layers(sae, other, store, what)
    check_rows(sae, other, what)
    # k is read by the TopK family alone: a relu seed SAE was refused as "k 24" (its d_sae)
    topk = all(get_architecture(s.cfg.architecture).topk_family for s in (sae, other))
    shape = ("architecture", "d_sae", "k") if topk else ("architecture", "d_sae")
    differ = [f for f in shape if getattr(other.cfg, f) != getattr(sae.cfg, f)]
    if differ:
        got = ", ".join(f"{f} {getattr(other.cfg, f)!r}" for f in differ)
        want = ", ".join(f"{getattr(sae.cfg, f)!r}" for f in differ)
        raise ConfigError(
            f"The {what} has {got}, the analysed SAE {want}; a seed SAE must be "
            "trained the same way with another seed (delete a stale <sae>-seedN directory "
            "so that analyze trains it again)."
        )
    # a seed SAE of another sparsity penalty, normalisation or length of training joined
    # the ensemble without a word, and its modules were compared with the SAE's as if
    # they differed only by the seed (the layers and the shape are compared above; a
    # data order is the seed's, unless `data_seed` was given: `train --seed 1` is one; and
    # a run's SAE taken from its sweep held out the rows that measure the sweep's FVU)
    skip = ("layers", "d_sae", "expansion_factor", "data_seed", "heldout_rows", *shape)
    trained = settings_differ(sae, other, skip)
    if trained:
        got = ", ".join(f"`{k}` {a!r} (the analysed SAE's {b!r})" for k, a, b in trained)
        raise ConfigError(
            f"The {what} was trained with other settings than the analysed SAE: {got}; a "
            "seed SAE must be trained the same way with another seed (`saeatlas train "
            "--seeds N` trains such SAEs, or leave --seed-sae out and analyze trains them)."
        )
    if torch.equal(other.W_dec, sae.W_dec):
        raise ConfigError(
            f"The {what} has the analysed SAE's own weights (a copy of it); give "
            "an SAE trained the same way with another seed."
        )
    return other


def check_member(
    sae: SparseAutoencoder,
    member: SparseAutoencoder,
    store: ActivationStore,
    over: str,
    value: float,
    what: str,
) -> None:
    """A sparsity sweep's ``member`` (``what``) reads ``sae``'s layers, was trained on
    its rows, and has the setting ``over`` at the ``value`` the sweep lists for it: a
    sweep.json edited by hand, or a sweep rewritten (``sweep --overwrite``) between
    reading its sweep.json and its members, put other SAEs under the listed values, and
    how the modules change across the sparsities was reported of them."""
    check_layers(sae, member, store, what)
    check_rows(sae, member, what)
    from ..sweep.members import SWEEPABLE

    own = getattr(member.cfg, over, None)
    if over not in SWEEPABLE or not isinstance(own, (int, float)) or isinstance(own, bool):
        # a sweep said to vary `bogus` (sweep.json edited, or `sweep=("bogus", ...)`)
        # was analysed with no member compared with its value, and recorded as such
        raise ConfigError(
            f"The sweep varies {over!r}, not a setting of the {what} that a sweep varies "
            f"(one of {list(SWEEPABLE)}): its sweep.json was edited by hand, or is no "
            "sweep's; run `saeatlas sweep` again."
        )
    if not math.isclose(own, value, rel_tol=1e-6):
        raise ConfigError(
            f"The {what} has {over} {own:g}, not the {value:g} the sweep lists for it: its "
            "sweep.json and its members disagree (edited by hand, or a sweep rewritten "
            "while it was read); run `saeatlas sweep` again, or analyze once it is done."
        )
