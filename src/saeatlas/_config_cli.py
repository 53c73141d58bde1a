"""CLI flags made from config dataclasses: one ``--field-name`` per field, with the
field's docstring as its help (as sparsify does), plus ``--config FILE.yaml``.

Precedence: the dataclass defaults, then the YAML/JSON file, then the flags
actually given on the command line.
"""

from __future__ import annotations

import ast
import decimal
import difflib
import inspect
import re
import types
import typing
from dataclasses import fields
from pathlib import Path
from typing import Any

import typer

from ._config_file import load_config_file
from ._config_words import describe_type, yaml_hint
from ._validation import check_float_range, shown
from .errors import ConfigError


def field_docs(cls: type) -> dict[str, str]:
    """The docstring written under each field of a dataclass, by field name."""
    tree = ast.parse(inspect.getsource(cls))
    body = tree.body[0].body
    docs = {}
    for node, nxt in zip(body, body[1:]):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(nxt, ast.Expr)
            and isinstance(getattr(nxt, "value", None), ast.Constant)
            and isinstance(nxt.value.value, str)
        ):
            docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


def _base_type(annotation: Any) -> tuple[type, bool]:
    """``(element type, is_sequence)`` of a field annotation such as ``int | None``."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _base_type(args[0])
    if origin in (tuple, list):
        return typing.get_args(annotation)[0], True
    return annotation, False


def config_parameters(cls: type) -> list[inspect.Parameter]:
    """Keyword parameters, one per field, all defaulting to ``None`` (= not given)."""
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    params = []
    for f in fields(cls):
        base, seq = _base_type(hints[f.name])
        flag = "--" + f.name.replace("_", "-")
        allowed = getattr(cls, "CHOICES", {}).get(f.name)
        one_of = f" One of: {', '.join(allowed)}." if allowed else ""
        help_text = f"{docs.get(f.name, '')}{one_of} [config: {f.name}; default: {f.default!r}]"
        if base is bool:
            option = typer.Option(
                None, f"{flag}/--no-{flag[2:]}", help=help_text, show_default=False
            )
            annotation: Any = bool | None
        else:
            option = typer.Option(None, flag, help=help_text, show_default=False)
            annotation = list[base] | None if seq else base | None
        params.append(
            inspect.Parameter(
                f.name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=annotation
            )
        )
    return params


def build_config(
    cls: type, config_file: Path | None, flags: dict[str, Any], section: str = ""
) -> Any:
    """Defaults ← file ← given flags, read as :func:`config_from_mapping` reads a run
    config's sections (so a file's errors name the field, the value and the fix).

    A ``saeatlas run`` config as the file gives its ``section`` (``train``, ``analyze``).
    """
    data = given_settings(config_file, flags, section)
    given = frozenset(k for k, v in flags.items() if v is not None)
    source = str(config_file) if config_file else ""
    return config_from_mapping(cls, data, source=source, flags=given)


def given_settings(
    config_file: Path | None, flags: dict[str, Any], section: str = ""
) -> dict[str, Any]:
    """The settings a user gave (the file's, or its ``section``, then the flags given),
    before the defaults fill in the rest: what :func:`build_config` builds from."""
    data = load_config_file(config_file)
    # a run config (it names the model or inputs) without that section, or with `train:`
    # left empty, gives the section's defaults, as the run does: its `model` was refused
    # as an unknown key of the section's settings
    if section and (isinstance(data.get(section), dict) or {"model", "inputs"} & set(data)):
        _check_run_config_keys(data, section, config_file)
        part = data.get(section)
        if part is not None and not isinstance(part, dict):
            raise ConfigError(
                f"{config_file}: `{section}` must be a mapping of settings, got "
                f"{type(part).__name__} {shown(part)}."
            )
        data = dict(part or {})
    data.update({k: v for k, v in flags.items() if v is not None})
    return data


def _check_run_config_keys(data: dict[str, Any], section: str, path: Path | None) -> None:
    """A file read for its ``section`` is a ``saeatlas run`` config: a key at its top
    level that such a config does not have (``tokens`` beside ``train:``) would be
    dropped without a word."""
    from .pipeline.config import RunConfig  # the run's config is built on this module

    known = {f.name for f in fields(RunConfig)}
    unknown = [k for k in data if k not in known]
    if unknown:
        raise ConfigError(
            f"{path}: {_names(unknown)} at the top level of a `saeatlas run` config (this "
            f"command reads its `{section}:` section), where the run knows no such key; move "
            f"it into `{section}:`, or give a file of {section} settings alone."
        )


def _names(keys: list[Any]) -> str:
    return ", ".join(f"`{k}`" for k in keys) + (" is" if len(keys) == 1 else " are")


def unread_section(
    config_file: Path | None,
    section: str,
    command: str,
    flags: dict[str, Any],
    names: dict[str, tuple[str, str]] | None = None,
) -> None:
    """Refuse a run config whose ``section`` gives a setting another value than the
    command's flag of that name (``flags``: name -> the flag's value; ``names``: name ->
    the flag and its value as said, where the flag is named otherwise): ``saeatlas sweep
    --config run.yaml`` reads the ``train:`` section, and swept k (its default --over)
    beside a ``sweep:`` section of ``over: l1_coefficient``, without a word (and
    ``analyze`` the ``analyze:`` section, ablating and training seed SAEs by its flags
    beside ``ablation:`` and ``stability:`` sections of other settings)."""
    data = load_config_file(config_file)
    part = data.get(section) if isinstance(data, dict) else None
    if not isinstance(part, dict):
        return
    for key, value in flags.items():
        given = part.get(key)
        same = (
            list(given) == list(value)
            if isinstance(given, list) and isinstance(value, (list, tuple))
            else given == value
        )
        if key in part and not same:
            flag, said = (names or {}).get(key, ("--" + key.replace("_", "-"), shown(value)))
            raise ConfigError(
                f"{config_file}: its `{section}:` section gives `{key}` {shown(given)}, but "
                f"saeatlas {command} takes it from {flag} ({said}), not from the "
                f"file; give {flag} as the section does, or drop `{key}` from `{section}:`."
            )


# -- configs read from mappings (YAML sections of `saeatlas run`) ----------------------------


def _coerce(annotation: Any, value: Any) -> Any:
    """``value`` as ``annotation`` (lists become tuples), or ``TypeError``."""
    origin = typing.get_origin(annotation)
    if annotation is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        for arm in typing.get_args(annotation):
            if arm is type(None):
                if value is None:
                    return None
                continue
            try:
                return _coerce(arm, value)
            except TypeError:
                continue
        raise TypeError
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise TypeError
        item = typing.get_args(annotation)[0]
        return tuple(_coerce(item, v) for v in value)
    if origin is dict or annotation is dict:
        if not isinstance(value, dict):
            raise TypeError
        return dict(value)
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise TypeError
    if annotation is int:
        if isinstance(value, bool):
            raise TypeError
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):  # YAML 1.1 reads 2e3 (no dot) as text, as it does 1e-3
            try:
                exact = decimal.Decimal(value.strip())
            except decimal.InvalidOperation:
                raise TypeError from None
            if exact.is_finite() and exact == exact.to_integral_value():
                return int(exact)
        raise TypeError
    if annotation is float:
        if isinstance(value, bool):
            raise TypeError
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as text
            try:
                return float(value)
            except ValueError:
                raise TypeError from None
        raise TypeError
    if annotation is str:
        if isinstance(value, str):
            return value
        raise TypeError
    return value


def _qualify(message: str, names: set[str], where: str) -> str:
    """Name fields as ``where.field`` in a message from a config's own validation."""
    if not where:
        return message
    return re.sub(
        r"`([A-Za-z_][A-Za-z0-9_]*)`",
        lambda m: f"`{where}.{m.group(1)}`" if m.group(1) in names else m.group(0),
        message,
    )


def config_from_mapping(
    cls: type,
    data: Any,
    where: str = "",
    *,
    source: str = "",
    skip: tuple[str, ...] = (),
    flags: frozenset[str] = frozenset(),
) -> Any:
    """A ``cls`` dataclass from a mapping read from YAML/JSON, validated.

    Every error names the field as ``where.field`` (``train.k``), the bad value and
    what is allowed: unknown keys (with the closest known one), values of the wrong
    type, and whatever the dataclass's own ``__post_init__`` rejects. ``source``
    (a file name) prefixes the message; fields in ``skip`` are not accepted from
    the mapping (they are set by the caller). Fields in ``flags`` came from the
    command line: an error about them names the flag (``--k``), and the file only
    when one of its settings is part of the error.
    """
    prefix = f"{source}: " if source else ""
    label = f"`{where}`" if where else "the config"
    if data is None:
        data = {}
    if not isinstance(data, dict):
        # `ablation: true` (or `sweep: false`) was told only that it is no mapping
        on_off = isinstance(data, bool) and "enabled" in {f.name for f in fields(cls)}
        hint = (
            f" To turn it {'on' if data else 'off'}, write `{where}: {{enabled: {str(data).lower()}}}`."
            if on_off
            else ""
        )
        raise ConfigError(
            f"{prefix}{label} must be a mapping of settings, got {type(data).__name__} {shown(data)}.{hint}"
        )
    hints = typing.get_type_hints(cls)
    known = [f.name for f in fields(cls) if f.name not in skip]
    for key in data:
        if key not in known:
            name = f"{where}.{key}" if where else str(key)
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f" Did you mean `{close[0]}`?" if close else ""
            raise ConfigError(
                f"{prefix}unknown key `{name}`.{hint} Known keys of {label}: {sorted(known)}."
            )
    values = {}
    for key, value in data.items():
        name = f"{where}.{key}" if where else key
        if _base_type(hints[key])[0] is float:  # an integer setting says "at most 64 bits"
            for item in value if isinstance(value, (list, tuple)) else [value]:
                check_float_range(_flag(key) if key in flags else f"{prefix}`{name}`", item)
        try:
            values[key] = _coerce(hints[key], value)
        except TypeError:
            if key in flags:
                raise ConfigError(
                    f"{_flag(key)} must be {describe_type(hints[key])}, got {shown(value)}."
                ) from None
            raise ConfigError(
                f"{prefix}`{name}` must be {describe_type(hints[key])}, got {shown(value)}."
                + yaml_hint(hints[key], value)
            ) from None
    try:
        return cls(**values)
    except ValueError as e:  # ConfigError, or a plain ValueError of a dataclass
        message = str(e)
        named = set(re.findall(r"`([A-Za-z_][A-Za-z0-9_]*)`", message)) & set(known)
        if named & flags:  # a flag's value is (part of) what is wrong: name the flag
            message = re.sub(  # `k` (--k) -> --k
                r"`([A-Za-z_][A-Za-z0-9_]*)`(?: \((--[a-z0-9-]+)\))?",
                lambda m: (
                    _flag(m.group(1))
                    if m.group(1) in flags and m.group(2) in (None, _flag(m.group(1)))
                    else m.group(0)
                ),
                message,
            )
        # the file is named only when it set a setting the error names: `k` (32, the
        # default) above --d-sae 16 was blamed on a file that set only `lr`
        if named and not named & (set(values) - flags):
            prefix = ""
        raise ConfigError(prefix + _qualify(message, set(known), where)) from None


def _flag(field: str) -> str:
    """The command-line flag of a config field (``d_sae`` -> ``--d-sae``)."""
    return "--" + field.replace("_", "-")
