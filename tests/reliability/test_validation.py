"""The shared config checks (``saeatlas._validation``) on every config that uses them."""

from __future__ import annotations

import math

import numpy as np
import pytest

from saeatlas.capture import CaptureConfig
from saeatlas.errors import ConfigError
from saeatlas.sae import SAEConfig
from saeatlas.structure import AtlasConfig
from saeatlas.train import TrainConfig

CONFIGS = [TrainConfig, SAEConfig, AtlasConfig, CaptureConfig]


@pytest.mark.parametrize("cls", CONFIGS)
def test_every_float_field_must_be_finite(cls):
    from dataclasses import fields

    floats = [f.name for f in fields(cls) if "float" in str(f.type) and "tuple" not in str(f.type)]
    assert floats or cls is CaptureConfig
    for name in floats:
        for bad in (math.nan, math.inf, -math.inf):
            with pytest.raises(ConfigError, match=f"`{name}` must be a finite number"):
                cls(**{name: bad})


@pytest.mark.parametrize("cls", CONFIGS)
def test_every_int_field_refuses_text_floats_and_bools(cls):
    from dataclasses import fields

    ints = [
        f.name for f in fields(cls) if str(f.type).startswith("int") and "str" not in str(f.type)
    ]
    assert ints
    for name in ints:
        for bad in ("8", 2.5, True):
            with pytest.raises(ConfigError, match=f"`{name}` must be int"):
                cls(**{name: bad})


def test_numpy_scalars_are_accepted_and_become_python_numbers():
    cfg = TrainConfig(k=np.int64(8), lr=np.float32(0.5))
    assert type(cfg.k) is int and type(cfg.lr) is float
    assert TrainConfig.from_json(cfg.to_json()) == cfg


@pytest.mark.parametrize("cls", [TrainConfig, AtlasConfig])
def test_from_json_refuses_unknown_keys(cls):
    with pytest.raises(ConfigError, match="Unknown .* \\['colour'\\]"):
        cls.from_json({"colour": "red"})
