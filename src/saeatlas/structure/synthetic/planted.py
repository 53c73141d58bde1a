"""Synthetic activations with a planted modular structure, and a no-structure twin.

Used to validate the atlas (modules of units that fire together, found through
SAE features and their co-occurrence) against a known answer.

Generative model
----------------
*Units.* ``sum(layer_sizes)`` columns, one block per layer (``layer0``, ``layer1``, ...).

*Modules own units.* Each of ``n_modules`` modules spans ``module_layers``
consecutive layers (default: all). With fewer, module ``k`` starts at layer
``k mod (n_layers - module_layers + 1)`` (round-robin) or, when there are fewer
modules than starting layers, at evenly spread layers, so that every layer is
used whenever that is possible. In each layer, ``round(free_unit_fraction * size)``
units stay free (module -1); the rest are shared equally among the modules that
span the layer, at random positions (leftovers from the division are free too).

*Features* (the true sparse dictionary), each a unit-norm direction ``d_f``:

- ``features_per_module`` per module. The main part, a fraction ``1 - leakage`` of
  the squared norm, sits on ``s_k = max(1, round(support_fraction * n_units_k))``
  random units of module ``k``; the leaked part (``leakage``) sits on ``s_k``
  random units outside the module. Entries are Gaussian (their absolute values
  with ``positive_directions``), then normalised. With
  more features than units (32 features over ~30 units by default) the
  dictionary is in superposition.
- ``n_background_features`` owned by no module (module -1), supported on
  ``round(support_fraction * mean n_units_k)`` random units anywhere.

*Firing.* Per row, module ``k`` is active with probability ``module_rate``
(``module_active[row, k]``); with ``n_parents``, only while its parent group of
modules is, itself active with probability ``min(1, 2 * module_rate)``, so that
sibling modules fire together (a coarse level above the modules). A module feature fires with probability ``p_in``
when its module is active and ``p_out`` otherwise, so its marginal density is
``rho = module_rate * p_in + (1 - module_rate) * p_out``. Background features fire
independently with density ``rho``. A firing feature has a magnitude drawn from
``Exp(1)`` (``magnitude="exponential"``, heavy-tailed like SAE latents) or
``|N(1, 0.3)|`` (``"folded_normal"``, every firing clearly visible).

*Activations.* With ``F`` the sparse ``[rows, features]`` magnitude matrix and
``D`` the ``[features, units]`` directions::

    Z = F @ D + dense_strength * sigma * g v^T + noise * sigma * E
    X = (Z + b) * diag(c)            (then max(X, 0) when ``nonnegative``)

``sigma`` is the typical feature-driven unit std: the RMS over units of the std
they would have with independently firing features, which is
``sqrt(Var(F[:, f]) * n_features / n_units)`` since every direction has unit norm
(so it is the same for both twins). ``g ~ N(0, 1)`` per row times fixed positive
loadings ``v_u ~ U(0.5, 1.5)`` is a global mode shared by all units; ``E`` is
standard Gaussian noise; ``b_u ~ N(0, offset * sigma)`` is a per-unit offset; and
``c_u = exp(N(0, unit_scale_spread)) * exp(N(0, layer_scale_spread))[layer(u)]``
gives units and whole layers very different scales, a known trap for methods
that compare raw covariances.

*No structure* (``structured=False``): the same number of features with the same
marginal densities ``rho``, magnitudes, support sizes and leakage split, but
every support is drawn over all units and every feature fires independently;
the dense mode, noise, offsets and scales are the same (identical for the same
seed). There are no modules: ``unit_module`` and ``feature_module`` are all -1
and ``module_active`` has no columns.

Each part draws from its own child of ``numpy.random.default_rng(seed)``, so the
output is a deterministic function of the config.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from ..._validation import check_config_argument
from ...errors import StoreError
from ...store.atomic import atomic_write, atomic_write_json
from .config import PlantedConfig, module_spans

#: Rows assembled at a time (a fixed size, so the random streams do not depend on it).
_BLOCK = 8192


@dataclass(frozen=True)
class PlantedData:
    """Generated activations and their ground truth."""

    X: np.ndarray
    """Activations ``[n_rows, n_units]`` float32."""
    layer_names: tuple[str, ...]
    """``layer0``, ``layer1``, ...: the names of the column blocks."""
    unit_layer: np.ndarray
    """Layer index of each unit, ``[n_units]`` int."""
    unit_module: np.ndarray
    """Module owning each unit, ``[n_units]`` int; -1 for none (all -1 without structure)."""
    feature_module: np.ndarray
    """Module owning each feature, ``[n_features]`` int; -1 for none."""
    directions: np.ndarray
    """Unit-norm feature directions before the unit scales, ``[n_features, n_units]`` float32;
    ``scaled_directions`` gives them in the coordinates of ``X``."""
    firing: sp.csr_matrix
    """Magnitudes of the firing features, ``[n_rows, n_features]`` float32 CSR."""
    module_active: np.ndarray
    """Which modules are active in each row, ``[n_rows, n_modules]`` bool (no columns
    without structure)."""
    unit_scale: np.ndarray
    """Total scale factor ``c`` of each unit (unit times layer factor), ``[n_units]``."""
    unit_offset: np.ndarray
    """Offset ``b`` of each unit before scaling, ``[n_units]``."""
    config: PlantedConfig
    """The config that generated this data."""

    @property
    def n_modules(self) -> int:
        """Planted modules (0 without structure)."""
        return self.module_active.shape[1]

    @property
    def scaled_directions(self) -> np.ndarray:
        """Directions in the coordinates of ``X``: ``directions * unit_scale``, float32."""
        return (self.directions * self.unit_scale[None, :]).astype(np.float32)

    @property
    def feature_density(self) -> np.ndarray:
        """Analytic firing probability of each feature, ``[n_features]`` (all equal)."""
        return np.full(self.directions.shape[0], self.config.density)

    def layer_slices(self) -> list[tuple[str, int, int]]:
        """``(name, start, stop)`` column range of each layer."""
        stops = np.cumsum(self.config.layer_sizes)
        return [
            (n, int(b - s), int(b))
            for n, s, b in zip(self.layer_names, self.config.layer_sizes, stops)
        ]


def make_planted(config: PlantedConfig) -> PlantedData:
    """Generate activations with planted modules (or none, when ``config.structured`` is false).

    Returns ``PlantedData`` with ``X`` of shape ``[n_rows, sum(layer_sizes)]``; see the
    module docstring for the generative model. Deterministic in ``config.seed``.
    """
    check_config_argument("config", config, PlantedConfig)  # a dict: an AttributeError
    cfg = config
    streams = np.random.default_rng(cfg.seed).spawn(6)
    r_layout, r_dirs, r_fire, r_mag, r_dense, r_scale = streams
    unit_layer = np.repeat(np.arange(len(cfg.layer_sizes)), cfg.layer_sizes)
    unit_module = _assign_units(cfg, r_layout)
    directions, feature_module = _directions(cfg, unit_module, r_dirs)
    if cfg.structured:
        module_active = _module_activity(cfg, r_fire)
        rows, cols = _structured_firing(cfg, module_active, r_fire)
    else:
        module_active = np.zeros((cfg.n_rows, 0), dtype=bool)
        rows, cols = _grid_bernoulli(r_fire, np.arange(cfg.n_rows), cfg.n_features, cfg.density)
        unit_module = np.full_like(unit_module, -1)
        feature_module = np.full_like(feature_module, -1)
    mags = _magnitudes(cfg.magnitude, len(rows), r_mag)
    firing = sp.csr_matrix((mags, (rows, cols)), shape=(cfg.n_rows, cfg.n_features))

    # sigma: the RMS unit std if features fired independently. Directions have unit
    # norm, so it does not depend on where they sit and is the same for both twins.
    m1, m2 = (1.0, 2.0) if cfg.magnitude == "exponential" else (1.0, 1.09)
    var_f = cfg.density * m2 - (cfg.density * m1) ** 2
    sigma = float(np.sqrt(var_f * cfg.n_features / cfg.n_units))

    loadings = r_dense.uniform(0.5, 1.5, cfg.n_units).astype(np.float32)
    unit_offset = r_scale.normal(0.0, cfg.offset * sigma, cfg.n_units)
    layer_factor = np.exp(r_scale.normal(0.0, cfg.layer_scale_spread, len(cfg.layer_sizes)))
    unit_scale = np.exp(r_scale.normal(0.0, cfg.unit_scale_spread, cfg.n_units))
    unit_scale = unit_scale * layer_factor[unit_layer]
    X = np.empty((cfg.n_rows, cfg.n_units), dtype=np.float32)
    # Assemble in row blocks so the temporaries stay small (and in cache).
    dense = (cfg.dense_strength * sigma * loadings).astype(np.float32)
    offset, scale = unit_offset.astype(np.float32), unit_scale.astype(np.float32)
    for a in range(0, cfg.n_rows, _BLOCK):
        b = min(a + _BLOCK, cfg.n_rows)
        z = np.asarray(firing[a:b] @ directions, dtype=np.float32)
        z += np.multiply.outer(r_dense.standard_normal(b - a, dtype=np.float32), dense)
        if cfg.noise > 0:
            noise = r_dense.standard_normal(z.shape, dtype=np.float32)
            noise *= np.float32(cfg.noise * sigma)
            z += noise
        z += offset
        z *= scale
        if cfg.nonnegative:
            np.maximum(z, 0, out=z)
        X[a:b] = z
    return PlantedData(
        X=X,
        layer_names=tuple(f"layer{i}" for i in range(len(cfg.layer_sizes))),
        unit_layer=unit_layer,
        unit_module=unit_module,
        feature_module=feature_module,
        directions=directions,
        firing=firing,
        module_active=module_active,
        unit_scale=unit_scale,
        unit_offset=unit_offset,
        config=cfg,
    )


def module_parents(config: PlantedConfig) -> np.ndarray:
    """``[n_modules]`` the parent of each module (consecutive ids in as equal groups as
    possible; all -1 without ``n_parents``)."""
    if config.n_parents == 0:
        return np.full(config.n_modules, -1)
    return np.arange(config.n_modules) * config.n_parents // config.n_modules


def _module_activity(cfg: PlantedConfig, rng: np.random.Generator) -> np.ndarray:
    """``[n_rows, n_modules]`` which modules are active in each row: each with
    probability ``module_rate``, independently, or, with parents, while its parent is."""
    if cfg.n_parents == 0:
        return rng.random((cfg.n_rows, cfg.n_modules)) < cfg.module_rate
    parent_rate = min(1.0, 2 * cfg.module_rate)
    parent_active = rng.random((cfg.n_rows, cfg.n_parents)) < parent_rate
    child = rng.random((cfg.n_rows, cfg.n_modules)) < cfg.module_rate / parent_rate
    return child & parent_active[:, module_parents(cfg)]


def _assign_units(cfg: PlantedConfig, rng: np.random.Generator) -> np.ndarray:
    """Module of each unit ``[n_units]`` (-1 free), equal shares at random positions per layer."""
    spans = module_spans(cfg)
    out, start = np.full(cfg.n_units, -1, dtype=np.int64), 0
    for layer, size in enumerate(cfg.layer_sizes):
        here = [k for k, span in enumerate(spans) if layer in span]
        perm = start + rng.permutation(size)
        if here:
            share = (size - round(cfg.free_unit_fraction * size)) // len(here)
            for j, k in enumerate(here):
                out[perm[j * share : (j + 1) * share]] = k
        start += size
    return out


def _directions(
    cfg: PlantedConfig, unit_module: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Unit-norm directions ``[n_features, n_units]`` float32 and feature modules ``[n_features]``.

    Without structure each feature keeps the support sizes and norm split of its
    structured twin, but its supports are drawn over all units.
    """
    n_units = cfg.n_units
    all_units = np.arange(n_units)
    module_units = [np.flatnonzero(unit_module == k) for k in range(cfg.n_modules)]
    sizes = np.array([len(u) for u in module_units])
    feature_module = np.concatenate(
        [
            np.repeat(np.arange(cfg.n_modules), cfg.features_per_module),
            np.full(cfg.n_background_features, -1),
        ]
    )
    bg_support = max(1, round(cfg.support_fraction * sizes.mean()))
    D = np.zeros((cfg.n_features, n_units), dtype=np.float64)
    for f, k in enumerate(feature_module):
        if k < 0:  # background: one unit-norm part anywhere
            _place(D[f], rng, all_units, bg_support, 1.0, cfg.positive_directions)
            continue
        s = max(1, round(cfg.support_fraction * sizes[k]))
        home = module_units[k] if cfg.structured else all_units
        # Leak outside the module (structured) or outside the main part (no structure).
        n_outside = n_units - (len(home) if cfg.structured else s)
        leak = cfg.leakage if n_outside > 0 else 0.0
        main = _place(D[f], rng, home, s, 1.0 - leak, cfg.positive_directions)
        if leak > 0:
            outside = np.setdiff1d(all_units, home if cfg.structured else main)
            _place(D[f], rng, outside, s, leak, cfg.positive_directions)
    return D.astype(np.float32), feature_module


def _place(
    row: np.ndarray,
    rng: np.random.Generator,
    pool: np.ndarray,
    size: int,
    weight: float,
    positive: bool = False,
) -> np.ndarray:
    """Put Gaussian entries (``positive``: their absolute values) of squared norm ``weight``
    on ``size`` random units of ``pool``."""
    units = rng.choice(pool, size=min(size, len(pool)), replace=False)
    w = rng.standard_normal(len(units))
    w = np.abs(w) if positive else w
    row[units] = w * np.sqrt(weight) / np.linalg.norm(w)
    return units


def _grid_bernoulli(
    rng: np.random.Generator, rows: np.ndarray, n_cols: int, p: float
) -> tuple[np.ndarray, np.ndarray]:
    """Cells of a ``[len(rows), n_cols]`` grid that are 1 under independent Bernoulli(p).

    Samples the gaps between successes (geometric), so the cost is proportional to
    the number of successes, not of cells. Returns (row ids from ``rows``, column ids).
    """
    n_cells = len(rows) * n_cols
    if p <= 0 or n_cells == 0:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    if p >= 1:
        pos = np.arange(n_cells)
    else:
        chunks, last = [], -1
        while last < n_cells:
            expected = (n_cells - last) * p
            gaps = rng.geometric(p, size=int(expected + 6 * np.sqrt(expected) + 16))
            pos = last + np.cumsum(gaps)
            chunks.append(pos)
            last = int(pos[-1])
        pos = np.concatenate(chunks)
        pos = pos[pos < n_cells]
    return rows[pos // n_cols], pos % n_cols


def _structured_firing(
    cfg: PlantedConfig, module_active: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """(row, feature) of every firing: module features by their module's state, background iid."""
    all_rows, parts = np.arange(cfg.n_rows), []
    for k in range(cfg.n_modules):
        first = k * cfg.features_per_module
        for rows, p in (
            (all_rows[module_active[:, k]], cfg.p_in),
            (all_rows[~module_active[:, k]], cfg.p_out),
        ):
            r, c = _grid_bernoulli(rng, rows, cfg.features_per_module, p)
            parts.append((r, c + first))
    r, c = _grid_bernoulli(rng, all_rows, cfg.n_background_features, cfg.density)
    parts.append((r, c + cfg.n_modules * cfg.features_per_module))
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def _magnitudes(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    if kind == "exponential":
        return rng.standard_exponential(n, dtype=np.float32)
    return np.abs(rng.normal(1.0, 0.3, n)).astype(np.float32)


def save_planted(data: PlantedData, path: str | Path) -> Path:
    """Write ``data`` as an activation store that ``ActivationStore.open`` reads.

    ``path`` is a ``.npy`` file to write, or a directory (created) that receives
    ``activations.npy``. Beside the array go ``<stem>.layers.json`` (the layer
    column ranges the store reads) and ``<stem>.planted_truth.json`` (unit and
    feature modules, unit layers, scales and the config, from which
    ``make_planted(PlantedConfig.from_json(truth["config"]))`` regenerates
    everything). Every file is written atomically.

    Returns the path of the ``.npy`` file, to pass to ``ActivationStore.open``.
    """
    path = Path(path)
    npy = path if path.suffix == ".npy" else path / "activations.npy"

    def write_array(tmp: Path) -> None:
        with open(tmp, "wb") as f:  # a file object: np.save would append .npy to a name
            np.save(f, np.ascontiguousarray(data.X, dtype=np.float32))

    atomic_write(npy, write_array)
    layers = [
        {"name": n, "start": a, "stop": b, "shape": [None, b - a], "layout": "sample"}
        for n, a, b in data.layer_slices()
    ]
    atomic_write_json(npy.with_name(npy.stem + ".layers.json"), layers)
    truth = {
        "kind": "saeatlas.planted",
        "version": 1,
        "structured": data.config.structured,
        "n_modules": data.n_modules,
        "layer_names": list(data.layer_names),
        "unit_layer": data.unit_layer.tolist(),
        "unit_module": data.unit_module.tolist(),
        "feature_module": data.feature_module.tolist(),
        "module_parent": module_parents(data.config).tolist() if data.n_modules else [],
        "unit_scale": data.unit_scale.tolist(),
        "unit_offset": data.unit_offset.tolist(),
        "feature_density": data.config.density,
        "config": data.config.to_json(),
    }
    atomic_write_json(npy.with_name(npy.stem + ".planted_truth.json"), truth)
    return npy


def read_planted_truth(npy: str | Path) -> dict[str, Any]:
    """The ``<stem>.planted_truth.json`` written beside ``npy`` by :func:`save_planted`."""
    path = Path(npy).with_name(Path(npy).stem + ".planted_truth.json")
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as e:
        raise StoreError(f"No planted ground truth at '{path}'; write it with save_planted.") from e


__all__ = ["PlantedData", "make_planted", "read_planted_truth", "save_planted"]
