"""Reading a config file (YAML or JSON, which is read as YAML): a mapping of settings,
with every key once, numbers and dates as YAML 1.2 and JSON read them, and a file of another kind
(TOML, a pipe, a folder) named as such."""

from __future__ import annotations

import math
import re
from collections.abc import Hashable
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key given twice in one mapping: PyYAML keeps
    the last silently, so a second ``analyze:`` section would drop the first."""


def _unique_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue  # `<<: *defaults`: the keys written here override the merged ones
        key = loader.construct_object(key_node)
        if not isinstance(key, Hashable):
            continue  # construct_mapping says what is wrong with it
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"the key {key!r} is given twice", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)

#: YAML 1.1's base-60 numbers (``1:30`` is 90) and leading-zero octals (``010`` is 8),
#: which YAML 1.2 and JSON read as the text and the decimal number a person wrote.
_YAML11_ONLY = re.compile(r"[-+]?(?:[0-9][0-9_]*(?::[0-5]?[0-9])+(?:\.[0-9_]*)?|0[0-7_]+)")


def base60(value: Any) -> float | None:
    """The number YAML 1.1 reads text such as ``1:30`` as (90, in base 60), or None."""
    if isinstance(value, str) and ":" in value and _YAML11_ONLY.fullmatch(value):
        return yaml.safe_load(value)
    return None


def _yaml12_number(kind: str) -> Any:
    base = getattr(yaml.SafeLoader, f"construct_yaml_{kind}")

    def construct(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> Any:
        text = loader.construct_scalar(node)
        if isinstance(text, str) and _YAML11_ONLY.fullmatch(text):
            return text  # an integer field reads `010` as 10; `1:30` is refused as text
        value = base(loader, node)
        if isinstance(value, float) and math.isinf(value) and "inf" not in text.lower():
            # `1.0e+400` beyond a float's range, as `1e400` (text in YAML) is: read as
            # infinity, it was refused as "got inf", a value nobody wrote
            return text
        return value

    return construct


for _kind in ("int", "float"):
    _UniqueKeyLoader.add_constructor(f"tag:yaml.org,2002:{_kind}", _yaml12_number(_kind))
# YAML 1.1's dates and times, which YAML 1.2 and JSON read as the text written: a run
# directory named `out: 2026-12-07` was refused as "got datetime.date(2026, 12, 7)"
_UniqueKeyLoader.add_constructor(
    "tag:yaml.org,2002:timestamp", lambda loader, node: loader.construct_scalar(node)
)


def load_config_file(path: Path | None) -> dict[str, Any]:
    """Settings from a YAML or JSON file (a mapping of field names to values)."""
    if path is None:
        return {}
    from .capture.input_files import existing_file

    fix = "give a YAML or JSON file (--config, or the config of `saeatlas run`)"
    existing_file(path, "Config", fix, ConfigError)
    if path.suffix.lower() == ".toml":  # read as YAML, it gave 'not a mapping, but str'
        raise ConfigError(
            f"Config file '{path}' is TOML, which saeatlas does not read; give the same "
            "settings as YAML or JSON (see examples/digits.yaml)."
        )
    try:
        text = path.read_text()
        data = yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as e:
        _refuse_toml(path, text)
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        why = getattr(e, "problem", None) or str(e).splitlines()[0]
        kind = "JSON" if path.suffix.lower() == ".json" else "YAML"  # JSON is read as YAML
        raise ConfigError(f"Config file '{path}' is not valid {kind}{at}: {why}.") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"Config file '{path}' cannot be read ({e}).") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        _refuse_toml(path, text)
        raise ConfigError(
            f"Config file '{path}' must hold a mapping of settings, not {type(data).__name__}."
        )
    return data


def _refuse_toml(path: Path, text: str) -> None:
    """A file that is not a YAML mapping but is TOML (`k = 4`, `[train]`), whatever
    its name, is named as TOML: YAML reads `k = 4` as one text ("not a mapping, but
    str") and `[train]` as a syntax error, which says nothing of the cause (Python
    3.11+: the standard library reads TOML from there on)."""
    try:
        import tomllib

        as_toml = tomllib.loads(text)
    except (ModuleNotFoundError, ValueError):  # TOMLDecodeError is a ValueError
        return
    if as_toml:
        raise ConfigError(
            f"Config file '{path}' is TOML (`key = value`), which saeatlas does not read; "
            "give the same settings as YAML (`key: value`) or JSON (see examples/digits.yaml)."
        )
