import sys, numpy as np, scipy.sparse as sp
from saeatlas.store import ActivationStore
from saeatlas.structure import AtlasConfig
from saeatlas.structure.graph.finders import best_partition
from saeatlas.structure.graph.units import unit_correlation_graph, global_mode
from saeatlas.structure.inference.correlation_nulls import rotated_correlation
from saeatlas.structure.inference.cohesion import community_sizes
cfg = AtlasConfig()
def stats(g, labels):
    g = sp.csr_matrix(g); W = g.sum(); deg = np.asarray(g.sum(1)).ravel(); out = []
    for k in range(labels.max() + 1):
        m = labels == k; n = m.sum()
        if n < 2: continue
        win = g[m][:, m].sum(); dk = deg[m].sum()
        out.append((n, win / n, win / W - (dk / W) ** 2, 1 - win / max(dk, 1e-12)))  # size, cohesion, Q-term, conductance
    return np.array(out)
path = sys.argv[1]; st = ActivationStore.open(path); n = min(st.n_rows, 20000)
x = st.read(0, n).numpy().astype(np.float64); sd = x.std(0); keep = sd > 0
z = (x[:, keep] - x[:, keep].mean(0)) / sd[keep]; C = z.T @ z / n
for clean in (False,):
    g = unit_correlation_graph(C, n, clean); q, lab = best_partition(cfg, g)
    print("data Q %.3f" % q); print(np.round(stats(g, lab), 3))
    vals, mode = np.linalg.eigvalsh(C), global_mode(C)
    for i in range(3):
        gn = unit_correlation_graph(rotated_correlation(vals, mode, np.random.default_rng(i)), n, clean)
        qn, ln = best_partition(cfg, gn); print("null Q %.3f" % qn); print(np.round(stats(gn, ln), 3))
