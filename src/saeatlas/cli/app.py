"""The typer app every command registers on, its error handling and the entry point.

User errors (:class:`~saeatlas.errors.AtlasError`) become one line on stderr
and exit code 1, in :meth:`_Group.invoke`; ``--debug`` shows the traceback.
Options listed in ``MULTI_VALUE_OPTIONS`` take several values after one flag, and the
command line is checked as typed (:mod:`.typed`) before click parses it.
"""

from __future__ import annotations

import logging
import select
import signal
import sys
from pathlib import Path
from typing import Any

import click
import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

from .. import __version__
from ..errors import AtlasError, ConfigError
from .typed import MULTI_VALUE_OPTIONS, _expand_multi_value, _is_value, check_typed

try:  # typer >= 0.25 parses flags with its own copy of click
    from typer._click.exceptions import UsageError as _TyperUsageError

    USAGE_ERRORS: tuple[type[Exception], ...] = (click.UsageError, _TyperUsageError)
except ImportError:
    USAGE_ERRORS = (click.UsageError,)

console = Console()
err_console = Console(stderr=True)


def _refuse_empty(group: _Group, argv: list[str]) -> None:
    """Refuse an option of several values given none (`--layers` followed by another
    flag, or last): :func:`_expand_multi_value` leaves such a flag out, so the command
    ran on the option's default (every layer) without a word."""
    empty = [
        a
        for i, a in enumerate(argv)
        if a in MULTI_VALUE_OPTIONS and (i + 1 == len(argv) or not _is_value(argv[i + 1]))
    ]
    if not empty:
        return
    name = next((a for a in argv if a in group.commands), None)
    sub = group.commands.get(name or "")
    own = {o for p in getattr(sub, "params", ()) for o in p.opts}
    flag = empty[0]
    if flag not in own:
        where = f"saeatlas {name}" if name else "saeatlas"
        _fail(f"No such option: {flag}. See `{where} --help`.")
    _fail(
        f"{flag} is given no values; name them after it ({flag} A B), or leave {flag} out "
        "for its default."
    )


class _Group(TyperGroup):
    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        """The command, its options' help made plain text for rich: every `[...]` in
        it was read as markup and dropped ("[config: k; default: 32]" after every
        setting's help, "'image' [batch, C, H, W]" printed as "'image' ,")."""
        command = super().get_command(ctx, cmd_name)
        if command is not None and not getattr(command, "_plain_help", False):
            for param in command.params:
                if isinstance(getattr(param, "help", None), str):
                    param.help = escape(param.help)
            command._plain_help = True  # type: ignore[attr-defined]
        return command

    def main(self, args: Any = None, *rest: Any, **kwargs: Any) -> Any:
        args = list(sys.argv[1:] if args is None else args)
        self._argv = args
        return super().main(_expand_multi_value(args), *rest, **kwargs)

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        """Usage errors before the command (`saeatlas --bogus`, `saeatlas --layers` alone)
        as one line with exit code 1, as the commands' own: they were click's box with
        exit code 2, and `--layers` alone printed the help."""
        argv = list(getattr(self, "_argv", ()))
        if not args and argv and not ctx.resilient_parsing:
            _refuse_empty(self, argv)  # every word an option of several values, dropped
        try:
            return super().parse_args(ctx, args)
        except USAGE_ERRORS as e:
            if ctx.resilient_parsing or type(e).__name__ == "NoArgsIsHelpError":
                raise  # shell completion; `saeatlas` alone shows its help
            _fail(f"{e.format_message().rstrip('.')}. See `saeatlas --help`.")

    def invoke(self, ctx: click.Context) -> Any:
        try:
            check_typed(self.commands, list(getattr(self, "_argv", ())))
        except ConfigError as e:
            _fail(str(e))
        _refuse_empty(self, list(getattr(self, "_argv", ())))
        try:
            return super().invoke(ctx)
        except AtlasError as e:
            if (ctx.obj or {}).get("debug"):
                raise
            _fail(str(e))
        except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM (:func:`_on_sigterm`)
            if (ctx.obj or {}).get("debug"):
                raise
            # typer turned it into exit code 130 without a word
            term = isinstance(e, Terminated)
            resumes = ctx.invoked_subcommand in ("capture", "train", "sweep")
            _fail(
                f"Stopped by {'SIGTERM' if term else 'SIGINT (Ctrl-C)'}; what was complete is "
                "kept and the output's lock is released"
                + (
                    f" (continue with `saeatlas {ctx.invoked_subcommand} --resume`)."
                    if resumes
                    else "; run the command again."
                ),
                code=143 if term else 130,
            )
        except USAGE_ERRORS as e:  # a bad flag value: one line, like every other error
            sub = getattr(getattr(e, "ctx", None), "info_name", None)
            where = f"saeatlas {sub} --help" if sub and sub != ctx.info_name else "saeatlas --help"
            hint = _stray_value(e, ctx, self) + _global_flag(e, self)
            _fail(f"{e.format_message().rstrip('.')}.{hint} See `{where}`.")
        except (MemoryError, RuntimeError) as e:
            # torch's allocators raise RuntimeError (or its OutOfMemoryError subclass)
            text = str(e)
            oom = isinstance(e, MemoryError) or any(
                m in text for m in ("out of memory", "can't allocate memory", "Cannot allocate")
            )
            if not oom or (ctx.obj or {}).get("debug"):
                raise
            why = text.split("\n")[0][:160]
            # the flags of these that the command has: export-neuronpedia advised all three
            sub = self.get_command(ctx, ctx.invoked_subcommand or "")
            own = {o for p in getattr(sub, "params", ()) for o in p.opts}
            flags = [f for f in ("--batch-size", "--shard-rows", "--d-sae", "--rows") if f in own]
            which = f" ({', '.join(flags)})" if flags else ""
            _fail(
                f"Out of memory ({why}). Lower the sizes that grow with the data{which} or "
                "use a machine with more memory."
            )
        except OSError as e:
            if isinstance(e, BrokenPipeError) and not e.filename and _reader_left():
                raise  # click stops quietly, as Unix tools do
            # The disk, not the input: say which path and why, in one line.
            if (ctx.obj or {}).get("debug"):
                raise
            path = f" '{e.filename}'" if e.filename else ""
            # only capture, train and sweep have --resume: report or export-neuronpedia
            # advised it
            resumes = ctx.invoked_subcommand in ("capture", "train", "sweep")
            _fail(
                f"Cannot write or read{path}: {e.strerror or e}. Check free space and "
                "permissions, or choose another path; what was complete is kept"
                + (
                    f" (continue with `saeatlas {ctx.invoked_subcommand} --resume`)."
                    if resumes
                    else "."
                )
            )


def _stray_value(e: Exception, ctx: click.Context, group: _Group) -> str:
    """For a missing option when a value stands without a flag right after the command
    (`saeatlas train STORE --out sae`, where --acts takes the store), the words that
    say where it goes."""
    param, sub = getattr(e, "param", None), getattr(getattr(e, "ctx", None), "command", None)
    if type(e).__name__ != "MissingParameter" or getattr(param, "param_type_name", "") != "option":
        return ""
    if sub is None or any(p.param_type_name == "argument" for p in sub.params):
        return ""
    argv = list(getattr(group, "_argv", ()))
    name = getattr(e.ctx, "info_name", None)
    if name not in argv or argv.index(name) + 1 >= len(argv):
        return ""
    stray = argv[argv.index(name) + 1]
    if stray.startswith("-"):
        return ""
    flag = max(param.opts, key=len)
    return f" {stray!r} has no flag: write `{flag} {stray}`."


def _global_flag(e: Exception, group: _Group) -> str:
    """For an option of saeatlas itself given after the command (`saeatlas train ...
    --debug`), told only "No such option: --debug", the words that say where it goes."""
    flag = getattr(e, "option_name", None)
    own = {o for p in group.params for o in p.opts}
    if type(e).__name__ != "NoSuchOption" or flag not in own:
        return ""
    name = getattr(getattr(e, "ctx", None), "info_name", None) or "COMMAND"
    return f" {flag} is an option of saeatlas itself: give it before the command (`saeatlas {flag} {name} ...`)."


def _reader_left() -> bool:
    """Whether stdout's reader went away (``saeatlas info STORE | head``): no disk
    error to report, and nothing to resume. A pipe whose reader closed polls as an
    error on its write end."""
    try:
        poll = select.poll()
        poll.register(sys.__stdout__.fileno(), select.POLLOUT)
        return any(ev & select.POLLERR for _, ev in poll.poll(0))
    except (AttributeError, OSError, ValueError):  # no poll here, or no stdout
        return False


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the command is, so that it stops as Ctrl-C stops it: its
    ``finally`` blocks run (hooks, threads, locks) and what it committed stays for
    ``--resume``. Python's default ended the process without a word."""


def _on_sigterm(signum: int, frame: Any) -> None:
    raise Terminated()


def _fail(message: str, code: int = 1) -> None:
    """Print ``message`` as one line on stderr and exit with ``code`` (1: an error; 130
    and 143, as shells give, for SIGINT and SIGTERM)."""
    # the message is plain text: its [batch, d] shapes are not markup
    line = " ".join(message.split())
    err_console.print(
        f"[bold red]Error:[/] {escape(line)}", markup=True, highlight=False, soft_wrap=True
    )
    raise typer.Exit(code) from None


app = typer.Typer(
    cls=_Group,
    help="saeatlas: the macroscopic structure of neural networks, found with sparse autoencoders.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        console.print(f"saeatlas {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    ctx: typer.Context,
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks for errors."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log what each step does."),
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    ctx.ensure_object(dict)["debug"] = debug
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(message)s")


def _output_index(value: str | None) -> int | str | None:
    if value is None:
        return None
    return int(value) if value.lstrip("-").isdigit() else value


def with_config_flags(func: Any, config_cls: type) -> Any:
    """Give ``func`` one keyword option per field of ``config_cls`` (for typer)."""
    import inspect

    from .._config_cli import config_parameters

    sig = inspect.signature(func)
    fixed = [p for p in sig.parameters.values() if p.kind != inspect.Parameter.VAR_KEYWORD]
    func.__signature__ = sig.replace(parameters=fixed + config_parameters(config_cls))
    return func


def check_model_only(model: str | None, given: dict[str, bool], what: str, give: str) -> None:
    """Refuse flags that act on the model only (``given``: each flag by whether it was
    given) without the --model they need (they were dropped without a word); ``give``:
    the flags ``what`` needs."""
    from ..errors import ConfigError

    unused = [flag for flag, on in given.items() if on]
    if unused and model is None:
        verb = "is" if len(unused) == 1 else "are"
        raise ConfigError(f"{' and '.join(unused)} {verb} for {what}; give {give} too.")


def check_model_flags(
    model: str | None,
    inputs: Any,
    labels: Any,
    loss: str,
    what: str,
    *,
    model_class: str = "auto",
    others: dict[str, bool] | None = None,
) -> None:
    """A command's --model, --inputs, --labels, --loss and --model-class, which run the
    model for ``what`` ("the ablation"), checked before the command's work: none of them
    ignored, none missing, the labels class indices. ``others``: the command's other
    flags that act on the model only, by whether each was given."""
    from ..errors import ConfigError

    if (inputs is not None or labels is not None) and model is None:
        raise ConfigError(f"--inputs and --labels are for {what}; give --model too.")
    # flags given other than their defaults (`--model-class bogus` or `--ablation-draws 5`
    # without --model were passed over without a word)
    given = {"--loss": loss != "cross-entropy", "--model-class": model_class != "auto"}
    check_model_only(model, {**given, **(others or {})}, what, "--model and --inputs")
    if model is not None and inputs is None:
        raise ConfigError(f"--model needs --inputs: the inputs to run the model on for {what}.")
    if model is None:
        return
    from ..losses import class_indices, loss_function, needs_labels

    loss_function(loss)
    if labels is None and needs_labels(loss):
        raise ConfigError(
            f"--model needs --labels FILE: {what} takes the model's cross-entropy against one "
            "label per input (or --loss next-token for a causal language model)."
        )
    if labels is not None and needs_labels(loss):
        from ..capture import load_labels

        class_indices(load_labels(labels))  # before the work, not after it


def on_rank_zero(func: Any) -> Any:
    """A command whose work is not shared among ranks: under ``torchrun`` rank 0 runs it
    as one process would, and the other ranks return at once (capture, train, sweep,
    analyze, run and demo share theirs)."""
    import functools

    from .._world import is_main_process

    @functools.wraps(func)
    def command(*args: Any, **kwargs: Any) -> Any:
        if not is_main_process():
            return None
        return func(*args, **kwargs)

    return command


def main() -> None:
    """Entry point of the ``saeatlas`` script."""
    import warnings

    warnings.showwarning = _show_warning
    signal.signal(signal.SIGTERM, _on_sigterm)
    app()


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """saeatlas's own warnings as one ``Warning: ...`` line on stderr, as its errors are
    one ``Error: ...`` line (other libraries' warnings as Python shows them)."""
    import warnings

    package = str(Path(__file__).resolve().parents[1])
    if issubclass(category, UserWarning) and str(Path(filename).resolve()).startswith(package):
        (file or sys.stderr).write(f"Warning: {message}\n")
    else:
        sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))
