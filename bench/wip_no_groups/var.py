import sys, json, numpy as np
from sklearn.metrics import adjusted_rand_score as ari
from saeatlas.structure.synthetic.config import PlantedConfig
from saeatlas.structure.synthetic.planted import make_planted
from saeatlas.structure.inference.coupling import assign_units
cases = {"dm2": ("easy", 42, {"dense_strength": 2.0}), "hf": ("easy", 16, {"free_unit_fraction": 0.5}),
         "e8": ("easy", 3, {"n_modules": 8, "layer_sizes": [64, 64, 64]}), "lk": ("easy", 20, {"leakage": 0.3}),
         "sr": ("superposition", 0, {"nonnegative": True})}
def corr_cols(z2, E):
    a = (z2 - z2.mean(0)) / np.where(z2.std(0) > 0, z2.std(0), 1)
    e = (E - E.mean(0)) / np.where(E.std(0) > 0, E.std(0), 1)
    return a.T @ e / len(a)
for name in sys.argv[1:]:
    p, s, ov = cases[name]
    t = make_planted(PlantedConfig.preset(p, seed=s, **ov)).unit_module
    D = np.load(f"/tmp/x23/{name}/dump0.npz")
    x, E, cons, m = D["x"], D["energy"], D["consensus"], D["mode"]
    z = (x - D["mean"]) / np.where(D["std"] > 0, D["std"], 1)
    res = {"final": ari(D["final"], t), "cons": ari(cons, t)}
    c0 = corr_cols(z ** 2, E); res["A"] = ari(assign_units(c0, cons), t)
    res["A_check"] = float(np.abs(c0 - D["coupling"]).max())
    if m.size:
        zb = z - np.outer(z @ m, m); res["B_proj"] = ari(assign_units(corr_cols(zb ** 2, E), cons), t)
        out = cons < 0
        if out.sum() >= 2:
            sf = z[:, out] @ m[out]; sf = (sf - sf.mean()) / sf.std()
            beta = z.T @ sf / len(z)
            zc = z - np.outer(sf, beta); res["C_freeproj"] = ari(assign_units(corr_cols(zc ** 2, E), cons), t)
        s2 = (z @ m) ** 2; s2 = (s2 - s2.mean()) / s2.std()
        r_is = corr_cols(z ** 2, s2[:, None])[:, 0]; r_ks = corr_cols(E, s2[:, None])[:, 0]
        cd = (c0 - np.outer(r_is, r_ks)) / np.sqrt(np.outer(1 - r_is ** 2, 1 - r_ks ** 2))
        res["D_partial"] = ari(assign_units(cd, cons), t)
    print(name, "mode" if m.size else "nomode", {k: round(v, 3) for k, v in res.items()}, "unassigned planted", int(((assign_units(c0, cons) < 0) & (t >= 0)).sum()))
