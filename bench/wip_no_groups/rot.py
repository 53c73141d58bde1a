import sys, numpy as np, scipy.sparse as sp
from saeatlas.store import ActivationStore
from saeatlas.structure import AtlasConfig
from saeatlas.structure.graph.finders import best_partition
from saeatlas.structure.graph.units import unit_correlation_graph, global_mode
cfg = AtlasConfig()
def rotated(corr, rng, keep_mode):
    vals, vecs = np.linalg.eigh(corr); U = corr.shape[0]
    m = global_mode(corr) if keep_mode else None
    G = rng.normal(size=(U, U)); Q, R = np.linalg.qr(G); Q = Q * np.sign(np.diag(R))
    if m is not None:  # keep the mode's direction; random directions orthogonal to it
        Q = Q - np.outer(m, m @ Q); Q, R = np.linalg.qr(Q[:, :-1]); Q = Q * np.sign(np.diag(R))
        Q = np.column_stack([Q, m]); Q = Q[:, :U]
        lam = np.concatenate([np.sort(vals)[:-1], [vals.max()]])
    else:
        lam = vals
    C = (Q * lam) @ Q.T; d = np.sqrt(np.clip(np.diag(C), 1e-12, None)); return C / np.outer(d, d)
for path in sys.argv[1:]:
    st = ActivationStore.open(path); n = min(st.n_rows, 20000)
    x = st.read(0, n).numpy().astype(np.float64); sd = x.std(0); keep = sd > 0
    z = (x[:, keep] - x[:, keep].mean(0)) / sd[keep]; C = z.T @ z / n
    out = [path.split("/")[-2] if path.endswith(".npy") else path, f"U={C.shape[0]}", f"mode={global_mode(C) is not None}"]
    for clean in (False, True):
        q, lab = best_partition(cfg, unit_correlation_graph(C, n, clean))
        qs = [best_partition(cfg, unit_correlation_graph(rotated(C, np.random.default_rng(i), True), n, clean))[0] for i in range(5)]
        out.append(f"{'clean' if clean else 'raw'}: Q {q:.3f} k={lab.max()+1} null {np.mean(qs):.3f}±{np.std(qs):.3f} z={(q-np.mean(qs))/max(np.std(qs),1e-9):.1f}")
    print(" | ".join(out), flush=True)
