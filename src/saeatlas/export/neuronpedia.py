"""Neuronpedia batch-upload files from an atlas.

The layout is the one SAEDashboard's Neuronpedia runner writes (read from
``sae_dashboard/neuronpedia/neuronpedia_runner.py`` and
``neuronpedia_dashboard.py``)::

    OUT/run_settings.json       how the files were made
    OUT/skipped_indexes.json    features that never fire (Neuronpedia marks them dead)
    OUT/batch-<i>.json          {"model_id", "layer", "sae_set", "features": [...]}

Each feature carries its top activations with their token contexts (the rows of
the same sample around the top row, and the feature's activation on each),
the histogram of its non-zero activations, its firing fraction, the units its
decoder writes most (``neuron_alignment_*``), and its correlated features: the
features it co-fires with most (Pearson correlation of activations over the
store's rows), taken from its own atlas module when it is in one. With a model
that has an unembedding and an SAE of one residual-stream layer (as wide as the
model, not of per-head values), the
feature's direct logit effect ``W_dec[f] @ W_U`` gives the top positive and
negative tokens and their histogram (as SAEDashboard does, without the final
layer norm); otherwise those fields are empty lists.

Two passes over the store encode every row; the co-firing statistics hold the rows'
codes as a sparse matrix (their non-zero activations) and compute the features'
correlations a block of at most :data:`.neuronpedia_activations.GRAM_BLOCK` values at a
time, never the ``[d_sae, d_sae]`` matrix (17 GB in float32 at 65,536 latents). The passes and the
contexts are in :mod:`.neuronpedia_activations`, the logits in
:mod:`.neuronpedia_logits`, the files' schema in :mod:`.neuronpedia_schema`, their names
(and which folder is an earlier export, replaced by the next) in :mod:`.neuronpedia_files`.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from .. import __version__
from .._validation import check_path_argument, check_types, in_range
from ..capture.texts import check_tokenizer
from ..errors import ConfigError
from ..sae import SparseAutoencoder
from ..sae.model import sae_layers
from ..store import ActivationStore
from ..store.atomic import (
    atomic_write_json,
    check_output_dir,
    recover_dir,
    replacing_dir,
    resolve,
)
from ..store.describe import model_name
from ..store.lock import output_lock
from ..structure import Atlas
from ..structure.arguments import check_sae_argument, check_store_argument
from ..structure.causal.ablation_inputs import check_captured_model
from ..structure.fingerprints import check_made_from
from .neuronpedia_activations import Contexts, FeatureStats, encode, histograms
from .neuronpedia_files import BATCH_FILE, SETTINGS, SKIPPED, check_not_theirs, read_batches
from .neuronpedia_logits import logit_effects
from .neuronpedia_schema import BATCH_SCHEMA, rounded

__all__ = ["BATCH_SCHEMA", "NeuronpediaConfig", "export_neuronpedia", "read_batches"]

#: Settings that ``export-neuronpedia`` sets by a flag of their name.
_FLAGGED = ("features_per_batch", "n_examples")
#: The largest ``layer`` written (nine digits): no model is that deep.
MAX_LAYER = 999_999_999
#: The most bars of a histogram: every feature's entry holds two per bar and histogram
#: (SAEDashboard draws tens), so 10**5 wrote 80 MB for 32 features and 10**10 ended in
#: torch's allocation error.
MAX_BINS = 1000


@dataclass(frozen=True)
class NeuronpediaConfig:
    """What ``export-neuronpedia`` writes."""

    sae_set: str = "saeatlas"
    """Neuronpedia's name for the SAE set (``sae_set`` of every batch)."""
    features_per_batch: int = 128
    """Features per ``batch-<i>.json``."""
    n_examples: int = 20
    """Top activations kept per feature."""
    context: int = 32
    """Rows of the same sample shown around a top activation (tokens before and after)."""
    n_bins: int = 40
    """Bars of the activation and logit histograms."""
    n_correlated: int = 3
    """Correlated features (and units, and top logits: 10) listed per feature."""
    batch_size: int = 4096
    """Rows encoded at a time."""
    layer: int | None = None
    """Neuronpedia's layer number (``layer`` of every batch); None takes the block index in
    the name of the layer the SAE reads (``blocks.3.hook_resid_post`` -> 3), and refuses
    a name that has none or several."""

    def __post_init__(self) -> None:
        if not isinstance(self.sae_set, str) or not self.sae_set.strip():
            # every batch would name no SAE set, which Neuronpedia's upload refuses
            raise ConfigError(f"`sae_set` (--sae-set) must name the SAE set, got {self.sae_set!r}.")
        # a layer of 10 digits or more is no model's (and past 2**63 not an integer Neuronpedia
        # reads); the number taken from a layer's name is bounded the same way
        if self.layer is not None and (
            isinstance(self.layer, bool)
            or not isinstance(self.layer, int)
            or not 0 <= self.layer <= MAX_LAYER
        ):
            raise ConfigError(
                f"`layer` (--layer) must be a whole number from 0 to {MAX_LAYER:,}, got "
                f"{self.layer!r}."
            )
        # n_examples "5" or None ended in a TypeError, and 2.5, NaN and True were taken
        check_types(self)
        for name in ("features_per_batch", "n_examples", "context", "n_bins", "n_correlated"):
            # named by the flag that sets it too: `--n-examples 0` was told of `n_examples`
            flag = f"--{name.replace('_', '-')}" if name in _FLAGGED else None
            in_range(name, getattr(self, name), 0, open_low=True, flag=flag)
        in_range("batch_size", self.batch_size, 0, open_low=True)
        in_range("n_bins", self.n_bins, 1, MAX_BINS)
        try:  # bytes that are not UTF-8 on the command line arrive as lone surrogates
            self.sae_set.encode("utf-8")
        except UnicodeEncodeError as e:
            raise ConfigError(
                f"`sae_set` (--sae-set) {self.sae_set!r} is not Unicode text ({e.reason}), "
                "which every batch file names; give a name in UTF-8."
            ) from e


def export_neuronpedia(
    atlas_dir: str | Path,
    out: str | Path,
    *,
    sae: str | Path | SparseAutoencoder | None = None,
    store: str | Path | ActivationStore | None = None,
    model: Any = None,
    tokenizer: Any = None,
    config: NeuronpediaConfig = NeuronpediaConfig(),
) -> list[Path]:
    """Write the Neuronpedia batch-upload files of the atlas at ``atlas_dir`` to ``out``.

    ``sae`` and ``store`` default to the ones the atlas was made from (its
    ``atlas.json``). ``model`` (with an unembedding) adds each feature's top logits.
    Returns the ``batch-<i>.json`` paths.
    """
    # before the work: a dict as the config ended in an AttributeError, and the class
    # NeuronpediaConfig itself in a TypeError after the whole export
    if not isinstance(config, NeuronpediaConfig):
        got = "the class itself" if config is NeuronpediaConfig else type(config).__name__
        raise ConfigError(
            f"`config` must be a NeuronpediaConfig, got {got}: pass NeuronpediaConfig(...) "
            "(or NeuronpediaConfig(**settings) for a dict)."
        )
    check_sae_argument("sae", sae, optional=True)
    check_tokenizer(tokenizer)  # a name ("gpt2") ended the export in an AttributeError
    if store is not None:
        check_store_argument(store)
    check_path_argument("out", out)  # None ended in pathlib's TypeError
    out = Path(out)
    with output_lock(out):  # one writer, for the whole export
        recover_dir(out)  # what a killed swap left is checked like what is there
        check_not_theirs(out)
        check_output_dir(  # before the work: an output that cannot be written fails at once
            out,
            "a Neuronpedia export",
            "a Neuronpedia export's",
            SETTINGS,
            # a file or folder that only starts with "batch-" (a `batch-0.json.orig` kept
            # by hand) is no batch: the export that replaced the folder deleted it
            lambda p: p.name in (SETTINGS, SKIPPED) or BATCH_FILE.fullmatch(p.name) is not None,
            True,  # an earlier export is replaced whole, never a directory holding anything else
        )
        return _export(atlas_dir, out, sae, store, model, tokenizer, config)


def _export(
    atlas_dir: str | Path,
    out: Path,
    sae: str | Path | SparseAutoencoder | None,
    store: str | Path | ActivationStore | None,
    model: Any,
    tokenizer: Any,
    config: NeuronpediaConfig,
) -> list[Path]:
    """:func:`export_neuronpedia` once ``out`` is locked and checked."""
    atlas = Atlas.load(atlas_dir)
    sae = _open_sae(sae, atlas)
    store = _open_store(store, atlas)
    check_made_from(atlas.summary, sae, store)
    # the store layers the SAE reads (by its layer map, or a SAELens SAE's hook name),
    # their widths checked: as the analysis read them
    specs = sae_layers(sae, store)
    # a model without an unembedding, or not the store's (another network's logits),
    # is refused before the passes over the rows, not after them
    logits = logit_effects(sae, model, tokenizer, config.n_bins, specs)
    if model is not None:
        check_captured_model(model, store)
    read = [l.name for l in specs]
    layers = read
    layer = _layer_number(read[0], config.layer)
    if len(read) > 1:  # Neuronpedia's layout has one layer per SAE
        warnings.warn(
            f"The SAE reads {len(read)} layers ({read[:4]}); each batch names the first's "
            f"number as its `layer` ({layer}), and `neuron_alignment_indices` "
            "are the atlas's unit numbers over all of them (units.parquet), not units of one "
            "layer. Export an SAE of one layer for Neuronpedia's per-layer pages.",
            stacklevel=3,
        )
    d_sae = sae.cfg.d_sae
    # no feature has more top rows than the store has rows: --n-examples 1000000000 asked
    # for 128 GB and ended in "Out of memory" advising flags this command has not
    stats = FeatureStats(d_sae, max(1, min(config.n_examples, store.n_rows)))
    row = 0
    for x in store.iter_batches(config.batch_size, shuffle=False, layers=layers):
        stats.add(encode(sae, x), row)
        row += x.shape[0]
    hist = histograms(sae, store, layers, stats.max, config.n_bins, config.batch_size)
    w_dec = sae.W_dec.detach().float().cpu()
    unit_dirs = w_dec / w_dec.norm(dim=1, keepdim=True).clamp_min(1e-12)
    # its co-firing features within its module (every feature when it has no company)
    correlated = stats.correlated(_feature_modules(atlas, d_sae), config.n_correlated)
    meta = store.rows().to_pandas()
    contexts = Contexts(sae, store, layers, meta, config.context)
    provenance = dict(store.manifest.provenance) if store.manifest is not None else {}
    n_samples = int(meta["sample"].max()) + 1 if len(meta) else 0
    n_tokens = int(meta["position"].max()) + 1 if len(meta) else 0
    dataset = provenance.get("inputs", "")
    frac = (stats.fired / max(stats.n_rows, 1)).float()

    features, skipped = [], []
    for f in range(d_sae):
        if stats.fired[f] == 0:
            skipped.append(f)
            continue
        order, pearson = correlated[f]
        dec = w_dec[f]
        top_units = dec.abs().argsort(descending=True)[: config.n_correlated * 3]
        top_units = top_units[dec[top_units] != 0]  # a unit it does not write is no alignment
        feature = {
            "feature_index": f,
            "neuron_alignment_indices": top_units.tolist(),
            "neuron_alignment_values": rounded(dec[top_units]),
            "neuron_alignment_l1": rounded(dec[top_units] / dec.abs().sum().clamp_min(1e-12)),
            "correlated_neurons_indices": [],
            "correlated_neurons_l1": [],
            "correlated_neurons_pearson": [],
            "correlated_features_indices": order.tolist(),
            "correlated_features_l1": rounded(unit_dirs[torch.from_numpy(order)] @ unit_dirs[f]),
            "correlated_features_pearson": rounded(pearson),
            "frac_nonzero": round(float(frac[f]), 6),
            "freq_hist_data_bar_values": rounded(hist["centres"][f]),
            "freq_hist_data_bar_heights": rounded(hist["counts"][f]),
            "n_prompts_total": n_samples,
            "n_tokens_in_prompt": n_tokens,
            "dataset": str(dataset),
            "decoder_weights_dist": [],
            "activations": contexts.examples(f, stats.top_rows[:, f], stats.top_values[:, f]),
            **logits.feature(f),
        }
        features.append(feature)

    with replacing_dir(out) as new:
        return _write_batches(
            features, new, out, provenance, layer, layers, config, skipped, atlas_dir, d_sae, store
        )


def _write_batches(
    features, new, out, provenance, layer, layers, config, skipped, atlas_dir, d_sae, store
):
    """The batch files, skipped indexes and run settings, into ``new`` (named under ``out``)."""
    model_id = model_name(provenance) or "model"
    written = []
    step = config.features_per_batch
    for i, s in enumerate(range(0, len(features), step)):
        batch = {
            "model_id": model_id,
            "layer": layer,
            "sae_set": config.sae_set,
            "features": features[s : s + step],
        }
        atomic_write_json(new / f"batch-{i}.json", batch)
        written.append(out / f"batch-{i}.json")
    atomic_write_json(
        new / SKIPPED,
        {
            "model_id": model_id,
            "layer": str(layer),
            "sae_set": config.sae_set,
            "skipped_indexes": skipped,
        },
    )
    atomic_write_json(
        new / SETTINGS,
        {
            **asdict(config),
            "atlas": str(atlas_dir),
            "sae_d_sae": d_sae,
            "store": str(store.path),
            "layers": layers or [l.name for l in store.layers],
            "exported_by": f"saeatlas {__version__}",
        },
    )
    return written


def _open_sae(sae: Any, atlas: Atlas) -> SparseAutoencoder:
    """``sae``, or the SAE the atlas names; either must have the sizes the atlas records
    (its features are that SAE's latents)."""
    made = atlas.summary.get("sae")
    made = made if isinstance(made, dict) else {}
    if isinstance(sae, SparseAutoencoder):
        sae, path = sae.eval(), "the given SAE"
    else:
        path = sae if sae is not None else made.get("path")
        if path is None:
            raise ConfigError(
                "The atlas does not say which SAE it was made from; give it with --sae."
            )
        resolve(path)  # a loop of symbolic links is named, not reported missing
        if sae is None and not Path(path).exists():  # moved or deleted since the analysis
            raise ConfigError(
                f"The atlas's SAE '{path}' is not there; give the SAE the atlas was made "
                "from with --sae."
            )
        sae = SparseAutoencoder.load(path)
    have = {"d_in": sae.cfg.d_in, "d_sae": sae.cfg.d_sae}
    if any(made.get(key, value) != value for key, value in have.items()):
        raise ConfigError(
            f"The atlas was made from an SAE of d_in {made.get('d_in')} and d_sae "
            f"{made.get('d_sae')}, but {path} has {have['d_in']} and {have['d_sae']}. Give the "
            "SAE the atlas was made from with --sae."
        )
    return sae


def _open_store(store: Any, atlas: Atlas) -> ActivationStore:
    if isinstance(store, ActivationStore):
        return store
    path = store if store is not None else atlas.summary.get("store")
    if path is not None:
        resolve(path)  # a loop of symbolic links is named, not reported missing
    if path is None or not Path(path).exists():
        raise ConfigError(
            f"The atlas's store {path!r} is not there; give the store the SAE read with --acts."
        )
    # an atlas of a .npy whose NaN/Inf rows analyze left out reads the rows it was made of
    skipped = atlas.summary.get("store_skipped_rows")
    return ActivationStore.open(path, on_nonfinite="skip" if skipped else "error")


def _layer_number(name: str, given: int | None) -> int:
    """``given``, else the block index in the hook ``name``: its one part that is a whole
    number (``blocks.3.hook_resid_post`` -> 3, ``blocks.0.ln2`` -> 0). A name without
    one (``relu``, ``encoder.l2norm``), with several (``layers.3.experts.7``) or with a
    number in a part before it (``layer4.1.conv2``) is refused: the digits of a module's
    own name are not the model's layer, and Neuronpedia would file the features there."""
    if given is not None:
        return given
    parts = name.split(":")[0].split(".")  # an `:input` suffix is no part of the path
    indices = [p for p in parts if re.fullmatch(r"[0-9]+", p)]
    first = parts.index(indices[0]) if indices else len(parts)
    numbered = [p for p in parts[:first] if re.search(r"[0-9]", p)]
    if len(indices) != 1 or numbered or len(indices[0]) > len(str(MAX_LAYER)):
        why = (
            f"several block indices ({', '.join(indices[:4])})"
            if len(indices) > 1
            else f"a number in '{numbered[0][:40]}' before its block index"
            if numbered and indices
            else f"a block index past {MAX_LAYER:,}"
            if indices
            else "no block index (a part such as `blocks.3`)"
        )
        raise ConfigError(
            f"The layer '{name[:80]}' has {why} in its name, so Neuronpedia's `layer` "
            "cannot be told from it; give the layer's number in the model with --layer."
        )
    return int(indices[0])


def _feature_modules(atlas: Atlas, d_sae: int) -> torch.Tensor:
    """``[d_sae]`` each feature's atlas module (-1 for none)."""
    module = torch.full((d_sae,), -1, dtype=torch.long)
    if len(atlas.features) and "module" in atlas.features:
        idx = torch.tensor(atlas.features["feature"].to_numpy(), dtype=torch.long)
        if not bool(((idx >= 0) & (idx < d_sae)).all()):
            raise ConfigError(
                f"The atlas lists features up to {int(idx.max())}, but the SAE has {d_sae}; "
                "give the SAE the atlas was made from with --sae."
            )
        module[idx] = torch.tensor(atlas.features["module"].to_numpy(), dtype=torch.long)
    return module
