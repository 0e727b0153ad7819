"""How the command line is made from declarations: a mode's function becomes a Typer (click)
command whose flags are its parameters, ``--mode`` and the flags of ``DQNConfig``'s fields;
and a flag of another mode is refused, naming the modes whose commands declare it.

A config field's flag takes everything from the field, written once in ``config.py``: its name
(``config.flag_name``), type (choices for a ``Literal``, ``--x/--no-x`` for a bool), range
(checked by ``DQNConfig.validate``, so that messages name the flag), help (the field's
docstring) and ``--help`` panel. A new field is a new flag of the modes that read them all.
"""

from __future__ import annotations

import functools
import inspect
import itertools
import typing
from collections.abc import Callable
from typing import Annotated, Any, Literal

import typer
from rich.markup import escape

from dqn_mlx import config
from dqn_mlx.core.replay import BYTES_PER_TRANSITION
from dqn_mlx.errors import UserError, errors_as_exit_codes

ModeName = Literal["train", "eval", "report", "bench", "sweep"]
MODES: tuple[str, ...] = typing.get_args(ModeName)
Mode = Annotated[ModeName, typer.Option(rich_help_panel=config.GENERAL, metavar="<mode>",
    help="train a new agent, eval(uate) a checkpoint, report the results table, bench(mark) "
    "speed, or sweep: train every --env x --seeds run on Ray")]  # fmt: skip

app = typer.Typer(
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)


def mode(
    name: str, fields: list[str], defaults_shown: bool = True, panel: str | None = None
) -> Callable[..., Any]:
    """Register a mode's function as the command ``name`` (its docstring: the help). Its
    parameters are its flags; to them come ``--mode`` and the flags of the config ``fields``,
    whose given values reach it as ``given``, by field name. ``defaults_shown``: the mode
    starts from the default preset, whose values ``--help`` shows. ``panel``: the ``--help``
    panel of a mode that borrows a few fields, to list them beside its own flags (eval's
    ``--eval-steps`` is no training flag there); otherwise each field's own panel."""

    def register(run_mode: Callable[..., None]) -> Callable[..., None]:
        hints = typing.get_type_hints(run_mode, include_extras=True)
        keyword = inspect.Parameter.KEYWORD_ONLY
        own = [
            p.replace(annotation=hints[p.name], kind=keyword)
            for p in inspect.signature(run_mode).parameters.values()
            if p.name != "given"
        ]
        of_fields = sorted((config_flag(f, defaults_shown, panel) for f in fields),
                           key=lambda p: p.name not in config.FLAGS)  # the run's first  # fmt: skip

        @functools.wraps(run_mode)
        def command(**values: Any) -> None:
            values.pop("mode")  # the command's own name (``run`` chose it by --mode)
            given = {f: values.pop(f) for f in fields}
            with errors_as_exit_codes():
                run_mode(**values, given={f: v for f, v in given.items() if v is not None})

        head = inspect.Parameter("mode", keyword, default=name, annotation=Mode)
        params = [head, *of_fields, *own]
        command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        command.__annotations__ = {p.name: p.annotation for p in params}
        more = "`--mode MODE --help` lists the flags of another mode."
        app.command(name, help=f"{inspect.getdoc(run_mode)} {more}")(command)
        return run_mode

    return register


def config_flag(name: str, defaults_shown: bool, panel: str | None = None) -> inspect.Parameter:
    """The flag of the ``DQNConfig`` field ``name``, a keyword parameter: its type, its
    docstring as help, its ``--help`` panel (or the mode's ``panel``) and, if shown, the
    default preset's value."""
    hint, flag = typing.get_type_hints(config.DQNConfig)[name], config.FLAGS.get(name)
    option = typer.Option(
        *([] if hint is bool else [config.flag_name(name)]),  # a bool's: --name/--no-name
        help=escape(config.field_help()[name].replace("``", "")),
        rich_help_panel=panel or (flag.panel if flag else config.HYPERPARAMETERS),
        show_default=shown_default(name) if defaults_shown else False,
    )
    kind = inspect.Parameter.KEYWORD_ONLY
    return inspect.Parameter(name, kind, default=None, annotation=Annotated[hint | None, option])


def shown_default(name: str) -> str:
    """The default preset's value of a field, in its unit: ``1,000,000 transitions = 7.06 GB,
    laptop preset``."""
    value, flag = getattr(config.PRESETS[config.DEFAULT_PRESET], name), config.FLAGS.get(name)
    if isinstance(value, bool):
        shown = "on" if value else "off"
    elif isinstance(value, int | float):
        shown = f"{value:,}" if isinstance(value, int) else f"{value:g}"
    else:
        shown = str(value)
    if flag and flag.unit:
        shown += f" {flag.unit}"
    if flag and flag.unit == "transitions":
        shown += f" = {value * BYTES_PER_TRANSITION / 1e9:.2f} GB"
    return f"{shown}, {config.DEFAULT_PRESET} preset"


def declared_flags() -> dict[str, set[str]]:
    """Each mode's flags, as its command declares them (``--no-accel`` included)."""
    group: Any = typer.main.get_command(app)
    return {
        name: {flag for param in command.params for flag in (*param.opts, *param.secondary_opts)}
        for name, command in group.commands.items()
    }


def check_flags_of_mode(mode: str, args: list[str], hints: dict[tuple[str, str], str]) -> None:
    """Refuse a flag given on the command line that ``mode`` does not read: accepted and
    ignored, it would let a user believe it did something. ``hints``: what to say instead,
    by flag and mode."""
    declared = declared_flags()
    given = {arg.split("=")[0] for arg in args if arg.startswith("--")}
    foreign = sorted(f for f in given - declared[mode] if any(f in d for d in declared.values()))
    if not foreign:
        return
    where = {flag: ", ".join(m for m in MODES if flag in declared[m]) for flag in foreign}
    why = "".join(f": {hints[flag, mode]}" for flag in foreign if (flag, mode) in hints)
    if len(set(where.values())) == 1:
        one = len(foreign) == 1
        raise UserError(
            f"{' and '.join(foreign)} {'is a flag' if one else 'are flags'} of --mode "
            f"{where[foreign[0]]}; --mode {mode} does not read {'it' if one else 'them'}{why}"
        )
    listed = ", ".join(f"{flag} (--mode {modes})" for flag, modes in where.items())
    raise UserError(f"--mode {mode} does not read {listed}{why}")


def check_values_given(args: list[str], flags: tuple[str, ...] = ("--set",)) -> None:
    """Refuse a flag of ``flags`` whose value is missing, where the parser would take the next
    flag as its value (``--set --weights-dir X`` would set ``--weights-dir`` and leave ``X``
    over, an error that names neither)."""
    for flag, value in itertools.zip_longest(args, args[1:]):
        if flag in flags and (value is None or value.startswith("--")):
            got = "nothing" if value is None else f"the flag {value}"
            raise UserError(f"{flag} expects name=value (e.g. {flag} gamma=0.98), got {got}")


def mode_of(args: list[str]) -> str:
    """The mode ``--mode`` names (the last one given), train if none does; a name that is no
    mode is left to the parser to refuse."""
    named = [b for a, b in itertools.pairwise(args) if a == "--mode"]
    named += [a.removeprefix("--mode=") for a in args if a.startswith("--mode=")]
    return next((m for m in reversed(named) if m in MODES), "train")
