import sys, numpy as np
exec(open("/tmp/x23/var.py").read().split("\nfor name in sys")[0])
from saeatlas.structure.inference.coupling import KEPT_JACCARD
def qda_cut(a, b, prior=True):
    """boundary between others a and members b where the two Gaussian densities (weighted by class share) are equal."""
    m0, s0, m1, s1 = a.mean(), a.std(), b.mean(), b.std()
    half = 0.5 * (m0 + m1)
    if s0 <= 0 or s1 <= 0 or m1 <= m0: return half
    w0, w1 = (a.size, b.size) if prior else (1, 1)
    # log w0 N(x;m0,s0) = log w1 N(x;m1,s1)
    A = 1 / s1**2 - 1 / s0**2; B = -2 * (m1 / s1**2 - m0 / s0**2); C = m1**2 / s1**2 - m0**2 / s0**2 + 2 * np.log(s1 / s0) - 2 * np.log(w1 / w0)
    # equation: -(x-m1)^2/2s1^2 - log s1 + log w1 = -(x-m0)^2/2s0^2 - log s0 + log w0  => A x^2 + B x + C = 0
    if abs(A) < 1e-12: roots = [-C / B]
    else:
        d = B * B - 4 * A * C
        if d < 0: return half
        roots = [(-B + np.sqrt(d)) / (2 * A), (-B - np.sqrt(d)) / (2 * A)]
    roots = [r for r in roots if m0 <= r <= m1]
    return roots[0] if roots else half
def assignq(coupling, consensus, prior=True):
    n_units, n_modules = coupling.shape
    cut = np.full(n_modules, np.inf)
    for k in range(n_modules):
        inside = consensus == k
        if not inside.any(): continue
        cut[k] = coupling[:, k].min() if inside.all() else qda_cut(coupling[~inside, k], coupling[inside, k], prior)
    candidate = np.where(coupling >= cut[None, :], coupling, -np.inf)
    best = candidate.argmax(axis=1)
    labels = np.where(np.isfinite(candidate[np.arange(n_units), best]), best, -1)
    for k in range(n_modules):
        now, before = labels == k, consensus == k
        if (now & before).sum() < KEPT_JACCARD * (now | before).sum(): labels[now] = -1
    return labels
for name in sys.argv[1:]:
    p, s, ov = cases[name]
    t = make_planted(PlantedConfig.preset(p, seed=s, **ov)).unit_module
    D = np.load(f"/tmp/x23/{name}/dump0.npz"); c, cons = D["coupling"], D["consensus"]
    r = {"A": ari(assign_units(c, cons), t), "cons": ari(cons, t), "qda": ari(assignq(c, cons), t), "qda_noprior": ari(assignq(c, cons, False), t)}
    print(name, {k: round(v, 3) for k, v in r.items()})
print("---")
for name in sys.argv[1:]:
    p, s, ov = cases[name]
    t = make_planted(PlantedConfig.preset(p, seed=s, **ov)).unit_module
    D = np.load(f"/tmp/x23/{name}/dump0.npz"); c, cons = D["coupling"], D["consensus"]
    for k in range(c.shape[1]):
        ins = cons == k; a, b = c[~ins, k], c[ins, k]
        print(name, k, "n_in", ins.sum(), "in %.3f±%.3f out %.3f±%.3f half %.3f qda %.3f" % (b.mean(), b.std(), a.mean(), a.std(), 0.5*(a.mean()+b.mean()), qda_cut(a, b)))
