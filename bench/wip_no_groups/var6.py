import sys, numpy as np
exec(open("/tmp/x23/var5.py").read().split("\nfor name in sys")[0])
def rstats(v):
    med = np.median(v); return med, 1.4826 * np.median(np.abs(v - med))
def qda_cut2(a, b):
    m0, s0 = a.mean(), a.std(); m1, s1 = rstats(b)
    half = 0.5 * (m0 + m1)
    if s0 <= 0 or s1 <= 0 or m1 <= m0: return half
    w0, w1 = a.size, b.size
    A = 1 / s1**2 - 1 / s0**2; B = -2 * (m1 / s1**2 - m0 / s0**2); C = m1**2 / s1**2 - m0**2 / s0**2 + 2 * np.log(s1 / s0) - 2 * np.log(w1 / w0)
    if abs(A) < 1e-12: roots = [-C / B]
    else:
        d = B * B - 4 * A * C
        if d < 0: return half
        roots = [(-B + np.sqrt(d)) / (2 * A), (-B - np.sqrt(d)) / (2 * A)]
    roots = [r for r in roots if m0 <= r <= m1]
    return roots[0] if roots else half
def assignc(coupling, consensus, cutf):
    n_units, n_modules = coupling.shape
    cut = np.full(n_modules, np.inf)
    for k in range(n_modules):
        inside = consensus == k
        if not inside.any(): continue
        cut[k] = coupling[:, k].min() if inside.all() else cutf(coupling[~inside, k], coupling[inside, k])
    candidate = np.where(coupling >= cut[None, :], coupling, -np.inf)
    best = candidate.argmax(axis=1)
    labels = np.where(np.isfinite(candidate[np.arange(n_units), best]), best, -1)
    for k in range(n_modules):
        now, before = labels == k, consensus == k
        if (now & before).sum() < KEPT_JACCARD * (now | before).sum(): labels[now] = -1
    return labels
half = lambda a, b: 0.5 * (a.mean() + b.mean())
cuts = {"half": half, "qda": qda_cut, "qdaR": qda_cut2}
for name in sys.argv[1:]:
    p, s, ov = cases[name]
    t = make_planted(PlantedConfig.preset(p, seed=s, **ov)).unit_module
    D = np.load(f"/tmp/x23/{name}/dump0.npz"); x, E, cons, m = D["x"], D["energy"], D["consensus"], D["mode"]
    z = (x - D["mean"]) / np.where(D["std"] > 0, D["std"], 1)
    cs = {"orig": D["coupling"]}
    if m.size:
        cs["proj"] = corr_cols((z - np.outer(z @ m, m)) ** 2, E)
        c0 = corr_cols(z ** 2, E); s2 = (z @ m) ** 2
        r_is = corr_cols(z ** 2, s2[:, None])[:, 0]; r_ks = corr_cols(E, s2[:, None])[:, 0]
        cs["part"] = (c0 - np.outer(r_is, r_ks)) / np.sqrt(np.outer(1 - r_is ** 2, 1 - r_ks ** 2))
    print(name, " ".join(f"{cn}/{kn}={ari(assignc(c, cons, kf), t):.3f}" for cn, c in cs.items() for kn, kf in cuts.items()))
