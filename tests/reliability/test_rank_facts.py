"""What the ranks of a `torchrun` analysis compare before they work together (eighth
sweep): the store was known by its first 64 rows, while each rank encodes its own share
of them, so a rank whose store path named another copy, the same in its first rows and
not after, merged that copy's rows into the atlas without a word."""

from __future__ import annotations

import torch


def test_ranks_compare_every_shard_of_the_store_not_only_its_first_rows(tmp_path):
    from saeatlas.capture import CaptureConfig, capture_activations
    from saeatlas.sae import SAEConfig, SparseAutoencoder
    from saeatlas.structure import AtlasConfig
    from saeatlas.structure.inputs import _facts

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.ReLU())
    x = torch.randn(96, 4, generator=torch.Generator().manual_seed(0))
    other = x.clone()
    other[80:] += 1.0  # rows past the fingerprint's first 64
    cfg = CaptureConfig(shard_rows=32)
    stores = [
        capture_activations(model, inputs, ["1"], tmp_path / name, cfg, progress=False)
        for name, inputs in (("a", x), ("b", other))
    ]
    sae = SparseAutoencoder(SAEConfig(architecture="relu", d_in=6, d_sae=8))
    facts = [_facts(sae, store, AtlasConfig(), {}, None) for store in stores]
    assert facts[0]["store"] == facts[1]["store"]  # the first rows alone agree
    assert facts[0]["store's shards"] != facts[1]["store's shards"]
