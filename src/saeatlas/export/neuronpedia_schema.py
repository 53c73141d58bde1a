"""The format of a Neuronpedia ``batch-<i>.json``: its JSON schema, derived from
SAEDashboard's ``NeuronpediaDashboardBatch``, ``NeuronpediaDashboardFeature`` and
``NeuronpediaDashboardActivation.to_dict`` (``sae_dashboard/neuronpedia/neuronpedia_dashboard.py``):
the keys each writes and their types; and its numbers, rounded as SAEDashboard
rounds them."""

from __future__ import annotations

from typing import Any

import numpy as np


def rounded(x: Any) -> list[float]:
    """Rounded like SAEDashboard's output (3 decimals), as plain floats."""
    return [round(float(v), 3) for v in np.asarray(x, dtype=np.float64).ravel()]


_NUMBERS = {"type": "array", "items": {"type": "number"}}
_INTS = {"type": "array", "items": {"type": "integer"}}
_STRINGS = {"type": "array", "items": {"type": "string"}}
#: JSON schema of one ``batch-<i>.json``, derived from SAEDashboard's
#: ``NeuronpediaDashboardBatch/Feature/Activation.to_dict``.
BATCH_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["model_id", "layer", "sae_set", "features"],
    "properties": {
        "model_id": {"type": "string"},
        "layer": {"type": "integer"},
        "sae_set": {"type": "string"},
        "features": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": [
                    "feature_index",
                    "neuron_alignment_indices",
                    "neuron_alignment_values",
                    "neuron_alignment_l1",
                    "correlated_neurons_indices",
                    "correlated_neurons_l1",
                    "correlated_neurons_pearson",
                    "correlated_features_indices",
                    "correlated_features_l1",
                    "correlated_features_pearson",
                    "neg_str",
                    "neg_values",
                    "pos_str",
                    "pos_values",
                    "frac_nonzero",
                    "freq_hist_data_bar_values",
                    "freq_hist_data_bar_heights",
                    "logits_hist_data_bar_heights",
                    "logits_hist_data_bar_values",
                    "n_prompts_total",
                    "n_tokens_in_prompt",
                    "dataset",
                    "decoder_weights_dist",
                    "activations",
                ],
                "properties": {
                    "feature_index": {"type": "integer", "minimum": 0},
                    "neuron_alignment_indices": _INTS,
                    "neuron_alignment_values": _NUMBERS,
                    "neuron_alignment_l1": _NUMBERS,
                    "correlated_neurons_indices": _INTS,
                    "correlated_neurons_l1": _NUMBERS,
                    "correlated_neurons_pearson": _NUMBERS,
                    "correlated_features_indices": _INTS,
                    "correlated_features_l1": _NUMBERS,
                    "correlated_features_pearson": _NUMBERS,
                    "neg_str": _STRINGS,
                    "neg_values": _NUMBERS,
                    "pos_str": _STRINGS,
                    "pos_values": _NUMBERS,
                    "frac_nonzero": {"type": "number", "minimum": 0, "maximum": 1},
                    "freq_hist_data_bar_values": _NUMBERS,
                    "freq_hist_data_bar_heights": _NUMBERS,
                    "logits_hist_data_bar_heights": _NUMBERS,
                    "logits_hist_data_bar_values": _NUMBERS,
                    "n_prompts_total": {"type": "integer"},
                    "n_tokens_in_prompt": {"type": "integer"},
                    "dataset": {"type": "string"},
                    "decoder_weights_dist": _NUMBERS,
                    "activations": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["bin_min", "bin_max", "bin_contains", "tokens", "values"],
                            "properties": {
                                "bin_min": {"type": "number"},
                                "bin_max": {"type": "number"},
                                "bin_contains": {"type": "number"},
                                "tokens": _STRINGS,
                                "values": _NUMBERS,
                            },
                        },
                    },
                },
            },
        },
    },
}
