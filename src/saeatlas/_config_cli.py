"""CLI flags made from config dataclasses: one ``--field-name`` per field, with the
field's docstring as its help (as sparsify does), plus ``--config FILE.yaml``.

Precedence: the dataclass defaults, then the YAML/JSON file, then the flags
actually given on the command line.
"""

from __future__ import annotations

import ast
import inspect
import json
import types
import typing
from dataclasses import fields
from pathlib import Path
from typing import Any

import typer
import yaml

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
        help_text = f"{docs.get(f.name, '')} [config: {f.name}; default: {f.default!r}]"
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


def load_config_file(path: Path | None) -> dict[str, Any]:
    """Settings from a YAML or JSON file (a mapping of field names to values)."""
    if path is None:
        return {}
    if not path.is_file():
        raise ConfigError(f"Config file '{path}' does not exist.")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"Config file '{path}' is not valid YAML: {e}") from e
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"Config file '{path}' must hold a mapping of settings, not {type(data).__name__}."
        )
    return data


def build_config(cls: type, config_file: Path | None, flags: dict[str, Any]) -> Any:
    """Defaults ← file ← given flags, validated by the dataclass itself."""
    data = load_config_file(config_file)
    data.update({k: v for k, v in flags.items() if v is not None})
    if hasattr(cls, "from_json"):
        return cls.from_json(json.loads(json.dumps(data)))
    return cls(**data)
