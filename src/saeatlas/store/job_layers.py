"""A store's layer map against the layers its capture recorded in its job
(``provenance.job.layers``, the resolved names in column order): two layers' names
swapped (or one renamed) by hand in ``manifest.json`` passed ``info --verify``, and
every later stage read each layer's columns as the other's (an SAE's layer map, the
ablation's splice, the atlas's layer profiles)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .manifest import LayerSpec


def job_layers_fault(provenance: dict[str, Any], layers: Sequence[LayerSpec]) -> str:
    """What differs between the names of ``layers`` and those a capture's job in
    ``provenance`` recorded (a clause: "the layers ... in its layer map, ..."), or "" when
    they agree or no capture's job records them (an older store's, a writer given no
    job or one of its own making without a model)."""
    job = provenance.get("job")
    names = job.get("layers") if isinstance(job, dict) and "model" in job else None
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        return ""
    have = [layer.name for layer in layers]
    if have == names:
        return ""
    return (
        f"the layers {have[:6]} in its layer map, but its capture recorded the layers "
        f"{names[:6]} (`job.layers`, in column order): each layer's columns would be read "
        "as another's"
    )
