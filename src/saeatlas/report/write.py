"""``write_report(atlas_dir) -> ReportResult``: the report stage of the pipeline."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .._progress import progress_bar
from .._validation import check_path_argument
from ..errors import ConfigError
from ..store.atomic import (
    TMP_PREFIX,
    atomic_write_bytes,
    check_replaceable,
    remove_killed_writes,
    replacing_dir,
    resolve,
    through_link,
)
from ..store.lock import check_writable, output_lock
from ..store.output_names import name_limit
from ..structure.atlas_format import is_figure
from . import effects, figures, maps, plots
from .cards import module_cards
from .data import ReportData, check_atlas_dir, load_report_data
from .graph import module_graph, module_graph_positions
from .html import PANEL_EXAMPLES, render_page
from .links import ModuleLinks, module_links
from .plots import Plot
from .text import examples_by_item

log = logging.getLogger(__name__)

REPORT_HTML = "report.html"
FIGURES_DIR = "figures"
#: Examples per module shown on its card.
CARD_EXAMPLES = 6


@dataclass(frozen=True)
class ReportResult:
    path: Path
    """The report.html written."""
    figures: list[Path]
    """The PNG figures written (under ``ATLAS_DIR/figures/``)."""
    sampled: bool
    """True when the feature map shows a sample of the features."""


def write_report(
    atlas_dir: str | Path,
    out: str | Path | None = None,
    *,
    sweep_dir: str | Path | None = None,
    max_map_points: int = 20_000,
    progress: bool = False,
) -> ReportResult:
    """Write one self-contained HTML report of an Atlas directory, and its PNG figures.

    Args:
        atlas_dir: the directory ``saeatlas analyze`` wrote.
        out: the HTML file (default ``ATLAS_DIR/report.html``).
        sweep_dir: the sparsity sweep the SAE came from (``saeatlas sweep --out``); by
            default the one ``atlas.json`` names, else ``sweep/`` beside the atlas.
        max_map_points: at most this many features on the feature map: above it, every
            module member and a seeded sample of the rest (the page says so).
        progress: show a progress bar.

    The page opens offline (Plotly's JavaScript is inlined once). Figures go to
    ``ATLAS_DIR/figures/``: ``feature_map.png``, ``layer_module.png``,
    ``module_graph.png``, plus ``pareto.png`` with a sweep and ``specialisation.png``
    with an ablation.
    """
    check_path_argument("out", out, optional=True)
    atlas_dir = check_atlas_dir(atlas_dir)  # before its lock: a file is no output to lock
    # a link is written through, as an output's is: replaced, it left its target stale
    if out is not None:
        _check_page_name(Path(out))  # before any look at it: os.stat fails on such a name
        out = _page_path(out)
    given = out is not None
    out = atlas_dir / REPORT_HTML if out is None else through_link(out)
    resolve(out.parent)  # a loop of symbolic links is named before the work
    check_replaceable(out)  # a device (--out /dev/null) before the figures are drawn
    if out.exists() and out.is_dir():
        if not given:  # named as the --out the command was not given
            raise ConfigError(
                f"'{out}', where the report's page goes by default, is a directory; move it "
                "away, or give the page another place with --out FILE (`out`)."
            )
        raise ConfigError(f"--out '{out}' is a directory; give the HTML file to write.")
    if (
        out != atlas_dir / REPORT_HTML
        and out.is_file()
        and out.stat().st_size
        and not _is_report(out)
    ):
        # `--out ATLAS/atlas.json` once replaced the atlas's summary with the page
        raise ConfigError(
            f"--out '{out}' is a file that is not a saeatlas report; choose a new file (or "
            "an old report) to write the report to."
        )
    # The report goes into the atlas directory: hold its lock, as every writer does.
    with output_lock(atlas_dir), progress_bar("Writing the report", 4, progress) as bar:
        # the page's folder before the work (a file there, a folder not writable, another
        # output): the figures were drawn, then the page failed in an OS error's words;
        # under the atlas's lock, which lets the page lie in its own atlas
        check_writable(out.parent, for_file=True)
        _check_figures_dir(atlas_dir / FIGURES_DIR, out)
        data = load_report_data(atlas_dir, sweep_dir=sweep_dir, max_map_points=max_map_points)
        bar.advance()
        links = module_links(data.atlas)
        pos = module_graph_positions(data.n_modules, links)
        feature_examples = examples_by_item(data.atlas.examples, "feature", PANEL_EXAMPLES)
        module_examples = examples_by_item(data.atlas.examples, "module", CARD_EXAMPLES)
        figs = _interactive(data, links, pos, feature_examples)
        bar.advance()
        # in a folder through a link to nothing yet ('dl' -> 'missing'), made where the
        # link leads, as an output's is: the write failed with 'File exists' on 'dl'
        target = resolve(out.parent) / out.name
        # Figures are drawn into a partial folder renamed into place, so the folder is
        # always one report's complete set. The page is rendered before that swap and the
        # old page removed just before it: the figures were swapped in first, and a kill
        # or an error before the new page left the old one listing another report's
        # figures. Now a page is always its figures' own (or, after a kill, absent).
        with replacing_dir(atlas_dir / FIGURES_DIR) as folder:
            drawn = _static(data, links, pos, folder)
            pngs = [atlas_dir / FIGURES_DIR / p.name for p in drawn]
            bar.advance()
            page = render_page(
                data,
                figs,
                links,
                module_cards(data, module_examples),
                feature_examples,
                [_relative(p, out.parent) for p in pngs],
            ).encode("utf-8")
            target.unlink(missing_ok=True)
        if target.parent == resolve(atlas_dir):  # a killed report's, half-written (its lock)
            remove_killed_writes(target)
        atomic_write_bytes(target, page)
        bar.advance()
    log.info("Report written to %s (%.1f MB)", out, out.stat().st_size / 1e6)
    return ReportResult(out, pngs, data.map_sample.sampled)


def _interactive(
    data: ReportData,
    links: ModuleLinks,
    pos: np.ndarray,
    feature_examples: dict[int, list[list]],
) -> dict[str, Plot | None]:
    """Every interactive figure, None where the atlas lacks its data."""
    has_map = {"x", "y"} <= set(data.atlas.features.columns)
    hovers = maps.feature_hovers(data, feature_examples) if has_map else {}
    return {
        "pareto": plots.pareto(data.sweep) if data.sweep else None,
        "training": plots.training_curves(data.training) if data.training is not None else None,
        "feature_map": maps.feature_map(data, hovers) if has_map else None,
        "unit_map": maps.unit_map(data),
        "layer_module": plots.layer_module(data) if data.n_modules else None,
        "module_graph": module_graph(data, links, pos) if data.n_modules else None,
        "ablation": effects.ablation_effects(data) if data.has_ablation else None,
        "specialisation": effects.specialisation(data)
        if data.has_ablation and not data.ablation.empty
        else None,
        "selectivity": effects.selectivity(data),
    }


def _static(data: ReportData, links: ModuleLinks, pos: np.ndarray, folder: Path) -> list[Path]:
    """Write the PNG figures; return their paths."""
    todo = [("layer_module.png", lambda: figures.layer_module_png(data))]
    if {"x", "y"} <= set(data.atlas.features.columns):
        todo.insert(0, ("feature_map.png", lambda: figures.feature_map_png(data)))
    todo.append(("module_graph.png", lambda: figures.module_graph_png(data, links, pos)))
    if data.sweep is not None:
        todo.append(("pareto.png", lambda: figures.pareto_png(data.sweep)))
    if data.has_ablation and not data.ablation.empty:
        todo.append(("specialisation.png", lambda: figures.specialisation_png(data)))
    with figures.plain_text():
        return [figures.save_png(make(), folder / name) for name, make in todo]


def _page_path(out: str | Path) -> Path:
    """The page ``out`` names: ``out/report.html`` for a folder (one that exists, or a
    path ending in '/', which ``Path`` would drop: `--out newdir/` wrote a file named
    'newdir'), else ``out``."""
    text = os.fspath(out)
    if not text.strip():  # an unset variable (`--out "$PAGE"`), not the current folder
        raise ConfigError(f"--out {text!r} names no file; give the HTML file to write.")
    path = Path(text)
    if text.endswith(("/", os.sep)) or path.is_dir():
        return path / REPORT_HTML
    return path


def _check_page_name(out: Path) -> None:
    """Refuse a page whose name is too long for the temporary file it is written as first
    (``.tmp-NAME-`` and 8 random characters, :func:`atomic_write_bytes`): the figures
    were drawn, then the page failed with 'File name too long' naming that file."""
    limit = name_limit(out)
    extra = len(f"{TMP_PREFIX}-") + 8  # tempfile's random part
    if len(out.name.encode()) + extra > limit:
        raise ConfigError(
            f"--out '{out}': the page's name is {len(out.name.encode())} bytes long; it is "
            f"written first as '{TMP_PREFIX}NAME-' and 8 random characters, which this "
            f"filesystem allows up to {limit} bytes. Choose a name of at most "
            f"{limit - extra} bytes."
        )


def _check_figures_dir(folder: Path, out: Path) -> None:
    """Refuse a report that would delete what is not its own: the figures folder is
    replaced whole, and a file put there (or a page written there with --out, which
    the next report removed) was lost without a word."""
    if out.resolve().parent == folder.resolve():
        raise ConfigError(
            f"--out '{out}' is in the atlas's figures folder, which each report replaces "
            "whole; write the report elsewhere."
        )
    if not folder.exists():
        return
    foreign = [p.name for p in folder.iterdir() if not is_figure(p)] if folder.is_dir() else []
    if foreign or not folder.is_dir():
        raise ConfigError(
            f"'{folder}' holds files that are not a report's figures "
            f"({foreign[:5] if foreign else 'it is a file'}), and each report replaces the "
            "folder whole; move them away and run the report again."
        )


def _is_report(path: Path) -> bool:
    """Whether ``path`` is a page this module wrote (its head names saeatlas as generator)."""
    with open(path, "rb") as f:
        return b'<meta name="generator" content="saeatlas' in f.read(1024)


def _relative(path: Path, base: Path) -> str:
    try:
        return str(resolve(path).relative_to(resolve(base)))
    except ValueError:
        return str(path)
