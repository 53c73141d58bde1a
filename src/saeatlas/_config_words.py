"""How a config field's type, and a value of another type, read in an error message
(the YAML sections of `saeatlas run` and `--config` files)."""

from __future__ import annotations

import types
import typing
from typing import Any

from ._config_file import base60

_TYPE_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "text"}


def describe_type(annotation: Any) -> str:
    """How a field's type reads in an error message."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(
            "null" if a is type(None) else describe_type(a) for a in typing.get_args(annotation)
        )
    if origin in (tuple, list):
        return f"a list of {describe_type(typing.get_args(annotation)[0])}"
    if origin is dict or annotation is dict:
        return "a mapping"
    return _TYPE_NAMES.get(annotation, getattr(annotation, "__name__", str(annotation)))


def yaml_hint(annotation: Any, value: Any) -> str:
    """Why text came as true/false or a number: YAML 1.1's unquoted words and digits (a
    layer named ``no`` or ``0``), or how to write a list of one (``layers: x``)."""
    if isinstance(value, str) and describe_type(annotation).startswith("a list"):
        # `layers: 1,3` was told to write ['1,3']; a regex's `{1,3}` is its own
        joined = not value.startswith("re:") and "[" not in value
        items = [v.strip() for v in value.split(",") if v.strip()] if joined else []
        quoted = ", ".join("'" + v.replace("'", "''") + "'" for v in items or [value])  # [0]: 0
        if len(items) > 1:
            return f" Write the list as [{quoted}], one item per value."
        return f" Write a list of one as [{quoted}] (or a `- {quoted}` line under the key)."
    items = value if isinstance(value, (list, tuple)) else [value]
    sexagesimal = [v for v in items if base60(v) is not None]
    if sexagesimal:
        text = sexagesimal[0]
        return (
            f" saeatlas reads {text} as the text it is (as YAML 1.2 and JSON do), not as "
            f"YAML 1.1's base-60 number {base60(text):g}: write the number itself."
        )
    if "text" not in describe_type(annotation) or not any(
        isinstance(v, (bool, int, float)) for v in items
    ):
        return ""
    return (
        " YAML reads unquoted no, yes, on, off, true and false as true or false, and digits "
        "as numbers: quote a name that is text ('no', '0')."
    )
