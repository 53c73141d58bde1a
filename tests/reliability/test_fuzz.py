"""Property-based fuzzing of bad input (hypothesis): settings as flags (train, sweep)
and as YAML, sweep values,
activation arrays, manifests and SAE files. Every generated case is invalid by
construction; each must end with exit code 1, one ``Error:`` line, no traceback,
and no file of an existing output changed. 1,050 cases in all (``N_CASES``)."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import torch
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file

from saeatlas.train.config import TrainConfig

#: Examples per fuzz test; their sum is the number of bad inputs tried here.
N_CASES = {
    "flags": 200,
    "sweep_values": 50,
    "yaml": 200,
    "arrays": 200,
    "manifests": 200,
    "sae_files": 200,
}


def fuzz(name: str) -> settings:
    """Settings of one fuzz test: ``N_CASES[name]`` examples, the same on every run."""
    return settings(
        max_examples=N_CASES[name],
        deadline=None,
        database=None,
        derandomize=True,  # a failure reproduces
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )


# -- settings -------------------------------------------------------------------------------------

POSITIVE_INT = (
    "k",
    "expansion_factor",
    "dead_window",
    "log_every",
    "d_sae",
    "tokens",
    "batch_size",
    "auxk_k",
)
NON_NEGATIVE_INT = (
    "heldout_rows",
    "lr_warmup_steps",
    "checkpoint_every",
    "sparsity_warmup_steps",
    "seed",
)
POSITIVE_FLOAT = ("lr", "jumprelu_bandwidth", "jumprelu_init_threshold")
NON_NEGATIVE_FLOAT = ("grad_clip", "auxk_coefficient", "l1_coefficient", "l0_coefficient")
CHOICES = {
    "architecture": ("relu", "topk", "batchtopk", "jumprelu"),
    "normalize": ("unit", "layer", "none"),
    "lr_decay": ("linear", "cosine", "none"),
    "autocast": ("none", "bf16", "fp16"),
    "b_dec_init": ("geometric_median", "mean", "zeros"),
    "select_dtype": ("auto", "float32", "bfloat16"),
    "optimizer": ("signum", "adam"),
}

junk = st.text(min_size=1, max_size=12).filter(lambda t: t.strip() != "")
non_finite = st.sampled_from([math.nan, math.inf, -math.inf])


def _not_a_number(t: str) -> bool:
    try:
        float(t)
    except ValueError:
        return True
    return False


@st.composite
def bad_setting(draw):
    """(field, value) that TrainConfig must refuse."""
    kind = draw(
        st.sampled_from(
            ["pos_int", "nonneg_int", "pos_float", "nonneg_float", "unit", "choice", "device"]
        )
    )
    if kind == "pos_int":
        field = draw(st.sampled_from(POSITIVE_INT))
        value = draw(
            st.one_of(
                st.integers(max_value=0), junk.filter(_not_a_number), non_finite, st.just(2.5)
            )
        )
    elif kind == "nonneg_int":
        field = draw(st.sampled_from(NON_NEGATIVE_INT))
        value = draw(st.one_of(st.integers(max_value=-1), junk.filter(_not_a_number), non_finite))
    elif kind == "pos_float":
        field = draw(st.sampled_from(POSITIVE_FLOAT))
        value = draw(st.one_of(st.floats(max_value=0), non_finite, junk.filter(_not_a_number)))
    elif kind == "nonneg_float":
        field = draw(st.sampled_from(NON_NEGATIVE_FLOAT))
        value = draw(st.one_of(st.floats(max_value=-1e-9), non_finite, junk.filter(_not_a_number)))
    elif kind == "unit":
        field = "lr_decay_start"
        value = draw(st.one_of(st.floats(min_value=1.0001), st.floats(max_value=-1e-9), non_finite))
    elif kind == "choice":
        field = draw(st.sampled_from(sorted(CHOICES)))
        value = draw(junk.filter(lambda t: t not in CHOICES[field]))
    else:
        field = "device"
        value = draw(junk)
        try:
            assume(torch.device(value).type not in ("cpu",))
        except (RuntimeError, TypeError, ValueError):
            pass
    return field, value


def _flag_text(value) -> str:
    return repr(value) if isinstance(value, float) else str(value)


bad_sweep_values = st.lists(
    st.one_of(st.floats(max_value=0), non_finite, st.floats(0.01, 0.99)), min_size=1, max_size=3
).map(lambda bad: ["4", *[repr(v) for v in bad]])


@fuzz("flags")
@given(case=bad_setting(), command=st.sampled_from(["train", "sweep"]))
def test_fuzzed_training_flags(outputs, run_cli, unchanged, case, command):
    cli, one_line = run_cli
    field, value = case
    before = unchanged.take()
    flag = ["--" + field.replace("_", "-"), _flag_text(value)]
    o = outputs
    if command == "train":
        args = ["train", "--acts", o.store, "--out", o.sae, "--overwrite", *flag]
    else:
        args = ["sweep", "--acts", o.store, "--out", o.sweep, "--overwrite", "--values", "2", "4"]
        args += flag
    one_line(cli(*args))
    unchanged(before)


@fuzz("sweep_values")
@given(values=bad_sweep_values)
def test_fuzzed_sweep_values(outputs, run_cli, unchanged, values):
    cli, one_line = run_cli
    before = unchanged.take()
    o = outputs
    one_line(cli("sweep", "--acts", o.store, "--out", o.sweep, "--overwrite", "--values", *values))
    unchanged(before)


@st.composite
def bad_yaml(draw):
    """A config file TrainConfig must refuse: a bad setting, or text that is not a
    mapping of known settings."""
    if draw(st.booleans()):
        field, value = draw(bad_setting())
        return yaml.safe_dump({field: value})
    text = draw(st.text(max_size=40))
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    known = {f for f in TrainConfig.__dataclass_fields__}
    assume(data is not None and data != {})
    assume(not (isinstance(data, dict) and set(map(str, data)) <= known))
    return text


@fuzz("yaml")
@given(text=bad_yaml())
def test_fuzzed_config_files(outputs, run_cli, unchanged, tmp_path, text):
    cli, one_line = run_cli
    cfg = tmp_path / "c.yaml"
    cfg.write_bytes(text.encode("utf-8", errors="replace"))
    before = unchanged.take()
    one_line(
        cli("train", "--acts", outputs.store, "--out", outputs.sae, "--overwrite", "--config", cfg)
    )
    unchanged(before)


# -- activation arrays ------------------------------------------------------------------------------


@st.composite
def bad_array(draw):
    """(array, needle): an array with at least one NaN/Inf (the needle names the first),
    or one that is not a [rows, units] float array."""
    if draw(st.integers(0, 4)) == 0:
        shape = draw(st.sampled_from([(0, 5), (5, 0), (7,), (3, 4, 2), (0,), ()]))
        dtype = draw(st.sampled_from([np.float32, np.int64, np.bool_, np.complex64, np.uint8]))
        if len(shape) == 2 and 0 not in shape:
            assume(np.dtype(dtype).kind != "f")
        return np.zeros(shape, dtype), ""
    rows, cols = draw(st.integers(1, 30)), draw(st.integers(1, 20))
    dtype = draw(st.sampled_from([np.float32, np.float64, np.float16]))
    x = np.random.default_rng(draw(st.integers(0, 2**16))).normal(size=(rows, cols)).astype(dtype)
    cells = draw(
        st.lists(
            st.tuples(st.integers(0, rows - 1), st.integers(0, cols - 1)), min_size=1, max_size=4
        )
    )
    for r, c in cells:
        x[r, c] = draw(non_finite)
    r0, c0 = min(cells)
    return x, f"row {r0}, column {c0}"


@fuzz("arrays")
@given(case=bad_array(), command=st.sampled_from(["info", "train", "evaluate", "analyze", "sweep"]))
def test_fuzzed_activation_arrays(outputs, run_cli, unchanged, save_acts, case, command):
    cli, one_line = run_cli
    x, needle = case
    acts = save_acts(x)
    o = outputs
    args = {
        "info": ["info", acts],
        "train": ["train", "--acts", acts, "--out", o.sae, "--overwrite"],
        "evaluate": ["evaluate", "--sae", o.sae, "--acts", acts],
        "analyze": ["analyze", "--sae", o.sae, "--acts", acts, "--out", o.atlas, "--overwrite"],
        "sweep": ["sweep", "--acts", acts, "--out", o.sweep, "--overwrite", "--values", "2", "4"],
    }[command]
    before = unchanged.take()
    one_line(cli(*args), needle)
    unchanged(before)


# -- manifests --------------------------------------------------------------------------------------


def _json_junk():
    return st.one_of(
        st.none(),
        st.booleans(),
        st.text(max_size=6),
        st.floats(allow_nan=False, allow_infinity=False),
        st.lists(st.integers(), max_size=3),
        st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    )


@st.composite
def manifest_damage(draw):
    """A function that damages a manifest dict (or the store's files) so that
    ``info --verify`` must fail."""
    kind = draw(
        st.sampled_from(
            [
                "retype",
                "drop",
                "shift_count",
                "shift_layer",
                "stats",
                "dtype",
                "shard_file",
                "sha",
                "mean_off",
            ]
        )
    )
    if kind == "retype":
        key = draw(
            st.sampled_from(
                ["n_rows", "n_units", "dtype", "layers", "shards", "mean", "std", "format_version"]
            )
        )
        value = draw(_json_junk())
        return lambda m, s: (
            m.__setitem__(key, value)
            if not (type(value) is type(m[key]) and value == m[key])
            else m.__setitem__(key, None)
        )
    if kind == "drop":
        key = draw(
            st.sampled_from(
                ["n_rows", "n_units", "dtype", "layers", "shards", "mean", "std", "format_version"]
            )
        )
        return lambda m, s: m.pop(key)
    if kind == "shift_count":
        key = draw(st.sampled_from(["n_rows", "n_units"]))
        delta = draw(st.integers(-400, 400).filter(lambda d: d != 0))
        return lambda m, s: m.__setitem__(key, m[key] + delta)
    if kind == "shift_layer":
        i, end = draw(st.integers(0, 1)), draw(st.sampled_from(["start", "stop"]))
        delta = draw(st.integers(-20, 20).filter(lambda d: d != 0))
        return lambda m, s: m["layers"][i].__setitem__(end, m["layers"][i][end] + delta)
    if kind == "stats":
        key, how = (
            draw(st.sampled_from(["mean", "std"])),
            draw(st.sampled_from(["cut", "nan", "inf", "neg"])),
        )
        j = draw(st.integers(0, 17))

        def damage(m, s):
            if how == "cut":
                m[key] = m[key][:j]
            else:
                value = {"nan": math.nan, "inf": math.inf, "neg": -1.0}[how]
                if key == "mean" and how == "neg":
                    value = m[key][j] - 1.0  # a wrong mean: --verify finds it
                m[key][j] = value

        return damage
    if kind == "dtype":
        value = draw(
            st.one_of(
                st.sampled_from(["float16", "bfloat16", "float64", "int8"]), st.text(max_size=8)
            )
        )
        assume(value != "float32")
        return lambda m, s: m.__setitem__("dtype", value)
    if kind == "shard_file":
        i = draw(st.integers(0, 2))
        how = draw(st.sampled_from(["delete", "rename", "truncate", "rows"]))

        def damage(m, s):
            f = s / m["shards"][i]["file"]
            if how == "delete":
                f.unlink()
            elif how == "rename":
                m["shards"][i]["file"] = "shard-99999.safetensors"
            elif how == "truncate":
                f.write_bytes(f.read_bytes()[: draw_cut % max(1, f.stat().st_size)])
            else:
                m["shards"][i]["rows"] += 1

        draw_cut = draw(st.integers(0, 10_000))
        return damage
    if kind == "sha":
        i = draw(st.integers(0, 2))
        return lambda m, s: m["shards"][i].__setitem__("sha256", "0" * 64)
    j = draw(st.integers(0, 17))
    factor = draw(st.floats(1e-4, 1.0))
    return lambda m, s: m["mean"].__setitem__(j, m["mean"][j] + factor * (abs(m["mean"][j]) + 1))


@fuzz("manifests")
@given(damage=manifest_damage())
def test_fuzzed_manifests(outputs, run_cli, tmp_path, damage):
    cli, one_line = run_cli
    store = tmp_path / "store"
    if store.exists():
        shutil.rmtree(store)
    shutil.copytree(outputs.store, store)
    m = json.loads((store / "manifest.json").read_text())
    damage(m, store)
    (store / "manifest.json").write_text(json.dumps(m))
    one_line(cli("info", store, "--verify"))


# -- SAE files --------------------------------------------------------------------------------------


@st.composite
def sae_damage(draw):
    """A function that damages a copy of the protected SAE so that evaluate must fail."""
    kind = draw(
        st.sampled_from(["drop", "retype", "size", "arch", "k", "coef", "layers", "weights"])
    )
    if kind == "drop":
        key = draw(st.sampled_from(["architecture", "d_in", "d_sae"]))
        return lambda c, w: c.pop(key)
    if kind == "retype":
        key = draw(
            st.sampled_from(
                ["d_in", "d_sae", "k", "architecture", "layers", "dtype", "apply_b_dec_to_input"]
            )
        )
        value = draw(_json_junk())
        assume(not (key == "apply_b_dec_to_input" and (value is None or isinstance(value, bool))))
        assume(not (key == "layers" and value == []))
        return lambda c, w: (
            c.__setitem__(key, value) if c.get(key) != value else c.__setitem__(key, {"x": 1})
        )
    if kind == "size":
        key = draw(st.sampled_from(["d_in", "d_sae"]))
        delta = draw(st.integers(-30, 30).filter(lambda d: d != 0))
        return lambda c, w: c.__setitem__(key, c[key] + delta)
    if kind == "arch":
        value = draw(junk.filter(lambda t: t not in ("relu", "topk", "batchtopk", "jumprelu")))
        return lambda c, w: c.__setitem__("architecture", value)
    if kind == "k":
        value = draw(st.one_of(st.integers(max_value=0), st.integers(min_value=25), non_finite))
        return lambda c, w: c.__setitem__("k", value)
    if kind == "coef":
        key = draw(st.sampled_from(["l1_coefficient", "l0_coefficient", "jumprelu_bandwidth"]))
        value = draw(st.one_of(st.floats(max_value=-1e-9), non_finite))
        return lambda c, w: c.__setitem__(key, value)
    if kind == "layers":
        i, end = draw(st.integers(0, 1)), draw(st.sampled_from(["start", "stop"]))
        delta = draw(st.integers(-5, 5).filter(lambda d: d != 0))
        return lambda c, w: c["layers"][i].__setitem__(end, c["layers"][i][end] + delta)
    name = draw(st.sampled_from(["W_enc", "b_enc", "W_dec", "b_dec"]))
    how = draw(st.sampled_from(["int", "nan", "inf", "shape", "drop"]))

    def damage(c, w):
        t = w[name]
        if how == "int":
            w[name] = t.to(torch.int32)
        elif how in ("nan", "inf"):
            t.view(-1)[0] = math.nan if how == "nan" else math.inf
        elif how == "shape":
            w[name] = t[:-1].clone()
        else:
            w.pop(name)

    return damage


@fuzz("sae_files")
@given(damage=sae_damage())
def test_fuzzed_sae_files(outputs, run_cli, unchanged, tmp_path, damage):
    cli, one_line = run_cli
    sae = tmp_path / "sae"
    if sae.exists():
        shutil.rmtree(sae)
    shutil.copytree(outputs.sae, sae)
    cfg = json.loads((sae / "cfg.json").read_text())
    weights = load_file(str(sae / "sae_weights.safetensors"))
    damage(cfg, weights)
    (sae / "cfg.json").write_text(json.dumps(cfg))
    save_file(weights, str(sae / "sae_weights.safetensors"))
    before = unchanged.take()
    one_line(cli("evaluate", "--sae", sae, "--acts", outputs.store))
    unchanged(before)


def test_the_fuzzers_try_at_least_1000_cases():
    assert sum(N_CASES.values()) >= 1000
