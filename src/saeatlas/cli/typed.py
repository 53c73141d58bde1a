"""The command line as typed, before click parses it: options of several values
(``--layers a b``), and what click's parsing loses (an option given twice keeps its
last value; `1e400` reads as infinity; an empty path as '.')."""

from __future__ import annotations

import click

from .._validation import check_float_range
from ..errors import ConfigError

#: Options that take several values after one flag (``--layers a b c``).
MULTI_VALUE_OPTIONS = ("--layers", "--values", "--resolutions", "--nulls", "--cases", "--seed-sae")


def _expand_multi_value(args: list[str]) -> list[str]:
    """Rewrite ``--layers a b`` as ``--layers a --layers b`` for click. A negative
    number after such a flag is one of its values (``--resolutions -1``), so the
    option's own check says what is wrong with it, not "No such option: -1"."""
    out: list[str] = []
    current: str | None = None
    for a in args:
        if a in MULTI_VALUE_OPTIONS:
            current = a
            continue
        if current is not None and _is_value(a):
            out += [current, a]
            continue
        current = None
        out.append(a)
    return out


def _is_value(word: str) -> bool:
    """Whether ``word`` after an option of several values is one of its values."""
    return not word.startswith("-") or _is_number(word)


def _is_number(word: str) -> bool:
    try:
        float(word)
    except ValueError:
        return False
    return True


def check_typed(commands: dict[str, click.Command], argv: list[str]) -> None:
    """Refuse an option of one value given twice with two values (`--k 2 ... --k 3`):
    click keeps the last without a word, so a flag added to the end of a long command
    line silently replaced one before it. The options of several values (``--layers``)
    add up, and a flag (``-q``) given twice says the same thing twice. A number beyond
    a float's range and an empty path are refused here too, as typed."""
    name = next((a for a in argv if a in commands), None)
    sub = commands.get(name or "")
    if sub is None:
        return
    args = argv[argv.index(name) + 1 :]
    _refuse_empty_paths(sub, name, _expand_multi_value(args))
    for p in sub.params:
        if p.param_type_name != "option" or p.is_flag or p.count:
            continue
        values = _given_values(p, _expand_multi_value(args) if p.multiple else args)
        _refuse_overflow(p, values)
        if not p.multiple and len(set(values)) > 1:
            shown_values = ", then ".join(repr(v)[:40] for v in values)
            raise ConfigError(
                f"{p.opts[0]} is given {len(values)} times ({shown_values}); give it once."
            )


def _is_path(p: click.Parameter) -> bool:
    """Whether ``p`` takes a path (click's own type, or typer's copy of click)."""
    kind = getattr(p, "type", None)
    annotation = str(getattr(getattr(p, "type_descriptor", None), "annotation", ""))
    return isinstance(kind, click.Path) or "Path" in annotation


def _refuse_empty_paths(sub: click.Command, name: str, args: list[str]) -> None:
    """Refuse an empty path (`--inputs "$X"` or `saeatlas info "$STORE"` with the variable
    unset): read as '.', it was refused as the current folder's ("'.' has no
    manifest.json"), or written into: `import-sparsify RUN --out ""` put its SAEs among
    the current folder's files."""
    options = {
        o: p
        for p in sub.params
        if p.param_type_name == "option" and not p.is_flag and not p.count
        for o in p.opts
    }
    for i, a in enumerate(args):
        flag, eq, value = a.partition("=")
        if eq and flag in options and flag.startswith("--"):
            p, a = options[flag], value
        elif i and args[i - 1] in options:
            p = options[args[i - 1]]
        elif a.startswith("-") or a in options:
            continue
        else:
            p = None  # a positional argument
        if a.strip() or (p is not None and not _is_path(p)):
            continue
        if p is not None:
            raise ConfigError(
                f'{p.opts[0]} is empty (an unset variable, `{p.opts[0]} "$X"`?); give a path.'
            )
        arguments = [q for q in sub.params if q.param_type_name == "argument"]
        paths = [q.name.upper() for q in arguments]
        if arguments and all(_is_path(q) for q in arguments):  # a model SPEC says its own
            raise ConfigError(
                f'`saeatlas {name}` is given an empty argument (an unset variable, "$X"?) '
                f"where it takes {' and '.join(paths)}; give a path."
            )


def _given_values(p: click.Parameter, args: list[str]) -> list[str]:
    """The words given as values of option ``p`` in ``args``, as typed."""
    values = []
    for i, a in enumerate(args):
        for opt in p.opts:
            if a == opt and i + 1 < len(args):
                values.append(args[i + 1])
            elif a.startswith(f"{opt}=") and opt.startswith("--"):
                values.append(a.split("=", 1)[1])
    return values


def _refuse_overflow(p: click.Parameter, values: list[str]) -> None:
    """Refuse a number option's value beyond a float's range (`--timeout 1e400`,
    `--lr 1e400`), as typed (:func:`check_float_range`)."""
    click_type = getattr(getattr(p, "type", None), "name", None)  # click; typer's own copy:
    annotation = str(getattr(getattr(p, "type_descriptor", None), "annotation", ""))
    if click_type == "float" or "float" in annotation:
        for v in values:
            check_float_range(p.opts[0], v)
