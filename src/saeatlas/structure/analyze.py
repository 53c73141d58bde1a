"""``analyze(sae, store, AtlasConfig()) -> Atlas``: the whole analysis, in one place.

The core atlas (:func:`.mapping.core_atlas`: codes, graph, communities, modules
of units, significance), then each step in :data:`STEPS`, in order. A step takes
the atlas and the prepared inputs (encoded once, shared) and adds columns and
summary entries to the atlas; no step calls the analysis again. ``saeatlas
analyze`` and the ``analyze`` stage of ``saeatlas run`` both come through here;
the causal check (:func:`.causal.ablation.ablate_atlas`) needs the model and is
applied to the finished atlas by them.

Under ``torchrun`` (or any initialised process group) every rank calls
:func:`analyze` with the same arguments and gets the same atlas, the one a single
process computes (:func:`.inputs.analysis_ranks`): the ranks share the encoding
(:func:`.graph.codes.encode_store`) and every set of independent draws (the
ensemble's members, the null draws, the control's), each drawn from a seed
derived from its index, never from the rank; for dictionaries of at least
``config.count_in_parts_from`` latents the draws that build co-occurrence graphs
are computed by all ranks together instead, each graph's pairs counted in parts
(:func:`.graph.communities.graph_items`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from ..store import ActivationStore
from ..train.rows import rows_digest
from .atlas import Atlas
from .config import AtlasConfig
from .describe.feature_map import feature_map
from .describe.geometry import atlas_geometry
from .describe.modules import describe_modules
from .inference.control import control_atlas
from .inference.outcome import decide, match_jaccard
from .inference.sparsity import sparsity_dependence
from .inputs import DEFAULT_TIMEOUT_S, AtlasInputs, SAELike, prepared_on_ranks
from .mapping import core_atlas

log = logging.getLogger(__name__)


def add_fit(atlas: Atlas, inp: AtlasInputs) -> None:
    """``summary["fvu"]``: the fraction of the analysed rows' variance the SAE leaves
    unexplained. An SAE and a store that do not belong together (another model, a store
    captured again from other weights, units in another order) show at 1 or above, a
    reconstruction no better than each unit's mean; the analysis warns then."""
    codes = inp.main.codes
    variance = float((codes.unit_std.astype(np.float64) ** 2).sum() * codes.n_rows)
    residual = codes.residual_sq
    fvu = float(residual.sum() / variance) if residual is not None and variance > 0 else np.nan
    atlas.summary["fvu"] = fvu
    if fvu < 1:
        return
    if inp.sae.cfg.metadata.get("rows_digest") == rows_digest(inp.store):
        # trained on these very rows: "trained on other activations" sent the user to
        # look for another store, where the SAE itself has learnt nothing
        cause = (
            "it was trained on these rows and has not learnt them. Train it again, longer "
            "(--tokens), and check its training's FVU"
        )
    else:
        cause = (
            "it was trained on other activations (another model or store, or units in "
            "another order), and its features do not describe these rows. Give the store "
            "the SAE was trained on"
        )
    log.warning(
        "The SAE reconstructs the analysed rows of '%s' with FVU %.2f, no better than each "
        "unit's mean: %s (atlas.json: fvu).",
        inp.store.path,
        fvu,
        cause,
    )


def add_description(atlas: Atlas, inp: AtlasInputs) -> None:
    """Layer spans and profiles, flows, top examples and label selectivity."""
    cfg, codes = inp.cfg, inp.main.codes
    unit_layer = np.concatenate([np.full(l.n_units, i) for i, l in enumerate(codes.layers)])
    described = describe_modules(
        inp.sae,
        inp.store,
        codes,
        atlas.features["module"].to_numpy(),
        atlas.units["module"].to_numpy(),
        unit_layer,
        label_column=cfg.label_column,
        n_examples=cfg.n_examples,
        seed=cfg.seed,
    )
    for name, values in described.feature_columns.items():
        atlas.features[name] = values
    for name, values in described.module_columns.items():
        atlas.modules[name] = values
    atlas.summary.update(described.summary)
    atlas.examples, atlas.flows = described.examples, described.flows


def add_geometry(atlas: Atlas, inp: AtlasInputs) -> None:
    """Map coordinates of every feature and the geometry-function agreement."""
    cfg = inp.cfg
    xy = feature_map(inp.sae.W_dec.detach(), method=cfg.map_method, random_state=cfg.seed)
    atlas.features["x"], atlas.features["y"] = xy[:, 0], xy[:, 1]
    feature_module = atlas.features["module"].to_numpy()
    if np.unique(feature_module[feature_module >= 0]).size >= 2:
        labels, agreement = atlas_geometry(inp.sae, atlas, random_state=cfg.seed)
        atlas.features["direction_cluster"] = labels
        atlas.summary["geometry"] = agreement.as_dict()
    atlas.summary["map_method"] = cfg.map_method


def add_sparsity_dependence(atlas: Atlas, inp: AtlasInputs) -> None:
    """How the modules change across the sparsity sweep's members (:mod:`.inference.sparsity`)."""
    if inp.sweep:
        atlas.summary["sweep_modules"] = sparsity_dependence(atlas, inp, inp.sweep[1], inp.sweep[0])


def add_control(atlas: Atlas, inp: AtlasInputs) -> None:
    """The random-SAE control as a test: does a random dictionary find the atlas's
    modules too? (:mod:`.inference.control`; the verdict is decided again.)"""
    if not inp.cfg.control:
        return
    summary, control_units = control_atlas(inp, real=atlas)
    atlas.summary["control"] = summary
    if atlas.summary.get("modules_from") == "sae":
        atlas.modules["control_jaccard"] = match_jaccard(
            atlas.units["module"].to_numpy(), control_units
        )
    decide(atlas)


#: The steps after the core atlas, in the order they run.
STEPS: tuple[Callable[[Atlas, AtlasInputs], None], ...] = (
    add_fit,
    add_description,
    add_geometry,
    add_sparsity_dependence,
    add_control,
)


def analyze(
    sae: SAELike,
    store: ActivationStore | str | Path,
    config: AtlasConfig = AtlasConfig(),
    *,
    seed_saes: Sequence[SAELike] = (),
    null_source: SAELike | None = None,
    sweep: tuple[str, Sequence[tuple[float, SAELike]]] | None = None,
    progress: bool = False,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> Atlas:
    """The atlas of ``sae`` on ``store`` with every step ``config`` asks for.

    Args:
        sae: the SAE (a directory, saeatlas or SAELens, or a loaded one).
        store: the activation store (a directory or ``.npy``) it was trained on.
        config: the atlas's settings.
        seed_saes: SAEs trained the same way with other seeds: with ``sae`` the
            atlas's ensemble (each also on ``config.n_bootstrap`` row resamples);
            modules count only when they reproduce across it.
        null_source: the SAE the dictionary null synthesises rows from (default:
            the first of ``seed_saes``, else one trained like ``sae`` with the next
            seed on ``sae``'s own rows, as the CLI trains it, also for a loaded ``sae``;
            see :mod:`.inference.nulls`).
        sweep: ``(setting, [(value, SAE), ...])``, the members of the sparsity sweep
            ``sae`` was chosen from: how the modules change across them.
        progress: show progress bars.
        timeout_s: under ``torchrun``, seconds a rank waits for the others where they
            meet before it stops with an error.
    """

    def run(inp: AtlasInputs) -> Atlas:
        atlas = core_atlas(inp)
        for step in STEPS:
            step(atlas, inp)
        return atlas

    kw = dict(seed_saes=seed_saes, null_source=null_source, sweep=sweep, progress=progress)
    return prepared_on_ranks(run, sae, store, config, timeout_s, **kw)
