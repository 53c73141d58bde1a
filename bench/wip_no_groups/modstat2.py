import sys, numpy as np, scipy.sparse as sp
from saeatlas.store import ActivationStore
from saeatlas.structure import AtlasConfig
from saeatlas.structure.graph.finders import best_partition
from saeatlas.structure.graph.units import unit_correlation_graph, global_mode
sys.path.insert(0, "/tmp/x23")
from rotnull import rotated_correlation
cfg = AtlasConfig()
def comms(g, labels):
    g = sp.csr_matrix(g); deg = np.asarray(g.sum(1)).ravel(); out = []
    for k in range(labels.max() + 1):
        m = labels == k; n = int(m.sum())
        if n < 2: continue
        win = g[m][:, m].sum(); out.append((n, win / max(deg[m].sum(), 1e-12), win / n))
    return out
for path in sys.argv[1:]:
    st = ActivationStore.open(path); n = min(st.n_rows, 20000)
    x = st.read(0, n).numpy().astype(np.float64); sd = x.std(0); keep = sd > 0
    z = (x[:, keep] - x[:, keep].mean(0)) / sd[keep]; C = z.T @ z / n
    g = unit_correlation_graph(C, n, False); q, lab = best_partition(cfg, g); data = comms(g, lab)
    vals, mode = np.linalg.eigvalsh(C), global_mode(C)
    nulls = []
    for i in range(8):
        gn = unit_correlation_graph(rotated_correlation(vals, mode, np.random.default_rng(i)), n, False)
        nulls.append(comms(gn, best_partition(cfg, gn)[1]))
    res = []
    for size, share, coh in data:
        fakes_s = [max([s for (m, s, c) in d if 0.67 * size <= m <= 1.5 * size], default=np.nan) for d in nulls]
        fakes_c = [max([c for (m, s, c) in d if 0.67 * size <= m <= 1.5 * size], default=np.nan) for d in nulls]
        fs = np.array(fakes_s); fc = np.array(fakes_c)
        zs = (share - np.nanmean(fs)) / max(np.nanstd(fs), 1e-9); zc = (coh - np.nanmean(fc)) / max(np.nanstd(fc), 1e-9)
        res.append(f"m{size}: share {share:.2f} z {zs:.1f} | coh z {zc:.1f} ({np.isfinite(fs).sum()}/8)")
    print(path.split('/')[-2] if path.endswith('npy') else path, "| Q %.3f" % q, " ; ".join(res), flush=True)
