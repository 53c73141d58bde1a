import sys, numpy as np, torch
from pathlib import Path
import saeatlas.structure.inference.ensemble as E
from saeatlas.structure.inference.coupling import energy_coupling as orig, assign_units as orig_assign
from saeatlas.structure.graph.codes import atlas_batches
from saeatlas.store import ActivationStore
from saeatlas.structure import AtlasConfig, map_structure
from saeatlas.structure.synthetic.validate import ValidationSettings
out, aseed = sys.argv[1], int(sys.argv[2])
store = ActivationStore.open(Path(out) / "planted" / "activations.npy")
D = {}
def patched(store, codes, energy, *, batch_size, max_rows, device, coord):
    names = [l.name for l in codes.layers]
    xs = [xb.double().numpy() for _, _, xb in atlas_batches(store, names, batch_size, max_rows, coord)]
    D["x"] = np.concatenate(xs); D["mean"] = codes.unit_mean; D["std"] = codes.unit_std; D["energy"] = energy
    c = orig(store, codes, energy, batch_size=batch_size, max_rows=max_rows, device=device, coord=coord)
    D["coupling"] = c
    return c
def passign(coupling, consensus):
    D["consensus"] = consensus
    return orig_assign(coupling, consensus)
E.energy_coupling = patched; E.assign_units = passign
st = ValidationSettings()
saes = [str(Path(out) / f"sae{i}") for i in range(st.n_saes)]
atlas = map_structure(saes[0], store, AtlasConfig(n_null=st.n_null, null_rows=st.n_rows, seed=aseed), seed_saes=saes[1:])
print(atlas.summary["message"])
from saeatlas.structure.graph.units import global_mode
x = D["x"]; z = (x - D["mean"]) / np.where(D["std"] > 0, D["std"], 1)
m = global_mode(z.T @ z / len(z)); D["mode"] = m if m is not None else np.zeros(0)
D["final"] = atlas.units["module"].to_numpy()
np.savez(Path(out) / f"dump{aseed}.npz", **D)
