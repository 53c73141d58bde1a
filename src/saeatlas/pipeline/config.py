"""``RunConfig``: the whole pipeline in one validated config (``saeatlas run config.yaml``).

A config names the model, its inputs and the layers to record, then one section
per stage. The stage sections that already exist as configs are used as they
are (``capture``: :class:`~saeatlas.capture.CaptureConfig`, ``train``:
:class:`~saeatlas.train.TrainConfig`, ``analyze``:
:class:`~saeatlas.structure.AtlasConfig`); the others are in :mod:`.sections`. Every
field's docstring is its documentation (``docs/pipeline.md``).

Errors name the field as ``section.field``, the bad value and the allowed
values, for unknown keys too (with the closest known key).
"""

from __future__ import annotations

import difflib
import json
import math
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from .._config_cli import config_from_mapping
from .._config_file import load_config_file
from .._validation import check_path_argument, check_types, choice
from ..capture import CaptureConfig
from ..capture.hf_dir import MODEL_CLASSES
from ..errors import ConfigError
from ..sae.architectures import REGISTRY as ARCHITECTURE_REGISTRY
from ..structure import AtlasConfig
from ..sweep.sweep import SWEEPABLE
from ..train import TrainConfig
from ..train.config import unread_settings
from .sections import AblationSection, ReportSection, StabilitySection, SweepSection, show_values

#: Which architectures each swept setting acts on.
SWEEP_ARCHITECTURES = {
    over: tuple(a.name for a in ARCHITECTURE_REGISTRY.values() if a.sparsity_setting == over)
    for over in SWEEPABLE
}


#: Section name -> its config class.
SECTIONS: dict[str, type] = {
    "capture": CaptureConfig,
    "sweep": SweepSection,
    "train": TrainConfig,
    "stability": StabilitySection,
    "analyze": AtlasConfig,
    "ablation": AblationSection,
    "report": ReportSection,
}


@dataclass(frozen=True)
class RunConfig:
    """The model, its inputs, the layers to record, and one section per stage."""

    model: str
    """Model SPEC: 'package.module:factory', 'path/to/file.py:factory' (returning a
    torch.nn.Module or a (model, tokenizer) pair) or a local Hugging Face model directory."""
    inputs: str
    """Inputs: a .npy/.safetensors array or a .txt/.jsonl file of texts, or a
    'package.module:function' returning them (or an (inputs, labels) pair)."""
    layers: tuple[str, ...]
    """Layers to record: names, globs or re:regexes (a joint SAE is trained over all)."""
    labels: str | None = None
    """One label per sample: a .npy or text file (one per line), or a 'module:function'."""
    model_args: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments of the model factory."""
    model_class: str = "auto"
    """For a Hugging Face model directory, the class to load (`--model-class`):
    'causal-lm', 'masked-lm', 'base', 'checkpoint' (the class its config's
    `architectures` name: a classifier with its head, for the ablation's labels) or 'auto'."""
    inputs_args: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments of the inputs function."""
    out: str | None = None
    """Run directory (relative to the config file; `~` is the home folder, as in `model`,
    `inputs` and `labels`); `saeatlas run --out` overrides it."""
    threads: int | None = None
    """CPU threads torch uses during the run (default: torch's own choice), at most the
    machine's CPUs. Small models run as fast on one thread, and are not slowed down when
    other work shares the cores."""
    capture: CaptureConfig = field(default_factory=CaptureConfig)
    """How activations are recorded (`saeatlas capture`'s options)."""
    sweep: SweepSection = field(default_factory=SweepSection)
    """The sparsity sweep."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """How the final SAE (and the sweep's members) are trained (`saeatlas train`'s options)."""
    stability: StabilitySection = field(default_factory=StabilitySection)
    """Extra seed SAEs for stability."""
    analyze: AtlasConfig = field(default_factory=AtlasConfig)
    """How the atlas is computed (`saeatlas analyze`'s options)."""
    ablation: AblationSection = field(default_factory=AblationSection)
    """The causal check in the model."""
    report: ReportSection = field(default_factory=ReportSection)
    """The HTML report."""

    @property
    def n_trained_seeds(self) -> int:
        """Seed SAEs the train stage makes: the stability ones, and at least one when
        the dictionary null takes its source dictionary from another seed."""
        a = self.analyze
        null = a.null_dictionary == "seed" and "dictionary" in a.nulls and a.n_null > 0
        return max(self.stability.n_seed_saes, int(null))

    def unread_train_settings(self, given: Iterable[str]) -> list[str]:
        """Of the `train` settings ``given`` in the config file, those the run does not
        read, each as a sentence: the swept one (the sweep's knee sets it) and those
        `train.architecture` or `train.optimizer` does not read."""
        given = set(given)
        out = []
        over = self.sweep.over
        if self.sweep.enabled and over in given:  # the knee replaces it in every stage
            value = getattr(self.train, over)
            out.append(
                f"`train.{over}` ({value:g}) is not read: `sweep.over` is {over!r}, so the "
                f"sweep's knee sets the final SAE's {over} (each member takes its own from "
                f"`sweep.values`). Set `sweep.enabled: false` to train with {over} {value:g}"
            )
        unread = unread_settings(self.train, given - {over} if self.sweep.enabled else given)
        return out + [f"`train.{u[1:]}" for u in unread]

    def __post_init__(self) -> None:
        check_types(self)
        for name in ("model", "inputs"):
            if not getattr(self, name).strip():
                raise ConfigError(f"`{name}` is empty; see docs/pipeline.md for what it takes.")
        if self.labels is not None and not self.labels.strip():  # read as the config's folder
            raise ConfigError(
                f"`labels` is {self.labels!r}, which names no file; give the labels, or leave "
                "`labels` out for none."
            )
        if self.out is not None and not self.out.strip():  # read as the config's folder
            raise ConfigError(
                f"`out` is {self.out!r}, which names no folder; give the run directory, or "
                "leave `out` out for the default."
            )
        if not self.layers or isinstance(self.layers, str):
            raise ConfigError(
                f"`layers` must be a non-empty list of layer patterns, got {self.layers!r}."
            )
        for name in ("model_args", "inputs_args"):
            bad = [k for k in getattr(self, name) if not isinstance(k, str)]
            if bad:
                raise ConfigError(
                    f"`{name}` keys are the keyword arguments of a function, so names, got "
                    f"{bad!r}; write them as names (`{name}: {{n_samples: 100}}`)."
                )
            for key, value in getattr(self, name).items():
                odd = _not_json(value)
                if odd is not None:  # the run records its config as YAML and JSON
                    raise ConfigError(
                        f"`{name}.{key}` holds {odd!r} ({type(odd).__name__}); give text, "
                        "finite numbers, true/false, lists or mappings (quote a date to pass "
                        "it as text)."
                    )
        choice("model_class", self.model_class, ("auto", *MODEL_CLASSES))
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"`threads` must be positive, got {self.threads}.")
        cpus = os.cpu_count() or 1
        if self.threads is not None and self.threads > cpus:
            # 100,000 ended the run in a segmentation fault (OpenMP), 2**31 in torch's
            # "Overflow when unpacking long"; more threads than CPUs only slow it down
            raise ConfigError(
                f"`threads` is {self.threads:,}, more than the {cpus} CPUs of this machine; "
                f"give at most {cpus}, or leave `threads` out for torch's own choice."
            )
        for name, cls in SECTIONS.items():
            if not isinstance(getattr(self, name), cls):
                raise ConfigError(f"`{name}` must be a {cls.__name__}.")
        if self.sweep.enabled and self.train.checkpoint_every:
            raise ConfigError(
                "`train.checkpoint_every` does not apply with a sweep: the sweep trains its "
                "members together, without checkpoints. Set `train.checkpoint_every: 0` or "
                "`sweep.enabled: false`."
            )
        more = max(self.n_trained_seeds, self.sweep.seeds - 1 if self.sweep.enabled else 0)
        if self.train.seed + more >= 2**63:  # refused after the capture, naming no setting
            raise ConfigError(
                f"`train.seed` {self.train.seed} gives the seed SAEs and the sweep's second "
                f"seed the seeds after it, up to {self.train.seed + more}, beyond 2**63 - 1, "
                "the largest torch takes; give a lower `train.seed`."
            )
        d_sae = self.train.d_sae
        if self.sweep.enabled and self.sweep.over == "k" and d_sae is not None:
            over = [v for v in self.sweep.values if v > d_sae]
            if over:
                raise ConfigError(
                    f"`sweep.values` {show_values(tuple(over))} exceed `train.d_sae` {d_sae}: a TopK "
                    "SAE keeps k of its d_sae latents. Lower them or raise `train.d_sae`."
                )
        if self.sweep.enabled:
            allowed = SWEEP_ARCHITECTURES[self.sweep.over]
            if self.train.architecture not in allowed:
                fits = [o for o, a in SWEEP_ARCHITECTURES.items() if self.train.architecture in a]
                raise ConfigError(
                    f"`sweep.over` {self.sweep.over!r} does not act on `train.architecture` "
                    f"{self.train.architecture!r} (it acts on {list(allowed)}); sweep "
                    f"{fits[0]!r} for {self.train.architecture}, or set `sweep.enabled: false`."
                )

    # -- reading and writing -----------------------------------------------------------------

    @classmethod
    def from_dict(
        cls, data: Any, *, source: str = "", base_dir: str | Path | None = None
    ) -> RunConfig:
        """A validated config from a mapping (a parsed YAML file).

        ``base_dir``: the config file's directory; relative paths in ``model``,
        ``inputs``, ``labels`` are looked up there first, and ``out`` is taken
        relative to it.
        """
        check_path_argument("base_dir", base_dir, optional=True)  # 5: pathlib's TypeError
        prefix = f"{source}: " if source else ""
        if not isinstance(data, dict):
            raise ConfigError(
                f"{prefix}a run config must be a mapping with `model`, `inputs`, `layers` and "
                f"sections, got {type(data).__name__}."
            )
        # unknown keys first: `layer:` is a typo of `layers`, not a missing `layers`
        known = [f.name for f in fields(cls)]
        for key in data:
            if key not in known:
                close = difflib.get_close_matches(str(key), known, n=1)
                hint = f" Did you mean `{close[0]}`?" if close else ""
                raise ConfigError(
                    f"{prefix}unknown key `{key}`.{hint} Known top-level keys: {known}."
                )
        missing = [k for k in ("model", "inputs", "layers") if data.get(k) in (None, "", [])]
        if missing:
            raise ConfigError(
                f"{prefix}missing {', '.join(f'`{k}`' for k in missing)}; a run config needs "
                "`model`, `inputs` and `layers` (see examples/digits.yaml)."
            )
        top = {k: v for k, v in data.items() if k not in SECTIONS}
        # top-level fields: validated like a section, sections filled in below
        sections: dict[str, Any] = {}
        for name, sec_cls in SECTIONS.items():  # `sweep` before `train`, which reads it
            raw = data.get(name)
            if name == "train":
                raw = _swept_k_default(raw, sections["sweep"])
            sections[name] = config_from_mapping(sec_cls, raw, name, source=source)
        # the top-level fields, checked by the same reader with default sections
        plain = config_from_mapping(cls, top, "", source=source, skip=tuple(SECTIONS))
        values = {f.name: getattr(plain, f.name) for f in fields(cls) if f.name not in SECTIONS}
        for name in ("model", "inputs", "labels", "out"):
            # no shell reads a config file: `inputs: ~/x.npy` "did not exist", and `out:
            # ~/runs/a` wrote the run into a folder named '~' beside the config
            if isinstance(values[name], str) and values[name].startswith("~"):
                values[name] = os.path.expanduser(values[name])
        if base_dir is not None:
            base = Path(base_dir)
            for name in ("model", "inputs", "labels"):
                if values[name] is not None:
                    values[name] = resolve_spec(values[name], base)
            if values["out"] is not None:
                values["out"] = str(base / values["out"])
        try:
            return cls(**values, **sections)
        except ConfigError as e:
            raise ConfigError(prefix + str(e)) from None

    def to_dict(self) -> dict[str, Any]:
        """Plain data (lists, not tuples) that :meth:`from_dict` reads back."""
        out: dict[str, Any] = {
            "model": self.model,
            "inputs": self.inputs,
            "layers": list(self.layers),
        }
        for name in ("labels", "model_args", "inputs_args", "out", "threads"):
            value = getattr(self, name)
            if value not in (None, {}):
                out[name] = value
        if self.model_class != "auto":
            out["model_class"] = self.model_class
        for name in SECTIONS:
            section = getattr(self, name)
            out[name] = section.to_json() if hasattr(section, "to_json") else asdict(section)
        return json.loads(json.dumps(out))

    def dumps(self) -> str:
        """The config as YAML."""
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def _swept_k_default(train: Any, sweep: SweepSection) -> Any:
    """The `train` section, given a `k` that `train.d_sae` holds when a sweep of k sets
    every member's: the default k (32) above a smaller `d_sae` was refused, so such a
    run needed a `train.k` it never reads (the smallest swept value stands in for it)."""
    if not (sweep.enabled and sweep.over == "k" and isinstance(train, dict)) or "k" in train:
        return train
    d_sae = train.get("d_sae")
    default = TrainConfig.k
    if isinstance(d_sae, int) and not isinstance(d_sae, bool) and 0 < d_sae < default:
        return {**train, "k": int(min(sweep.values))}
    return train


def _not_json(value: Any) -> Any:
    """The first part of ``value`` that JSON cannot hold (YAML reads dates, for one; `.nan`
    and `.inf` are floats no JSON holds), or None."""
    if isinstance(value, float) and not math.isfinite(value):
        # called valid by `run --check`; the capture then refused its record, naming
        # `provenance`, a setting no config has
        return value
    if value is None or isinstance(value, (str, bool, int, float)):
        return None
    if isinstance(value, (list, tuple)):
        return next((o for o in map(_not_json, value) if o is not None), None)
    if isinstance(value, dict):
        odd = next((k for k in value if not isinstance(k, str)), None)
        return odd if odd is not None else _not_json(list(value.values()))
    return value


def resolve_spec(spec: str, base: Path) -> str:
    """``spec`` with a relative file or directory made absolute when it exists under
    ``base`` (also the file of a ``file.py:function`` spec); other specs as they are."""
    if Path(spec).is_absolute():
        return spec
    if (base / spec).exists():
        return str((base / spec).resolve())
    target, sep, attr = spec.rpartition(":")
    if sep and target.endswith(".py") and (base / target).exists():
        return f"{(base / target).resolve()}:{attr}"
    return spec


def load_run_config(path: str | Path) -> RunConfig:
    """Read and validate a run config file (YAML or JSON)."""
    check_path_argument("path", path)  # None or a dict ended in pathlib's TypeError
    path = Path(path)
    return RunConfig.from_dict(
        load_config_file(path), source=str(path), base_dir=path.resolve().parent
    )
