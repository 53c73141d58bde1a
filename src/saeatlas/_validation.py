"""Checks shared by every config: one rule for each kind of setting, one message style.

Configs call these from ``__post_init__`` (and ``from_json``), so a bad value is
refused where it enters, whichever way it came (flag, YAML, JSON, Python):

- :func:`check_types`: every field holds a value of its annotated type (``k: "eight"``
  and ``lr: .nan`` are refused here: every float must be finite);
- :func:`choice`, :func:`in_range`, :func:`positive`, :func:`non_negative`: allowed
  values and ranges;
- :func:`known_keys`: no unknown keys in a dict read from a file, and :func:`unique_keys`
  no key given twice in one object of a JSON file;
- :func:`check_device`: a device name torch knows and this machine has.
"""

from __future__ import annotations

import json
import math
import numbers
import os
import reprlib
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import fields
from typing import Any

import numpy as np

from .errors import ConfigError

_SHOWN = reprlib.Repr()
_SHOWN.maxlevel, _SHOWN.maxlist, _SHOWN.maxdict, _SHOWN.maxstring = 2, 8, 8, 80


def shown(value: Any) -> str:
    """``value``'s repr, cut short for a message: a YAML alias can nest millions of
    items in a few lines, whose full repr took minutes and filled the terminal."""
    return _SHOWN.repr(value)


def check_float_range(name: str, value: Any) -> None:
    """Refuse ``value``, a number as typed (a flag's word, a config's text), that is beyond
    a float's range (`1e400`): read as infinity, its refusal showed "got inf", a value
    nobody typed. ``name`` is the flag or the field as the message names it."""
    if not isinstance(value, str) or "inf" in value.lower():
        return
    try:
        too_large = math.isinf(float(value))
    except ValueError:
        return
    if too_large:
        most = float(np.finfo(np.float64).max)
        raise ConfigError(
            f"{name} {value} is beyond the largest number a float holds ({most:.1e})."
        )


def _where(name: str, flag: str | None) -> str:
    return f"`{name}`" + (f" ({flag})" if flag else "")


def choice(name: str, value: Any, allowed: Iterable[Any], *, flag: str | None = None) -> None:
    """``value`` must be one of ``allowed``."""
    allowed = list(allowed)
    if value not in allowed:
        raise ConfigError(
            f"Unknown {_where(name, flag)} {shown(value)}; expected one of: {allowed}."
        )


def in_range(
    name: str,
    value: Any,
    low: float = -math.inf,
    high: float = math.inf,
    *,
    open_low: bool = False,
    open_high: bool = False,
    flag: str | None = None,
) -> None:
    """``value`` (skipped when None) must lie between ``low`` and ``high`` (each end
    included unless ``open_low`` / ``open_high``); ``flag``: the command-line flag that
    sets it, named beside ``name``."""
    if value is None:
        return
    ok = (value > low if open_low else value >= low) and (
        value < high if open_high else value <= high
    )
    if ok:
        return
    # an integer bound exactly: 2**32 was refused as outside "[0, 4.29497e+09]", which
    # reads as holding it
    low_, high_ = (str(b) if isinstance(b, int) else f"{b:g}" for b in (low, high))
    if high == math.inf:
        rule = "positive" if (low == 0 and open_low) else f"{'>' if open_low else '>='} {low_}"
    else:
        rule = f"in {'(' if open_low else '['}{low_}, {high_}{')' if open_high else ']'}"
    # an integer of 400 digits (1e400 in a JSON config) is cut short
    got = shown(value) if isinstance(value, int) else value
    raise ConfigError(f"{_where(name, flag)} must be {rule}, got {got}.")


def positive(obj: Any, *names: str) -> None:
    """Each named field of ``obj`` (skipped when None) must be > 0."""
    for name in names:
        in_range(name, getattr(obj, name), 0, open_low=True)


def non_negative(obj: Any, *names: str) -> None:
    """Each named field of ``obj`` (skipped when None) must be >= 0."""
    for name in names:
        in_range(name, getattr(obj, name), 0)


def known_keys(what: str, d: Any, known: Iterable[str]) -> None:
    """``d`` must be a mapping whose keys are all in ``known``."""
    if not isinstance(d, Mapping):
        raise ConfigError(f"{what} must be a mapping of settings, got {type(d).__name__}.")
    known = sorted(known)
    unknown = sorted(str(k) for k in d if k not in known)
    if unknown:
        raise ConfigError(f"Unknown {what} {unknown}; known: {known}.")


def unique_keys(pairs: list[tuple[str, Any]], file: str = "") -> dict[str, Any]:
    """``json.loads``'s ``object_pairs_hook`` for files saeatlas reads back: a key given
    twice in one object (of ``file``, named in the message) raises ``ValueError`` (JSON
    parsers keep the last or the first, so two tools would read two files)."""
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            where = f" of {file}" if file else ""
            raise ValueError(f"the key {key!r} is given twice in one object{where}; keep one")
        obj[key] = value
    return obj


def strict_json(text: str, file: str = "") -> Any:
    """``json.loads`` for files saeatlas reads (its own and the user's): a key given twice
    in one object (:func:`unique_keys`) and values nested past Python's stack raise
    ``ValueError``, as bad JSON, a number of more than 4,300 digits and bad UTF-8 do
    (a ``RecursionError`` ended the reader in a traceback)."""
    try:
        return json.loads(text, object_pairs_hook=lambda pairs: unique_keys(pairs, file))
    except RecursionError:
        raise ValueError("it is nested too deeply") from None
    except ValueError as e:  # in plain words, not "use sys.set_int_max_str_digits()"
        if str(e).startswith("Exceeds the limit"):
            raise ValueError("it holds a number of more than 4,300 digits") from None
        raise


def _matches(value: Any, hint: Any) -> bool:
    """Whether ``value`` is of the annotated type ``hint`` (the types configs use)."""
    if hint is Any:
        return True
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    # numpy's scalars count (a Python caller may pass np.int64(8)), bools do not
    if hint is int:
        return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))
    if hint is float:
        return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))
    if hint is str:
        return isinstance(value, str)
    if origin is tuple:
        args = typing.get_args(hint)
        if not isinstance(value, (tuple, list)):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_matches(v, args[0]) for v in value)
        return len(args) == len(value) and all(_matches(v, a) for v, a in zip(value, args))
    if origin is dict:
        return isinstance(value, dict)
    if isinstance(hint, type):
        return isinstance(value, hint)
    return True  # a type these checks do not know: its own validation decides


def _type_name(hint: Any) -> str:
    name = str(hint).replace("typing.", "").replace("<class '", "").replace("'>", "")
    return name.replace("NoneType", "None")


def check_types(obj: Any) -> None:
    """Every field of the dataclass ``obj`` holds a value of its annotated type, every
    float (anywhere in it) is finite and every integer within 64 bits. NumPy scalars become Python numbers (so
    the config writes to JSON)."""
    hints = typing.get_type_hints(type(obj))
    for f in fields(obj):
        value = getattr(obj, f.name)
        hint = hints.get(f.name, Any)
        if not _matches(value, hint):
            raise ConfigError(
                f"`{f.name}` must be {_type_name(hint)}, got {shown(value)} ({type(value).__name__})."
            )
        if isinstance(value, np.generic):
            value = value.item()
            object.__setattr__(obj, f.name, value)
        if isinstance(value, list) and _tuple_hint(hint):
            # a list stayed one: `AtlasConfig(resolutions=[0.5, 1.0])` ran the analysis
            # half-way and ended in "unhashable type: 'list'", and `TrainConfig(layers=
            # ["1"])` differed from its own record (a tuple), so its resume refused the SAEs
            value = tuple(v.item() if isinstance(v, np.generic) else v for v in value)
            object.__setattr__(obj, f.name, value)
        for v in value if isinstance(value, (tuple, list)) else (value,):
            if (
                isinstance(v, float)
                and not math.isfinite(v)
                or (isinstance(v, np.floating) and not np.isfinite(v))
            ):
                raise ConfigError(f"`{f.name}` must be a finite number, got {v}.")
            # counts, sizes and seeds live in 64-bit tensors and files: 10**400 ended in
            # an OverflowError traceback (`--shard-rows`, `d_sae`), 10**30 `--tokens` in a
            # run that never ended
            if isinstance(v, int) and not isinstance(v, bool) and not -(2**63) <= v < 2**63:
                raise ConfigError(
                    f"`{f.name}` must be an integer of at most 64 bits (below 2**63), got "
                    f"{shown(v)}."
                )


def _tuple_hint(hint: Any) -> bool:
    """Whether the annotated type ``hint`` is a tuple (or a union holding one)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return any(_tuple_hint(h) for h in typing.get_args(hint))
    return typing.get_origin(hint) is tuple


def check_path_argument(name: str, value: Any, *, optional: bool = False) -> None:
    """``value`` (the Python argument ``name``; None too when ``optional``) is a path: a
    number there ended in pathlib's "expected str, bytes or os.PathLike object"."""
    if not (isinstance(value, (str, os.PathLike)) or (optional and value is None)):
        raise ConfigError(f"`{name}` must be a path (str or pathlib.Path), got {shown(value)}.")
    # no system takes one in a path: Python's "embedded null byte" ValueError
    if isinstance(value, (str, os.PathLike)) and "\0" in os.fsdecode(os.fspath(value)):
        raise ConfigError(f"`{name}` holds a NUL character, which no path can: {shown(value)}.")


def check_json_argument(name: str, value: Any) -> None:
    """``value`` (the Python argument ``name``; None too) is a dict that JSON can write,
    and read back as it was written: a capture's ``provenance`` of a NumPy number ended
    the capture, after its work, at the manifest it goes into, and one of the keys 1 and
    "1" (one key in JSON) or nested past Python's stack made a store every reader refused."""
    if value is None:
        return
    try:
        if not isinstance(value, dict):
            raise TypeError(f"a {type(value).__name__}, not a dict")
        strict_json(json.dumps(value, allow_nan=False))
    except RecursionError:
        raise ConfigError(f"`{name}` is nested too deeply for JSON.") from None
    except (TypeError, ValueError) as e:
        raise ConfigError(
            f"`{name}` must be a dict of JSON values (text, finite numbers, true/false, "
            f"lists, dicts): {e}."
        ) from None


def check_config_argument(name: str, value: Any, kind: type, *, reader: str = "") -> None:
    """``value`` (the Python argument ``name``) is a ``kind`` (a config dataclass): a dict
    there ended in an AttributeError, and the class itself in a TypeError. ``reader``: the
    function that reads such a config from a file, named when a path was given."""
    if not isinstance(value, kind):
        got = "the class itself" if value is kind else type(value).__name__
        if reader and isinstance(value, (str, os.PathLike)):
            got, how = f"the path {shown(os.fspath(value))}", f"{reader}(path)"
        else:
            how = f"{kind.__name__}(**settings) for a dict"
        raise ConfigError(
            f"`{name}` must be a {kind.__name__}, got {got}: pass {kind.__name__}(...) (or {how})."
        )


def check_flag_argument(name: str, value: Any) -> None:
    """``value`` (the Python argument ``name``) is True or False: any other value was read
    by its truth, so ``overwrite="no"`` replaced what it named."""
    if not isinstance(value, (bool, np.bool_)):
        raise ConfigError(f"`{name}` must be True or False, got {shown(value)}.")


def check_flag_arguments(**flags: Any) -> None:
    """:func:`check_flag_argument` of each ``name=value``."""
    for name, value in flags.items():
        check_flag_argument(name, value)


def check_device(name: str, value: Any, *, flag: str | None = None) -> None:
    """``value`` (skipped when None) names a device torch knows and this machine has;
    a refusal names the devices there are."""
    if value is None:
        return
    import torch

    try:
        dev = torch.device(value)
    except (RuntimeError, TypeError, ValueError):
        raise ConfigError(
            f"Unknown {_where(name, flag)} {shown(value)}; expected a torch device such as 'cpu', "
            f"'cuda' or 'cuda:1' (this machine has: {_devices()})."
        ) from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(
                f"{_where(name, flag)} is {value!r} but this machine has no CUDA device (or "
                f"torch was built without CUDA); use one it has: {_devices()}."
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(
                f"{_where(name, flag)} is {value!r} but this machine has "
                f"{torch.cuda.device_count()} CUDA device(s): {_devices()}."
            )
    elif dev.type == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise ConfigError(
                f"{_where(name, flag)} is {value!r} but MPS is not available here; use one of: "
                f"{_devices()}."
            )
    elif dev.type != "cpu":
        raise ConfigError(
            f"{_where(name, flag)} {value!r} is not supported; use one of: {_devices()}."
        )
    elif dev.index not in (None, 0):  # torch runs 'cpu:1' on the one CPU device
        raise ConfigError(
            f"{_where(name, flag)} is {value!r} but torch has one CPU device, 'cpu'; use one "
            f"of: {_devices()}."
        )


def _devices() -> str:
    """The devices of this machine that torch can use, for a message."""
    import torch

    names = ["cpu"]
    if torch.cuda.is_available():
        names += ["cuda", *(f"cuda:{i}" for i in range(torch.cuda.device_count()))]
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        names.append("mps")
    return ", ".join(repr(n) for n in names)
