"""Checks of ``saeatlas analyze``'s flags that need the run's other flags: the
ablation's, where it trains seed SAEs, and, under ``torchrun``, which steps each rank
takes."""

from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError
from .app import check_model_flags


def flag_facts(
    seeds: int,
    seed_sae: list[Path],
    model: str | None,
    sweep: Path | None,
    ablation: dict[str, object] | None = None,
    out: Path | None = None,
) -> dict[str, object]:
    """The flags that decide which steps a rank of a ``torchrun`` analysis takes (and so
    where it meets the others), compared before any: a rank given `--seeds 2` beside one
    given `--seeds 1` met the others at another step, and rank 0 ended in a TypeError
    traceback. Which SAEs and sweep members the ranks read is compared later, by their
    weights (paths may differ between nodes)."""
    return {
        "--seeds": seeds,
        "--seed-sae (count)": len(seed_sae),
        "--model (given)": model is not None,
        "--sweep (given)": sweep is not None,
        # the ablation's flags (with --model), compared by the ablation only after the
        # whole analysis had run
        **(ablation if model is not None and ablation else {}),
        # rank 0 alone writes: another rank's --out was dropped without a word (as train's
        # and sweep's ranks, they must agree)
        **({"--out": str(out)} if out is not None else {}),
    }


def check_out_is_no_seed_sae(out: Path, sae: Path, seeds: int, given: list[Path]) -> None:
    """Refuse an --out where the analysis trains a seed SAE (``<sae>-seed<N>`` for the
    missing ones of --seeds; ``<sae>-seed1``, the dictionary null's source, with --seeds
    1): it trained the SAE there, then refused --out as a folder of an SAE's files."""
    from ..store.atomic import resolve
    from ..train.ensemble import seed_sae_dir

    trained = max(seeds - 1 - len(given), 0) or (0 if given else 1)
    for shift in range(1, trained + 1):
        target = seed_sae_dir(sae, shift)
        if resolve(target) == resolve(out):
            raise ConfigError(
                f"--out '{out}' is where the analysis trains the seed SAE '{target}' (--seeds, "
                "or the dictionary null's source with --seeds 1); choose another --out."
            )


def check_null_dictionary_flag(flags: dict[str, object], cfg: object) -> None:
    """Refuse --null-dictionary where no dictionary null is run (`--nulls` without
    ``dictionary``, or `--n-null` 0): it was passed over without a word, and the atlas
    recorded ``null_dictionary: self`` for a null it never ran. (A config file's setting
    is still read: files written before stay valid.)"""
    given = flags.get("null_dictionary")
    if given is None or ("dictionary" in cfg.nulls and cfg.n_null > 0):
        return
    why = "`n_null` is 0" if cfg.n_null == 0 else f"`nulls` is {list(cfg.nulls)}"
    raise ConfigError(
        f"--null-dictionary {given} has no effect: the dictionary null is not run ({why}); "
        "drop --null-dictionary, or add 'dictionary' to --nulls (with --n-null 2 or more)."
    )


def check_ablation_flags(
    model: str | None,
    inputs: Path | None,
    labels: Path | None,
    loss: str,
    draws: int | None,
    mode: str,
    model_class: str,
) -> None:
    """The ablation's options, checked before the analysis, not after it (those given
    without --model are refused: they were passed over without a word)."""
    from ..structure.causal.ablation import MODES
    from ..structure.causal.random_sets import MAX_RANDOM

    if draws is not None and not 2 <= draws <= MAX_RANDOM:
        raise ConfigError(f"--ablation-draws must be in [2, {MAX_RANDOM}], got {draws}.")
    if mode not in MODES:  # was refused by the ablation, after the whole analysis
        raise ConfigError(f"Unknown --ablation-mode {mode!r}; expected one of: {list(MODES)}.")
    others = {"--ablation-draws": draws is not None, "--ablation-mode": mode != "mean"}
    check_model_flags(
        model, inputs, labels, loss, "the ablation", model_class=model_class, others=others
    )


def check_run_sections(
    config: Path | None,
    seeds: int,
    model: str | None,
    ablation: dict[str, object],
    seed: int,
) -> None:
    """Refuse a ``saeatlas run`` config as --config whose ``stability:`` or (with --model)
    ``ablation:`` section gives other settings than the flags that set them here: analyze
    reads its ``analyze:`` section alone, and trained 2 seed SAEs and ablated with
    ``mean`` and 100 random sets beside ``n_seed_saes: 0``, ``mode: zero`` and
    ``n_random: 5`` (the run's settings), without a word."""
    from .._config_cli import unread_section
    from .._config_file import load_config_file
    from .._validation import shown

    part = load_config_file(config).get("stability")
    n = part.get("n_seed_saes") if isinstance(part, dict) else None
    said = f"{seeds}: {seeds - 1} seed SAE(s) besides --sae" + (
        f"; --seeds {n + 1} gives the section's {n}" if isinstance(n, int) else ""
    )
    unread_section(
        config,
        "stability",
        "analyze",
        {"n_seed_saes": seeds - 1},
        {"n_seed_saes": ("--seeds", said)},
    )
    if model is None:  # no ablation: its section is not read (its flags are refused)
        return
    keys = {"mode": "--ablation-mode", "n_random": "--ablation-draws", "loss": "--loss"}
    values = {key: ablation[flag] for key, flag in keys.items()} | {"seed": seed}
    names = {key: (flag, shown(values[key])) for key, flag in keys.items()}
    if ablation["--ablation-draws"] is None:
        names["n_random"] = ("--ablation-draws", "not given: its default")
    names["seed"] = ("--seed", f"{seed}, the analysis's seed, which the ablation draws by")
    unread_section(config, "ablation", "analyze", values, names)
