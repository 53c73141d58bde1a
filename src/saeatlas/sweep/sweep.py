"""``sweep``: train a family over a sparsity setting, evaluate it on held-out
rows, and recommend one by a stated rule.

Rule: take the knee of the held-out L0–FVU frontier (Kneedle on log L0);
report each member's decoder stability across two seeds (mean max cosine)
beside it, and warn when the recommended one is unstable.

A knee at either end of the swept range is no knee: the frontier may go on
bending beyond it. The sweep then extends its range past that end (halving the
smallest or doubling the largest value) and trains the new member, up to
``extend`` times, until the knee lies inside; when it cannot (``k`` at 1 or at
``d_sae``, or the extensions are used up) the result says so.
"""

from __future__ import annotations

import json
import logging
import math
import numbers
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .._validation import (
    check_config_argument,
    check_flag_arguments,
    check_path_argument,
    shown,
)
from .._world import agree, from_main, join
from ..errors import ConfigError
from ..sae.files import SWEEP_JSON
from ..store import ActivationStore
from ..store.atomic import atomic_write_json, check_output_dir, recover_dir, replacing_dir
from ..store.lock import output_lock
from ..train import TrainConfig
from .members import SWEEPABLE, Members, drop_others, heldout_rows, kept_members
from .pareto import RULE, knee, pareto_front
from .settings import as_trained, check_sweep_values, check_swept_setting

log = logging.getLogger(__name__)
#: Where the ranks other than 0 log what rank 0 says for them (nowhere).
_OTHER_RANKS = logging.getLogger(f"{__name__}.other_ranks")
_OTHER_RANKS.disabled = True

PARETO_JSON = "pareto.json"
#: Below this decoder stability a recommendation comes with a warning.
UNSTABLE = 0.7


@dataclass(frozen=True)
class SweepPoint:
    value: float
    """The swept setting's value."""
    path: str
    fvu: float
    l0: float
    dead_fraction: float
    stability: float | None
    """Mean max cosine between this SAE's decoder and its second seed's (None with one seed)."""
    on_front: bool

    def __post_init__(self) -> None:
        # a sweep.json edited by hand is refused where it is read (ValueError: readers
        # name the file), not drawn half-way into a report
        # ... and a number out of its range (NaN, an L0 below 0, a dead fraction of 7) was
        # drawn as it stood
        ranges = {
            "value": (-math.inf, math.inf),
            **dict.fromkeys(("fvu", "l0"), (0, math.inf)),
            "dead_fraction": (0, 1),
            "stability": (-1, 1),  # a mean cosine
        }
        for name, (low, high) in ranges.items():
            v = getattr(self, name)
            if v is None and name == "stability":
                continue
            if not isinstance(v, numbers.Real) or isinstance(v, (bool, np.bool_)):
                raise ValueError(f"the point {self.path!r} has `{name}` {v!r}, not a number")
            if not (math.isfinite(v) and low <= v <= high):
                within = f" from {low} to {high}" if high < math.inf else f" of {low} or more"
                raise ValueError(
                    f"the point {self.path!r} has `{name}` {v!r}, not a finite number"
                    + ("" if low == -math.inf else within)
                )
        if not isinstance(self.path, str) or not isinstance(self.on_front, (bool, np.bool_)):
            raise ValueError(
                f"a point has `path` {self.path!r} and `on_front` {self.on_front!r}: text "
                "and true or false are expected"
            )


@dataclass(frozen=True)
class SweepResult:
    over: str
    points: list[SweepPoint]
    recommended: int
    """Index into ``points``."""
    rule: str
    heldout_rows: int
    knee_inside: bool = True
    """Whether the recommended value lies inside the swept range (not at either end)."""
    extended: tuple[float, ...] = ()
    """Values added beyond the given range because the knee lay at an end of it."""
    note: str | None = None
    """Why the knee still lies at an end of the range, when it does."""

    def to_json(self) -> dict[str, Any]:
        return {
            "knee_inside": self.knee_inside,
            "extended": list(self.extended),
            "note": self.note,
            "over": self.over,
            "rule": self.rule,
            "heldout_rows": self.heldout_rows,
            "recommended": self.recommended,
            "points": [asdict(p) for p in self.points],
        }


def sweep(
    store: ActivationStore | str | Path,
    base: TrainConfig,
    over: str,
    values: list[float],
    out: str | Path,
    *,
    seeds: int = 2,
    heldout_fraction: float = 0.1,
    extend: int = 3,
    overwrite: bool = False,
    resume: bool = False,
    progress: bool = True,
) -> SweepResult:
    """Train ``base`` with each of ``values`` for the setting ``over`` (and a second
    seed of each when ``seeds`` is 2), from shared batches; evaluate on the last
    ``heldout_fraction`` of rows, never trained on; write ``out/sweep.json`` and
    one SAE directory per member; recommend the knee of the frontier, extending
    the range past an end up to ``extend`` times while the knee lies at that end. ``out`` is
    written beside its place and renamed into it when complete (an existing sweep
    stays until then, and is replaced only with ``overwrite``). ``resume``: continue a
    sweep that was killed, keeping each member it had finished beside ``out`` when that
    member records the same settings and rows and its files load (the rest are
    trained), to the sweep an uninterrupted run writes."""
    # before the work: a dict as `base` ended in an AttributeError, values from a
    # generator or NumPy in a TypeError or a refusal, and `overwrite="no"` was read by its truth
    check_config_argument("base", base, TrainConfig)
    check_path_argument("out", out)
    check_flag_arguments(overwrite=overwrite, resume=resume, progress=progress)
    if not isinstance(values, (list, tuple, np.ndarray)):
        raise ConfigError(f"`values` must be a list of numbers, got {type(values).__name__}.")
    values = [v.item() if isinstance(v, np.generic) else v for v in values]
    check_sweep_values(over, values)
    check_swept_setting(base.architecture, over)
    if base.checkpoint_every:  # refused by the family's training as "train with train_sae"
        raise ConfigError(
            f"--checkpoint-every (`checkpoint_every`) {base.checkpoint_every} does not apply to "
            "a sweep: it trains its members together, without checkpoints (a killed sweep "
            "continues with --resume, keeping the members it finished). Drop it, or set it to 0."
        )
    # 2.0 ended in a TypeError, and "2" was refused as "got 2"
    if isinstance(seeds, bool) or not isinstance(seeds, numbers.Integral) or seeds not in (1, 2):
        raise ConfigError(f"--seeds (`seeds`) must be 1 or 2, got {shown(seeds)}.")
    if base.seed + seeds - 1 >= 2**63:  # refused as `seed` 2**63, a value nobody gave
        raise ConfigError(
            f"--seeds (`seeds`) 2 with --seed (`seed`) {base.seed} gives the seed {base.seed + 1}"
            ", beyond 2**63 - 1, the largest torch takes; give --seeds 1 or a lower --seed."
        )
    if not (isinstance(heldout_fraction, numbers.Real) and 0 < heldout_fraction < 0.5):
        raise ConfigError(
            f"--heldout-fraction (`heldout_fraction`) must be in (0, 0.5), got "
            f"{heldout_fraction!r}."
        )
    if isinstance(extend, bool) or not isinstance(extend, numbers.Integral) or extend < 0:
        raise ConfigError(f"--extend (`extend`) must be a whole number >= 0, got {extend!r}.")
    out = Path(out)
    world = join(base.device)  # under torchrun rank 0 alone locks, checks and writes
    # a rank given other values, seeds or extensions trained other members than rank 0
    # (an IndexError traceback, or "lost contact" once rank 0 had finished)
    agree(
        world,
        {
            "--over": over,
            "--values": [float(v) for v in values],
            "--seeds": seeds,
            "--heldout-fraction": float(heldout_fraction),
            "--extend": extend,
            # rank 0 alone writes: another rank's --out was dropped without a word
            "--out": str(out),
        },
        "this sweep",
        "Every rank must run the same sweep: give every rank the same command line.",
    )

    def check() -> None:
        recover_dir(out)
        if resume and not overwrite and (out / SWEEP_JSON).is_file():
            raise ConfigError(
                f"--resume: '{out}' holds a complete sweep; there is nothing to continue. "
                "Read it as it is, pass --overwrite to sweep again, or choose another --out."
            )
        check_sweep_out(out, overwrite)

    with output_lock(out if world.is_main else None):
        from_main(check, world)
        store = store if isinstance(store, ActivationStore) else ActivationStore.open(store)
        heldout_rows(store.n_rows, heldout_fraction)
        kept = replacing_dir(out, keep=resume, keep_failed=kept_members)
        with kept if world.is_main else nullcontext(None) as new:
            members = Members(
                store, base, over, out, new, seeds, heldout_fraction, world, progress, resume
            )
            return _sweep(members, values, extend)


def check_sweep_out(out: Path, overwrite: bool) -> None:
    """Refuse to replace a sweep without ``overwrite``, or a directory holding anything
    a sweep does not write."""

    def ours(p: Path) -> bool:
        member = p.is_dir() and any(p.name.startswith(f"{o}-") for o in SWEEPABLE)
        return member or p.name in (SWEEP_JSON, PARETO_JSON)

    check_output_dir(out, "a sweep", "a sweep's", SWEEP_JSON, ours, overwrite)


def _sweep(members: Members, values: list[float], extend: int) -> SweepResult:
    """The sweep, written into ``members.new`` (on rank 0; the paths it records are
    those under ``members.out``)."""
    over, heldout, new = members.over, members.heldout, members.new
    # rank 0 alone speaks: under torchrun every rank printed each warning
    say = log if members.world.is_main else _OTHER_RANKS
    points_raw: list[tuple] = []
    todo, extended, note = list(values), [], None
    for round_ in range(extend + 1):
        points_raw += members.train(todo)
        l0 = np.array([p[3] for p in points_raw])
        fvu = np.array([p[2] for p in points_raw])
        best = knee(l0, fvu)
        taken = [p[0] for p in points_raw]
        edge = _edge(taken, points_raw[best][0])
        if edge is None:
            break
        nxt, why = _beyond(over, taken, edge, points_raw[0][6])
        if nxt is None or round_ == extend:
            why = why or f"the sweep was extended {extend} times (`extend`)"
            note = (
                f"The knee lies at the {edge} end of the swept {over} values and the range "
                f"was not extended further: {why}. The recommended {over} is the end of the "
                "range, not a knee; sweep further to see where the frontier bends."
            )
            say.warning(note)
            break
        say.info("The knee lies at the %s end of the range: adding %s = %s.", edge, over, nxt)
        # as it is: cast to the type of the values given (ints from Python, [1, 2]), half
        # of 1 was 0, and a member was trained with no L1 penalty, recorded as value 0
        todo = [nxt]
        extended.append(float(nxt))
    front = set(pareto_front(l0, fvu).tolist())
    points = [SweepPoint(*p[:6], on_front=i in front) for i, p in enumerate(points_raw)]
    result = SweepResult(over, points, best, RULE, heldout, note is None, tuple(extended), note)
    if points[best].stability is not None and points[best].stability < UNSTABLE:
        say.warning(
            "The recommended %s=%s has decoder stability %.2f across seeds (< %.1f).",
            over,
            points[best].value,
            points[best].stability,
            UNSTABLE,
        )
    if points[best].fvu >= 1:
        say.warning(
            "The recommended %s=%s reconstructs the %d held-out rows worse than their mean "
            "(held-out FVU %.2f >= 1): the SAEs overfit too few rows, so the knee means "
            "little. Capture more rows, or train smaller SAEs (--d-sae) or for fewer --tokens.",
            over,
            points[best].value,
            heldout,
            points[best].fvu,
        )
    if new is not None:
        drop_others(new, members.members)
        atomic_write_json(new / SWEEP_JSON, result.to_json())
        (new / PARETO_JSON).write_text(
            json.dumps(
                {"l0": l0.tolist(), "fvu": fvu.tolist(), "front": sorted(front), "knee": best}
            )
            + "\n"
        )
    return result


def _edge(values: list[float], chosen: float) -> str | None:
    """'low' or 'high' when ``chosen`` is the smallest or largest of ``values``."""
    if chosen == min(values):
        return "low"
    if chosen == max(values):
        return "high"
    return None


def _beyond(over: str, values: list[float], edge: str, d_sae: int) -> tuple[float | None, str]:
    """The next value past the ``edge`` end of ``values`` (half the smallest, twice the
    largest), or ``(None, why not)``."""
    end = min(values) if edge == "low" else max(values)
    nxt = end / 2 if edge == "low" else end * 2
    if over == "k":
        nxt = float(int(nxt)) if edge == "low" else float(min(int(nxt), d_sae))
        if nxt < 1 or nxt == end:
            bound = "1" if edge == "low" else f"`d_sae` ({d_sae})"
            return None, f"k is already at {bound}"
    elif as_trained(nxt) in (0, as_trained(end), math.inf):
        return None, f"{nxt:g} is {as_trained(nxt):g} in float32, the precision of the SAEs"
    return nxt, ""


def sweep_members(sweep_dir: str | Path) -> tuple[str, list[tuple[float, Path]]]:
    """``(setting, [(value, SAE directory), ...])`` of the sweep in ``sweep_dir``: one
    member per value (its first seed)."""
    path = Path(sweep_dir)
    try:
        raw = json.loads((path / SWEEP_JSON).read_text())
        members = [(_member_value(p["value"]), Path(p["path"])) for p in raw["points"]]
        over = raw["over"]
        if over not in SWEEPABLE:  # analysed with no member compared with its value
            raise ValueError(f"`over` is {over!r}, not one of {list(SWEEPABLE)}")
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ConfigError(
            f"'{path}' holds no readable {SWEEP_JSON} ({e}); give the directory that "
            "`saeatlas sweep --out` wrote."
        ) from e
    return over, [(v, member_dir(path, p)) for v, p in members]


def _member_value(value: Any) -> float:
    """A member's value in sweep.json: a finite number, not true (read as 1), text ("8"
    read as 8) nor NaN or 1e400 (the analysis of the members ran, then its atlas could not
    be saved, refused as an atlas.json to write again)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"a point's value is {value!r}, not a finite number")
    return float(value)


def member_dir(sweep_dir: str | Path, recorded: str | Path) -> Path:
    """The directory of the sweep member recorded in ``sweep_dir``'s sweep.json as
    ``recorded``. Members are saved under the sweep directory as
    ``<over>-<value>/seed-<s>``; the path recorded is as the sweep saw its --out
    (relative to where it ran), so the sweep's own member comes first: another
    directory's ``SWEEP/k-8/seed-0`` is another sweep's. Then the path as written,
    then relative to the sweep directory's parent (a sweep moved with its
    directory)."""
    sweep_dir, recorded = Path(sweep_dir), Path(recorded)
    own = sweep_dir / recorded.parent.name / recorded.name
    if own.exists():
        return own
    if recorded.is_absolute() or recorded.exists():
        return recorded
    beside = sweep_dir.parent / recorded
    return beside if beside.exists() else recorded
