import sys, json, numpy as np
from pathlib import Path
from saeatlas.store import ActivationStore
from saeatlas.train import TrainConfig
from saeatlas.train.family import train_family
from saeatlas.structure import AtlasConfig, map_structure
from saeatlas.structure.synthetic.validate import ValidationSettings
kind, seed = sys.argv[1], int(sys.argv[2]); out = Path(f"/tmp/x23/nul/{kind}-{seed}"); out.mkdir(parents=True, exist_ok=True)
rng = np.random.default_rng(seed); n, U = 20000, 144
if kind == "factor3":
    X = rng.normal(size=(n, 3)) @ rng.normal(size=(3, U)) + rng.normal(size=(n, U))
elif kind == "factor3pos":
    X = rng.normal(size=(n, 3)) @ np.abs(rng.normal(size=(3, U))) + rng.normal(size=(n, U))
elif kind == "laplace":
    X = rng.laplace(size=(n, U)) * np.exp(rng.normal(size=U))
elif kind == "ring":  # stationary Gaussian process on a ring of units: correlation decays with distance
    d = np.abs(np.subtract.outer(np.arange(U), np.arange(U))); d = np.minimum(d, U - d)
    C = np.exp(-(d / 8.0) ** 2) + 1e-6 * np.eye(U); L = np.linalg.cholesky(C); X = rng.normal(size=(n, U)) @ L.T
elif kind == "ringsparse":  # sparse features each on an arc of the ring at a random centre
    F = 400; centres = rng.integers(0, U, F); d = np.abs(np.subtract.outer(centres, np.arange(U))); d = np.minimum(d, U - d)
    W = np.exp(-(d / 6.0) ** 2) * rng.normal(size=(F, U)); A = (rng.random((n, F)) < 0.03) * rng.exponential(size=(n, F))
    X = A @ W + 0.05 * rng.normal(size=(n, U))
elif kind == "relu_gauss":
    X = np.maximum(rng.normal(size=(n, 4)) @ rng.normal(size=(4, U)) + rng.normal(size=(n, U)), 0)
X = X.astype(np.float32); np.save(out / "activations.npy", X)
json.dump([{"name": f"layer{i}", "start": 48 * i, "stop": 48 * (i + 1), "shape": [None, 48], "layout": "sample"} for i in range(3)], open(out / "activations.layers.json", "w"))
store = ActivationStore.open(out / "activations.npy"); st = ValidationSettings()
cfgs = [TrainConfig(d_sae=st.d_sae, k=st.k, tokens=st.tokens, batch_size=st.batch_size, seed=i) for i in range(st.n_saes)]
saes = [r.sae for r in train_family(store, cfgs, progress=False)]
a = map_structure(saes[0], store, AtlasConfig(n_null=st.n_null, null_rows=st.n_rows, seed=0), seed_saes=saes[1:])
a.save(out / "atlas"); s = a.summary
print(kind, seed, s.get("verdict"), "|", s["message"])
