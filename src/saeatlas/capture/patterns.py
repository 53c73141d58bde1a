"""Layer name patterns, one reading for every option that takes them (``--layers``,
``--layout LAYER=LAYOUT``).

- an exact name: ``encoder.layer.3`` (tried first: a module may be named ``re:x``);
- a glob, read part by part of the dotted name as shell globs read paths: ``*`` any
  characters within one part, ``**`` any characters across dots, ``?`` one character
  other than a dot, ``[...]`` one of a set. ``encoder.layer.*.output`` names
  ``encoder.layer.3.output`` and not ``encoder.layer.3.attention.output`` (a BERT's
  attention block, which a ``*`` that crossed dots also took); ``encoder.**.output``
  names both;
- a regex, written ``re:PATTERN``, matched against the whole name.
"""

from __future__ import annotations

import functools
import re

from .._validation import shown
from ..errors import HookpointError

REGEX_PREFIX = "re:"
GLOB_CHARS = "*?["


def is_glob(pattern: str) -> bool:
    return not pattern.startswith(REGEX_PREFIX) and any(c in pattern for c in GLOB_CHARS)


@functools.lru_cache(maxsize=512)
def compiled(pattern: str, cross_dots: bool = False) -> re.Pattern[str]:
    """The regex a pattern reads as (``cross_dots``: a ``*`` that crosses dots, for
    saying so when the strict reading names nothing)."""
    if pattern.startswith(REGEX_PREFIX):
        try:
            return re.compile(pattern[len(REGEX_PREFIX) :])
        except re.error as e:
            raise HookpointError(f"Bad regex in layer pattern {shown(pattern)}: {e}.") from e
    if not is_glob(pattern):
        return re.compile(re.escape(pattern))
    return re.compile(_glob_regex(pattern, cross_dots))


def _glob_regex(pattern: str, cross_dots: bool) -> str:
    one_part = ".*" if cross_dots else r"[^.]*"
    out, i, n = [], 0, len(pattern)
    while i < n:
        c = pattern[i]
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        if c == "*":
            out.append(one_part)
        elif c == "?":
            out.append("." if cross_dots else r"[^.]")
        elif c == "[":
            end = pattern.find("]", i + 2 if pattern[i + 1 : i + 2] in ("!", "]") else i + 1)
            if end < 0:  # no closing bracket: a literal '['
                out.append(re.escape(c))
            else:
                body = pattern[i + 1 : end]
                if body.startswith("!"):
                    body = "^" + body[1:]
                elif body.startswith("^"):  # a literal '^', as fnmatch reads it
                    body = "\\" + body
                out.append("[" + body.replace("\\", r"\\") + "]")
                i = end
        else:
            out.append(re.escape(c))
        i += 1
    return "".join(out)


def matches(name: str, pattern: str) -> bool:
    """Whether ``pattern`` (exact, glob or ``re:`` regex) names ``name``."""
    return name == pattern or compiled(pattern).fullmatch(name) is not None


def match_names(pattern: str, names: list[str]) -> list[str]:
    """The ``names`` that ``pattern`` names, in their order."""
    if pattern in names:  # first: a module may be named 're:x' or 'a[0]'
        return [pattern]
    rx = compiled(pattern)
    return [n for n in names if rx.fullmatch(n)]


def crossing_hint(pattern: str, names: list[str]) -> str:
    """When a glob names nothing but would with ``*`` crossing dots, the sentence that
    says so (else "")."""
    if not is_glob(pattern) or "*" not in pattern:
        return ""
    rx = compiled(pattern, cross_dots=True)
    hits = [n for n in names if rx.fullmatch(n)]
    if not hits:
        return ""
    wide = re.sub(r"(?<!\*)\*(?!\*)", "**", pattern)
    shown = ", ".join(repr(h) for h in hits[:3]) + (
        f" and {len(hits) - 3} more" if len(hits) > 3 else ""
    )
    return (
        f" A `*` stops at dots (it matches within one part of a dotted name); {shown} "
        f"would need `**`, which crosses them: {wide!r}."
    )
