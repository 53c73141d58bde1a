"""The random-SAE control: what does the trained SAE add over a random dictionary?

In the spirit of sanity checks for SAEs, the atlas is run again with a random
dictionary of the same shape and scale in place of the trained one. A random
dictionary still reflects the data (its codes are random projections of the
activations, so strongly correlated units still co-drive some latents), so a
control atlas with some structure is expected; what the trained SAE adds is
the difference.

- :func:`random_sae`: the SAE's architecture, shapes, biases and norms with
  random directions.
- :func:`control_atlas`: the core atlas (:func:`..mapping.core_atlas`) of the
  random SAE on the same rows, summarised beside the real atlas. (The
  code-level control, each feature's activations moved to random rows, is the
  atlas's ``permutation`` null.)
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import torch
from sklearn.metrics import adjusted_mutual_info_score

from ..._linalg import unit_rows
from ...sae import SparseAutoencoder
from ...sae.model import sae_layers
from ...store import ActivationStore
from ...train.init import unit_varies
from ..atlas import Atlas
from ..inputs import AtlasInputs, prepare
from ..mapping import core_atlas
from .partitions import partition_ari
from .significance import strictness


@torch.no_grad()
def random_sae(
    sae: SparseAutoencoder,
    *,
    unit_scale: np.ndarray | None = None,
    random_state: int | None = 0,
) -> SparseAutoencoder:
    """A copy of ``sae`` whose directions are random, everything else kept.

    With ``g_i ~ N(0, I)`` per latent and ``s = unit_scale`` (ones by default):

    - decoder row ``i``: ``g_i * s``, scaled to the norm of the original row ``i``;
    - encoder column ``i``: ``g_i / s``, scaled to the norm of the original column ``i``.

    That is an SAE at initialisation (decoder rows random unit directions, the
    encoder their transpose; Gao et al. 2024) in the coordinates ``x / s``, folded
    back into store space like a trained SAE's input normalisation, with the
    trained SAE's per-latent norms. Pass the units' standard deviations as
    ``unit_scale`` for an SAE trained with ``normalize="unit"`` (the default):
    otherwise the random directions ignore the units' scales and the
    pre-activations follow the largest units. ``b_dec`` is kept (it centres the
    input); ``b_enc`` is zeroed (it was learned for the trained encoder);
    thresholds (JumpReLU, BatchTopK) are kept. TopK SAEs keep their sparsity
    exactly (k latents per row); for ReLU, JumpReLU and BatchTopK the random
    code's sparsity differs from the trained one's.
    """
    d_sae, d_in = sae.cfg.d_sae, sae.cfg.d_in
    s = np.ones(d_in) if unit_scale is None else np.asarray(unit_scale, dtype=np.float64)
    if s.shape != (d_in,) or not np.all(np.isfinite(s)) or np.any(s <= 0):
        raise ValueError(
            f"`unit_scale` must hold {d_in} positive finite numbers (one per unit), "
            f"got shape {s.shape}."
        )
    gen = torch.Generator().manual_seed(0 if random_state is None else int(random_state))
    g = torch.randn(d_sae, d_in, generator=gen, dtype=torch.float64)
    s = torch.from_numpy(s)
    dec = unit_rows(g * s) * sae.W_dec.detach().double().cpu().norm(dim=1, keepdim=True)
    enc = unit_rows(g / s) * sae.W_enc.detach().double().cpu().norm(dim=0)[:, None]
    meta = {
        "control": {
            "kind": "random_directions",
            "random_state": random_state,
            "scaled_units": unit_scale is not None,
        }
    }
    out = SparseAutoencoder(replace(sae.cfg, metadata=meta))
    out.load_state_dict({k: v.detach().cpu() for k, v in sae.state_dict().items()})
    out.W_dec.copy_(dec.to(out.W_dec.dtype))
    out.W_enc.copy_(enc.t().to(out.W_enc.dtype))
    out.b_enc.zero_()
    return out.to(sae.W_dec.device).eval()


def control_atlas(
    inp: AtlasInputs,
    *,
    real: Atlas | None = None,
    scale_units: bool = True,
    random_state: int | None = 0,
) -> tuple[dict[str, Any], np.ndarray]:
    """The core atlas of :func:`random_sae` in place of ``inp.sae``: a compact summary
    and its unit modules ``[n_units]``.

    Args:
        inp: the real atlas's prepared inputs (:func:`..inputs.prepare`); the control
            is encoded on the same rows and judged against the same units' mode,
            with the same settings except that its dictionary null is sourced from
            itself (no seed SAE is trained like a random dictionary); its ensemble
            has as many random dictionaries (seeds ``random_state``, +1, ...) as the
            real one has SAEs.
        real: the real atlas; when given, its figures and the agreement of its unit
            modules with the control's (ARI, AMI over all units, -1 counted as a
            group) are added.
        scale_units: draw the random directions isotropic in standardised units
            (``unit_scale`` = the store's unit std), as the trainer's default
            ``normalize="unit"`` sees them; false: isotropic in store space.
        random_state: seed of the random dictionary.

    Returns:
        ``(summary, unit modules)``; the summary holds ``kind``, ``scaled_units``,
        ``n_modules``, ``n_significant_modules``, ``significant``, ``verdict``,
        ``modularity``, ``z`` and ``p`` per null, and with ``real``: ``real`` (the
        same figures) and ``unit_ari``, ``unit_ami``.

    A random dictionary still reflects the data: random projections of rows in
    which groups of units switch on together co-fire too, so the control can show
    significant co-firing communities; what the trained SAE adds shows in the
    modularity and in the units.
    """
    sae, store = inp.sae, inp.store
    scale = _unit_std(sae, store) if scale_units else None
    base = 0 if random_state is None else int(random_state)
    control, *twins = (
        random_sae(sae, unit_scale=scale, random_state=base + i)
        for i in range(1 + len(inp.seed_saes))
    )
    # an ensemble of random dictionaries as large as the real one, so that the
    # control's modules meet the same reproducibility test
    ctl_inp = prepare(
        control,
        store,
        replace(inp.cfg, null_dictionary="self"),
        seed_saes=twins,
        mode=inp.mode,
        progress=inp.progress,
        coord=inp.coord,
    )
    atlas = core_atlas(ctl_inp)
    out: dict[str, Any] = {"kind": "random_directions", "scaled_units": scale_units}
    out.update(control_figures(atlas, own=True))
    control_units = atlas.units["sae_module"].to_numpy()
    if real is not None:
        # the trained SAE's own modules beside the random ones': where the atlas reports
        # the units' correlations, the page set their 3 modules (the control shares that
        # view, so its own would be the same) against the random SAE's 0
        out["real"] = control_figures(real, own=True)
        own = "sae_module" if real.summary.get("modules_from") == "unit_correlations" else "module"
        a = real.units[own].to_numpy()
        # over the units in a module of either (NaN when neither has one): the units in
        # neither once made two atlases without modules agree perfectly (ARI 1.00)
        out["unit_ari"] = partition_ari(a, control_units)
        out["unit_ami"] = partition_ari(a, control_units, adjusted_mutual_info_score)
    return out, control_units


def _unit_std(sae: SparseAutoencoder, store: ActivationStore) -> np.ndarray:
    """``[d_in]`` std of the units the SAE reads; constant units get 1 (as in training)."""
    cols = np.concatenate([np.arange(l.start, l.stop) for l in sae_layers(sae, store)])
    mean = np.asarray(store.mean, dtype=np.float64)[cols]
    std = np.asarray(store.std, dtype=np.float64)[cols]
    # the training's rule: an absolute floor took every unit of a store of 1e-30 for a
    # constant one, so the random dictionaries ignored the units' scales
    return np.where(unit_varies(mean, std), std, 1.0)


def control_figures(atlas: Atlas, own: bool = False) -> dict[str, Any]:
    """The atlas's counts and tests; ``own``: those of its dictionaries' own modules
    (``summary["sae_modules"]``), which differ from the reported ones where the atlas
    reports the units' plain correlations first: the control is about the random
    dictionaries, not about the correlations."""
    s = atlas.summary
    out = {
        "n_modules": atlas.n_modules,
        "n_significant_modules": atlas.n_significant_modules,
        "significant": bool(s.get("significant", False)),
        "modularity": s.get("modularity"),
        "z": {n["null"]: n["z"] for n in s.get("nulls", [])},
        "p": {n["null"]: n["p"] for n in s.get("nulls", [])},
        "verdict": s.get("verdict"),
    }
    sae = s.get("sae_modules") or {}
    if own and s.get("modules_from") == "unit_correlations" and "nulls" in sae:
        nulls = sae["nulls"]
        worst = max(nulls, key=lambda n: strictness(n["p"], n["z"]), default=None)
        n_sig = sae["n_significant_modules"]
        # the atlas's verdict is the correlations' ("visible without the SAE"), which the
        # control table showed beside 0 modules: say what the dictionaries' own show
        if n_sig:  # they lie inside the correlation modules (`modules_from`)
            verdict = "modules_visible_without_sae"
        elif s.get("sae_partition_significant"):
            verdict = "structure_without_reproducible_modules"
        else:
            verdict = "no_significant_structure"
        out.update(
            n_modules=sae["n_modules"],
            n_significant_modules=n_sig,
            significant=n_sig > 0,
            modularity=worst["modularity"] if worst else None,
            z={n["null"]: n["z"] for n in nulls},
            p={n["null"]: n["p"] for n in nulls},
            verdict=verdict,
        )
    return out
