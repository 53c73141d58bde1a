"""``TrainConfig``: how an SAE is trained. Each field's docstring is its ``--help``."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar

from .._validation import (
    check_device,
    check_types,
    choice,
    in_range,
    known_keys,
    non_negative,
    positive,
)
from ..errors import ConfigError
from ..sae.architectures import ARCHITECTURES, get_architecture

NORMALIZATIONS = ("unit", "layer", "none")
DECAYS = ("linear", "cosine", "none")
AUTOCASTS = ("none", "bf16", "fp16")
SELECT_DTYPES = ("auto", "float32", "bfloat16")
OPTIMIZERS = ("signum", "adam")
B_DEC_INITS = ("geometric_median", "mean", "zeros")
FLOAT32_MAX = 3.4e38
#: float32's smallest subnormal number (2**-149): half of it or less is 0 in float32.
FLOAT32_TRUE_MIN = 2.0**-149


#: Settings that only some architectures or optimisers read: ``field -> (which of the
#: two, the values that read it)``. Given for another, they change nothing.
READ_BY: dict[str, tuple[str, tuple[str, ...]]] = {
    "k": ("architecture", ("topk", "batchtopk")),
    "auxk_coefficient": ("architecture", ("topk", "batchtopk")),
    "auxk_k": ("architecture", ("topk", "batchtopk")),
    "select_dtype": ("architecture", ("topk",)),
    # TopK's sparse kernels compute the chosen latents and every gradient in the
    # weights' precision (its selection product's is `select_dtype`), so autocast
    # changed nothing there, on a CPU or a GPU; the dense products of the others it casts
    "autocast": ("architecture", ("relu", "jumprelu", "batchtopk")),
    # TopK trains through its sparse kernels, not through the (compiled) module
    "compile": ("architecture", ("relu", "jumprelu", "batchtopk")),
    "l1_coefficient": ("architecture", ("relu",)),
    "l0_coefficient": ("architecture", ("jumprelu",)),
    "jumprelu_bandwidth": ("architecture", ("jumprelu",)),
    "jumprelu_init_threshold": ("architecture", ("jumprelu",)),
    "sparsity_warmup_steps": ("architecture", ("relu", "jumprelu")),
    "lr_decay": ("optimizer", ("adam",)),
    "lr_decay_start": ("optimizer", ("adam",)),
}


def unread_settings(cfg: TrainConfig, given: Iterable[str]) -> list[str]:
    """Of the settings ``given`` (by the user), those ``cfg``'s architecture or
    optimiser does not read, each as a sentence naming who reads it."""
    out = []
    for name in sorted(set(given) & set(READ_BY)):
        which, readers = READ_BY[name]
        if getattr(cfg, which) not in readers:
            out.append(
                f"`{name}` is read only with {which} {' or '.join(readers)}, not "
                f"{getattr(cfg, which)}: it changes nothing here"
            )
    return out


@dataclass(frozen=True)
class TrainConfig:
    """Training settings; the SAE's own shape comes from here and the store."""

    #: The allowed values of settings that name a registered kind (``--help`` lists them).
    CHOICES: ClassVar[dict[str, tuple[str, ...]]] = {"architecture": ARCHITECTURES}

    architecture: str = "topk"
    """SAE family."""
    d_sae: int | None = None
    """Number of latents (default: `expansion_factor` x the input width)."""
    expansion_factor: int = 8
    """Latents per input unit when `d_sae` is not given."""
    k: int = 32
    """Active latents per row (topk) or on average per row (batchtopk)."""
    l1_coefficient: float = 5.0
    """L1 penalty weight (relu)."""
    l0_coefficient: float = 1e-3
    """L0 penalty weight (jumprelu)."""
    jumprelu_bandwidth: float = 1e-3
    """Kernel width of the threshold pseudo-derivative (jumprelu)."""
    jumprelu_init_threshold: float = 1e-3
    """Initial threshold (jumprelu)."""
    layers: tuple[str, ...] = ()
    """Store layers to train on; all of them (a joint multi-layer SAE) by default."""
    normalize: str = "unit"
    """Input normalisation: unit (standardise each unit), layer (centre, one scale per
    layer so each layer's mean squared norm equals its width) or none."""
    tokens: int | None = None
    """Training budget in rows; several passes when the store is smaller
    (default: 50 passes, and at least 2M rows or 500 steps, whichever is fewer)."""
    batch_size: int | None = None
    """Rows per optimiser step (default: 4096, or a quarter of the rows to train on
    when the store is smaller than 16384 rows)."""
    heldout_rows: int = 0
    """Rows at the end of the store never trained on (for held-out evaluation)."""
    optimizer: str = "signum"
    """signum (sign descent with schedule-free averaging, Bernstein et al. 2018 and
    Defazio et al. 2024, as in EleutherAI's sparsify) or adam (with `lr_decay`)."""
    lr: float | None = None
    """Learning rate (default: 5e-3 / sqrt(d_sae / 2^14) for signum, as in sparsify;
    2e-4 / sqrt(d_sae / 2^14) for adam, Gao et al. 2024)."""
    lr_warmup_steps: int | None = None
    """Linear warmup of the learning rate, in steps, at most the run's (default: 100, or
    5% of the steps when that is fewer, so that short runs are not spent warming up)."""
    lr_decay: str = "linear"
    """Learning-rate decay after `lr_decay_start` (adam): linear, cosine or none."""
    lr_decay_start: float = 0.8
    """Fraction of training after which the learning rate decays."""
    sparsity_warmup_steps: int | None = None
    """Linear warmup of the L1/L0 coefficient, at most the run's steps (default: 5% of
    the steps)."""
    auxk_coefficient: float = 1 / 32
    """Weight of the AuxK dead-latent loss (topk, batchtopk)."""
    auxk_k: int | None = None
    """Dead latents used by AuxK (default: half the input width)."""
    dead_window: int = 1_000_000
    """A latent that has not fired for this many rows is dead."""
    b_dec_init: str = "geometric_median"
    """Initial decoder bias: geometric_median, mean or zeros."""
    grad_clip: float = 1.0
    """Gradient-norm clipping (0 turns it off)."""
    seed: int = 0
    """Seed for initialisation (and data order, unless `data_seed` is given)."""
    data_seed: int | None = None
    """Seed of the data order (default: `seed`). SAEs trained like one another with
    other seeds (`saeatlas train --seeds N`) keep its data order, so that each is the same
    SAE whether trained together, one by one or resumed."""
    device: str = "cpu"
    """Device to train on (cpu, cuda, cuda:1...)."""
    autocast: str = "none"
    """Mixed precision of the dense products (relu, jumprelu, batchtopk; on CPUs too):
    none, bf16 or fp16. TopK's sparse kernels keep full precision (see `select_dtype`)."""
    select_dtype: str = "auto"
    """Precision of the dense encoder product that only chooses each row's top-k
    latents (topk): float32, bfloat16, or auto (bfloat16 on GPUs and on CPUs with
    native bf16 matmul). The chosen latents' values and all gradients stay in full
    precision."""
    compile: bool = False
    """Compile the SAE with torch.compile (relu, jumprelu, batchtopk: TopK trains through
    its own sparse kernels)."""
    log_every: int = 50
    """Steps between metric records."""
    tensorboard: bool = False
    """Also write the metrics as TensorBoard events to OUT/tensorboard (needs the
    `tensorboard` package: pip install "saeatlas[tensorboard]")."""
    checkpoint_every: int = 0
    """Steps between checkpoints (0: none); a checkpointed run continues with --resume."""

    def __post_init__(self) -> None:
        check_types(self)
        choice("architecture", self.architecture, self.CHOICES["architecture"])
        choice("normalize", self.normalize, NORMALIZATIONS)
        choice("lr_decay", self.lr_decay, DECAYS)
        choice("autocast", self.autocast, AUTOCASTS)
        choice("b_dec_init", self.b_dec_init, B_DEC_INITS)
        choice("select_dtype", self.select_dtype, SELECT_DTYPES)
        choice("optimizer", self.optimizer, OPTIMIZERS)
        positive(self, "k", "expansion_factor", "dead_window", "log_every")
        positive(self, "d_sae", "tokens", "batch_size", "auxk_k", "lr")
        if self.batch_size == 1:
            raise ConfigError(
                "`batch_size` (--batch-size) must be at least 2, got 1: the loss divides by the "
                "batch's variance, which one row does not have."
            )
        # torch's random generators take 64-bit seeds
        in_range("seed", self.seed, 0, 2**63 - 1)
        in_range("data_seed", self.data_seed, 0, 2**63 - 1)
        positive(self, "jumprelu_bandwidth", "jumprelu_init_threshold")
        non_negative(self, "heldout_rows", "lr_warmup_steps", "checkpoint_every")
        non_negative(self, "sparsity_warmup_steps", "seed", "grad_clip", "auxk_coefficient")
        non_negative(self, "l1_coefficient", "l0_coefficient")
        for name in (
            "l1_coefficient",
            "l0_coefficient",
            "auxk_coefficient",
            "jumprelu_bandwidth",
            "jumprelu_init_threshold",
            # 0 turns clipping off, but 1e-46 (0 in float32) clipped every gradient to 0,
            # and a learning rate of 1e-46 took steps of 0: the run trained nothing
            "grad_clip",
            "lr",
        ):
            if getattr(self, name) is None:  # the default learning rate
                continue
            # beyond float32 the penalty is inf: every member of a sweep of 1e40 and 2e40
            # trained as the same SAE, without a word (a threshold of 1e39 was saved as inf,
            # and every reader refused the SAE as broken)
            above_0 = name.startswith("jumprelu") or name == "lr"
            in_range(name, getattr(self, name), 0, FLOAT32_MAX, open_low=above_0)
            # 0 in float32: `l1_coefficient` 1e-320 trained with no penalty, a threshold of
            # 1e-46 was 0 for good (its logarithm's exp), a ReLU SAE saved as a JumpReLU one,
            # and `lr` 1e-50 left every weight as it was initialised
            if 0 < getattr(self, name) <= FLOAT32_TRUE_MIN / 2:
                raise ConfigError(
                    f"`{name}` ({getattr(self, name)!r}) is 0 in float32, the precision the "
                    f"SAE is trained in; give {'' if above_0 else '0 or '}at least "
                    f"{FLOAT32_TRUE_MIN:.2g}."
                )
        in_range("lr_decay_start", self.lr_decay_start, 0, 1)
        if self.d_sae is not None and get_architecture(self.architecture).topk_family:
            if self.k > self.d_sae:
                raise ConfigError(
                    f"`k` ({self.k}) cannot exceed `d_sae` ({self.d_sae}): a TopK SAE keeps k of "
                    "its d_sae latents per row. Lower `k` (--k) or raise `d_sae` (--d-sae)."
                )
        if isinstance(self.layers, str):
            raise ConfigError("`layers` must be a list of layer names, not one string.")
        repeated = sorted({name for name in self.layers if self.layers.count(name) > 1})
        if repeated:  # the SAE would read the same units twice
            raise ConfigError(
                f"`layers` (--layers) names {repeated} more than once; name each once."
            )
        check_device("device", self.device, flag="--device")
        if self.data_seed is None:  # replace(cfg, seed=...) keeps the data order
            object.__setattr__(self, "data_seed", self.seed)

    def sae_settings(self, d_sae: int) -> dict[str, Any]:
        """The settings of the SAE this training makes with ``d_sae`` latents (its
        ``SAEConfig`` less ``d_in`` and ``layers``); ``k`` is unused outside the TopK
        family."""
        return {
            "architecture": self.architecture,
            "d_sae": d_sae,
            "k": min(self.k, d_sae),
            "l1_coefficient": self.l1_coefficient,
            "l0_coefficient": self.l0_coefficient,
            "jumprelu_bandwidth": self.jumprelu_bandwidth,
            "jumprelu_init_threshold": self.jumprelu_init_threshold,
        }

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["layers"] = list(self.layers)
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> TrainConfig:
        known_keys("training settings", d, [f.name for f in fields(cls)])
        # `layers` is checked, then made a tuple, by __post_init__ ("ab" was read as the
        # layers 'a' and 'b', and a dict as its keys)
        return cls(**d)

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=2) + "\n"
