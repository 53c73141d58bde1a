"""The protected outputs are real: each opens as what it claims to be."""

from saeatlas.sae import SparseAutoencoder
from saeatlas.store import ActivationStore
from saeatlas.structure.atlas import Atlas


def test_the_protected_outputs_are_complete(outputs):
    assert ActivationStore.open(outputs.store).n_rows == 300
    assert ActivationStore.open(outputs.npy).n_units == 18
    assert SparseAutoencoder.load(outputs.sae).cfg.d_sae == 24
    assert Atlas.load(outputs.atlas).n_modules == 0
