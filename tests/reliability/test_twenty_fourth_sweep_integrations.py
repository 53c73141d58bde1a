"""The twenty-fourth hostile sweep's cases in the integrations, `torchrun` and the CLI
and config layer (the run's and the demo's Python API, run configs, ranks of a run):
each was read wrongly, ended in a traceback or a misleading message, or replaced work
it should not have before its fix."""

from __future__ import annotations

import numpy as np
import pytest

from saeatlas.errors import ConfigError

X = np.zeros((4, 6), dtype=np.float32)


def _run_config(outputs, **changes):
    from saeatlas.pipeline import RunConfig, StabilitySection, SweepSection
    from saeatlas.train import TrainConfig

    settings = dict(
        model=outputs.model,
        inputs=str(outputs.inputs),
        layers=("1",),
        sweep=SweepSection(enabled=False),
        train=TrainConfig(d_sae=16, k=2, tokens=512, batch_size=64),
        stability=StabilitySection(n_seed_saes=0),
    )
    return RunConfig(**{**settings, **changes})


@pytest.mark.parametrize(
    "call, needle",
    [
        # an AttributeError ('str' object has no attribute 'threads')
        (lambda c, o: ("run.yaml", o), "`config` must be a RunConfig, got the path 'run.yaml'"),
        (lambda c, o: (None, o), "`config` must be a RunConfig, got NoneType"),
        # pathlib's TypeError
        (lambda c, o: (c, 5), "`out` must be a path (str or pathlib.Path), got 5"),
    ],
)
def test_run_pipeline_refuses_arguments_of_another_kind(outputs, tmp_path, call, needle):
    from saeatlas.pipeline import run_pipeline

    config, out = call(_run_config(outputs), tmp_path / "run")
    with pytest.raises(ConfigError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        run_pipeline(config, out, progress=False)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        # read by its truth: the run replaced the outputs of other settings
        ({"overwrite": "no"}, "`overwrite` must be True or False, got 'no'"),
        ({"progress": "no"}, "`progress` must be True or False, got 'no'"),
        # a TypeError once the capture had run ("'int' object is not callable")
        ({"on_stage": 5}, "`on_stage` must be a function of a StageOutcome, got 5"),
    ],
)
def test_run_pipeline_refuses_flags_of_another_kind_before_its_work(
    outputs, tmp_path, kwargs, needle
):
    from saeatlas.pipeline import run_pipeline

    with pytest.raises(ConfigError, match=needle):
        run_pipeline(_run_config(outputs), tmp_path / "run", **kwargs)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("path", [None, 5, {"model": "m.py:build"}])
def test_load_run_config_refuses_what_is_no_path(path):
    """pathlib's TypeError ("expected str, bytes or os.PathLike object")."""
    from saeatlas.pipeline import load_run_config

    with pytest.raises(ConfigError, match="`path` must be a path"):
        load_run_config(path)


def test_a_run_config_from_a_dict_refuses_a_base_dir_that_is_no_path():
    """pathlib's TypeError once the paths were resolved."""
    from saeatlas.pipeline import RunConfig

    data = {"model": "m.py:f", "inputs": "x.npy", "layers": ["1"]}
    with pytest.raises(ConfigError, match="`base_dir` must be a path"):
        RunConfig.from_dict(data, base_dir=5)


@pytest.mark.parametrize("atlas", [5, "atlas"])
def test_module_summary_refuses_what_is_no_atlas(atlas):
    """An AttributeError ('int' object has no attribute 'modules')."""
    from saeatlas.pipeline import module_summary

    with pytest.raises(ConfigError, match=r"`atlas` must be an Atlas.*Atlas.load\(DIR\)"):
        module_summary(atlas)


@pytest.mark.parametrize(
    "call, needle",
    [
        # read by its truth: the quick (tests') run
        (lambda d, m: d.digits_config(quick="no"), "`quick` must be True or False"),
        (lambda d, m: m.minilm_config(quick="no"), "`quick` must be True or False"),
        # taken, then refused by the run's inputs function
        (lambda d, m: m.minilm_config(n_texts="5"), "`n_texts` must be a whole number"),
        # NumPy's "SeedSequence expects int" and range()'s TypeError
        (lambda d, m: d.digits_model(seed=1.5, epochs=1), "`seed` must be a whole number"),
        (lambda d, m: d.digits_model(epochs="2"), "`epochs` must be a whole number"),
        # the network as initialised, without a word
        (lambda d, m: d.digits_model(epochs=-1), "`epochs` must be >= 1, got -1"),
        # "'<' not supported between instances of 'str' and 'int'"
        (lambda d, m: m.docstring_corpus(n_texts="5"), "`n_texts` must be a whole number"),
        # no text at all, without a word
        (lambda d, m: m.docstring_corpus(5, 500, 400), "`min_chars` \\(500\\) is above"),
    ],
)
def test_the_demo_functions_refuse_arguments_of_another_kind(call, needle):
    from saeatlas.demo import digits, minilm

    with pytest.raises(ConfigError, match=needle):
        call(digits, minilm)


# -- ranks of a run ------------------------------------------------------------------------------


def test_ranks_of_a_run_given_another_out_are_refused(tmp_path, outputs, monkeypatch):
    """Rank 1's --out was passed over: it ran the stages rank 0 ran into a folder rank 0
    never checked, or ended in "'B/atlas' does not exist" when rank 0 skipped them. What
    each rank brings to the run's first meeting is taken from two calls, one per --out
    (a torchrun of two ranks, `torchrun ... saeatlas run` by hand, was refused so)."""
    from saeatlas._coordinator import Coordinator
    from saeatlas._world import differing
    from saeatlas.pipeline import run_pipeline

    jobs = []

    class Met(Exception):
        pass

    def agree(self, job, what, fix):
        if what == "this run":
            jobs.append((job, what, fix))
            raise Met

    monkeypatch.setattr(Coordinator, "agree", agree)
    for rank in range(2):
        with pytest.raises(Met):
            run_pipeline(_run_config(outputs), tmp_path / f"run{rank}", progress=False)
    (job0, what, fix), (job1, _, _) = jobs
    with pytest.raises(ConfigError, match="The ranks of this run were given different --out"):
        differing([job0, job1], what, fix)
    assert not list(tmp_path.iterdir())


def test_a_config_reads_a_date_as_the_text_written(outputs, tmp_path):
    """`out: 2026-12-07` (a run directory named by its day) was refused as "`out` must be
    text or null, got datetime.date(2026, 12, 7)": YAML 1.1's dates, which YAML 1.2 and
    JSON read as text."""
    from saeatlas.pipeline import load_run_config

    config = tmp_path / "run.yaml"
    config.write_text(
        f"model: {outputs.model}\ninputs: {outputs.inputs}\nlayers: ['1']\nout: 2026-12-07\n"
        "model_args: {since: 2026-12-07 10:00:00}\n"
    )
    cfg = load_run_config(config)
    assert cfg.out == str(tmp_path / "2026-12-07")
    assert cfg.model_args == {"since": "2026-12-07 10:00:00"}


def test_run_check_refuses_the_run_directory_the_run_refuses(outputs, analysed, tmp_path, run_cli):
    """`run --check` called valid a run directory whose atlas was made with other
    settings (the run then stopped at once, advising --overwrite), and one whose atlas
    folder holds files of the user's: the check now refuses what the run refuses there
    before its first stage."""
    import shutil

    cli, one_line = run_cli
    config = tmp_path / "run.yaml"
    analyze = "analyze: {n_null: 3, nulls: [permutation], n_examples: 2}"  # the atlas's: 2
    config.write_text(
        f"model: {outputs.model}\ninputs: {outputs.inputs}\nlayers: ['1']\n{analyze}\n"
    )
    run = tmp_path / "run"
    shutil.copytree(analysed, run / "atlas")
    before = sorted(p.name for p in run.rglob("*"))
    r = cli("run", config, "--check", "--out", run)
    one_line(r, "holds outputs that this run would replace", "`analyze.n_null` was 2, now 3")
    r = cli("run", config, "--check", "--out", run, "--overwrite")
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in run.rglob("*")) == before
    (tmp_path / "mine" / "atlas").mkdir(parents=True)
    (tmp_path / "mine" / "atlas" / "notes.txt").write_text("mine")
    r = cli("run", config, "--check", "--out", tmp_path / "mine")
    one_line(r, "holds files that are not an atlas's (['notes.txt'])")


@pytest.mark.parametrize(
    "call, needle",
    [
        # AttributeErrors ('int' object has no attribute 'named_modules', 'modules')
        (lambda c: c.named_modules(5), "`model` must be a torch.nn.Module"),
        (lambda c: c.named_modules(None), "`model` must be a torch.nn.Module"),
        (lambda c: c.example_inputs(5), "`model` must be a torch.nn.Module"),
        (lambda c: c.list_layers(5, np.zeros((2, 6))), "`model` must be a torch.nn.Module"),
        # TypeErrors, and True read as batches of 1
        (lambda c: next(c.iter_input_batches(X, batch_size="2")), "got '2'"),
        (lambda c: next(c.iter_input_batches(X, batch_size=2.5)), "got 2.5"),
        (lambda c: next(c.iter_input_batches(X, batch_size=True)), "got True"),
    ],
)
def test_the_capture_helpers_refuse_arguments_of_another_kind(call, needle):
    from saeatlas import capture
    from saeatlas.errors import AtlasError

    with pytest.raises(AtlasError, match=needle):
        call(capture)


def test_the_capture_helpers_read_an_nnsight_wrapper_as_its_module():
    """`named_modules` and `example_inputs` of an nnsight wrapper ended in an
    AttributeError, where `resolve_hookpoints` and `list_layers` read its module."""
    nnsight = pytest.importorskip("nnsight")
    import torch

    from saeatlas.capture import example_inputs, named_modules

    module = torch.nn.Sequential(torch.nn.Linear(6, 4), torch.nn.ReLU())
    wrapped = nnsight.NNsight(module)
    assert list(named_modules(wrapped)) == ["0", "1"]
    assert tuple(example_inputs(wrapped).shape) == (2, 6)


@pytest.mark.parametrize("flag", ["--debug", "-v", "--verbose", "--version"])
def test_an_option_of_saeatlas_given_after_the_command_is_told_where_it_goes(
    outputs, run_cli, flag
):
    """`saeatlas info STORE --debug` was told only "No such option: --debug", an option
    saeatlas has (before the command)."""
    cli, one_line = run_cli
    r = cli("info", outputs.store, flag)
    one_line(r, f"{flag} is an option of saeatlas itself", f"(`saeatlas {flag} info ...`)")


@pytest.mark.parametrize(
    "finder, graph, needle",
    [
        # a number (or None) was a graph of one node: 0 modules, without a word
        ("leiden", 5, "The graph must be a square matrix"),
        ("spectral", None, "The graph must be a square matrix"),
        # every node in no module, and a resolution modularity does not have
        ("leiden", {"resolutions": ()}, "`resolutions` must be a non-empty list"),
        ("leiden", {"resolutions": (-1.0,)}, "`resolutions` must be a non-empty list"),
        ("leiden", {"min_size": -5}, "`min_size` must be >= 1, got -5"),
        # NumPy's TypeErrors
        ("leiden", {"min_size": "2"}, "`min_size` must be a whole number"),
        ("leiden", {"random_state": 1.5}, "`random_state` must be a whole number"),
        # one module, without a word
        ("spectral", {"max_modules": 0}, "`max_modules` must be >= 1, got 0"),
    ],
)
def test_the_module_finders_refuse_a_graph_or_settings_of_another_kind(finder, graph, needle):
    import scipy.sparse as sp

    from saeatlas.structure import LeidenModules, SpectralModules

    kind = {"leiden": LeidenModules, "spectral": SpectralModules}[finder]
    params = graph if isinstance(graph, dict) else {}
    X = sp.random(12, 12, density=0.4, random_state=0, format="csr") if params else graph
    with pytest.raises(ValueError, match=needle):
        kind(**params).fit(X)


@pytest.mark.parametrize("value, shown", [(True, "got True"), ("5", "got '5'")])
def test_a_timeout_of_another_kind_is_refused_as_given(outputs, value, shown):
    """`timeout_s=True` was a wait of one second where the ranks meet, and the text '5'
    was refused as "got 5", a number it looked like."""
    from saeatlas.evaluate import evaluate_sae
    from saeatlas.sae import SparseAutoencoder

    sae = SparseAutoencoder.load(outputs.sae)
    with pytest.raises(ConfigError, match=f"`timeout_s` .* {shown}\\.$"):
        evaluate_sae(sae, outputs.store, timeout_s=value)
