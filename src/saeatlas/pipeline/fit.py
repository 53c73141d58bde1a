"""What the stages after the capture need of its store, checked as soon as the store is
there: by ``saeatlas run --check`` on the dry run's first batch, and by the run itself
each time a stage opens the store, so a setting that fits no store is refused before
the sweep and the training rather than after them."""

from __future__ import annotations

from dataclasses import replace

from ..errors import ConfigError
from ..sae.architectures import get_architecture
from ..store import ActivationStore
from ..structure.inputs import check_label_column, check_module_size, check_view_fits
from ..sweep.members import heldout_rows
from ..train.rows import training_rows, training_steps
from ..train.run import check_fits
from .config import RunConfig


def check_store_fits(cfg: RunConfig, store: ActivationStore, n_rows: int | None) -> str:
    """Refuse what ``cfg``'s later stages would refuse of ``store`` (`train.layers` it does
    not record, TopK sparsities or an `analyze.min_module_features` above the SAE's
    latents, an `analyze.label_column` its rows lack, held-out rows or a batch size that
    leave too few rows to train on);
    return a one-line summary of the layers and the SAE's size. ``n_rows``: the rows the
    whole capture gives (the store's, or at most these for a dry run's first batch; None:
    not known, as of a dry run of texts, and not checked)."""
    layers = store.layers
    known = [l.name for l in layers]
    chosen = list(cfg.train.layers) or known
    missing = [n for n in chosen if n not in known]
    if missing:
        raise ConfigError(
            f"`train.layers` names {missing}, which the capture does not record; it records "
            f"{known}."
        )
    d_in = sum(l.n_units for l in layers if l.name in chosen)
    t = cfg.train
    d_sae = t.d_sae or t.expansion_factor * d_in
    topk = get_architecture(t.architecture).topk_family
    ks = [t.k] if topk and not (cfg.sweep.enabled and cfg.sweep.over == "k") else []
    if cfg.sweep.enabled and cfg.sweep.over == "k":
        ks = list(cfg.sweep.values)
    over = [k for k in ks if k > d_sae]
    if over:
        what = "`sweep.values`" if cfg.sweep.enabled and cfg.sweep.over == "k" else "`train.k`"
        raise ConfigError(
            f"{what} {[int(k) for k in over]} exceed the SAE's {d_sae} latents (`train.d_sae`, "
            f"or `train.expansion_factor` {t.expansion_factor} x {d_in} units): a TopK SAE keeps "
            "k of its latents. Lower them, or raise `train.d_sae`."
        )
    try:  # the analysis refused it only after the sweep and the training
        check_label_column(cfg.analyze, store)
    except ConfigError as e:
        raise ConfigError(f"`analyze.{str(e).lstrip('`')}") from None
    # the analysis refused it only after the capture and the training, and `run --check`
    # called it valid
    check_module_size(cfg.analyze, d_sae, "`analyze.min_module_features`", "or raise `train.d_sae`")
    if n_rows is not None:  # the training refused an SAE too large only after the capture
        batch = check_rows_fit(cfg, n_rows)
        # the SAEs trained at once (train_family): the SAE and its seeds, a sweep's members
        together = 1 if t.checkpoint_every else 1 + cfg.n_trained_seeds
        if cfg.sweep.enabled:
            together = max(together, len(cfg.sweep.values) * cfg.sweep.seeds)
        lower = RUN_SIZES + (FAMILY_RUN_SIZES if together > 1 else "")
        check_fits(d_in, d_sae, batch, t.device, lower, together)
    # the analysis refused units too many for its correlation view only after the
    # training, advising flags `run` has not, and `run --check` called them valid
    check_view_fits(cfg.analyze, d_in, 1 + cfg.stability.n_seed_saes, n_rows, VIEW_SIZES)
    return f"dry run: layers {known} give {d_in} units; the SAE has {d_sae} latents"


#: The run config's settings that shrink an SAE too large for the machine.
RUN_SIZES = "`train.d_sae` (or `train.expansion_factor`) or `train.batch_size`"
#: ... and those that train fewer SAEs at once.
FAMILY_RUN_SIZES = (
    ", or train fewer SAEs at once (`stability.n_seed_saes`, `sweep.values`, `sweep.seeds`)"
)

#: The run config's settings that shrink the analysis's correlation view of the units.
VIEW_SIZES = (
    "Train the SAE on fewer or narrower layers (`train.layers`, `layers`), or analyse fewer "
    "SAEs (`stability.n_seed_saes`, `analyze.n_bootstrap`)."
)


def _run_field(name: str) -> str:
    return f"`train.{name}`"


def _member_field(name: str) -> str:
    return "`sweep.heldout_fraction`" if name == "heldout_rows" else _run_field(name)


def check_rows_fit(cfg: RunConfig, n_rows: int) -> int:
    """Refuse what the sweep and the training would refuse of a store of ``n_rows`` rows:
    too few held out by `sweep.heldout_fraction`, too many by `train.heldout_rows`, a
    `train.batch_size` above the rows left to train on, or warm-ups and checkpoints that
    the run's steps do not reach. The training found them only after the sweep had run
    (and `run --check` called such a config valid). Returns the largest batch size."""
    batch_sizes = [0]
    if cfg.sweep.enabled:
        held = heldout_rows(n_rows, cfg.sweep.heldout_fraction, "`sweep.heldout_fraction`")
        member = replace(cfg.train, heldout_rows=held)
        where = "the run's store (in a sweep member)"
        rows, batch_size = training_rows(member, n_rows, where, name=_member_field)
        training_steps(member, rows, batch_size, name=_member_field)
        batch_sizes.append(batch_size)
    if not cfg.sweep.enabled or cfg.sweep.retrain or cfg.n_trained_seeds:
        rows, batch_size = training_rows(cfg.train, n_rows, "the run's store", name=_run_field)
        training_steps(cfg.train, rows, batch_size, name=_run_field)
        batch_sizes.append(batch_size)
    return max(batch_sizes)
