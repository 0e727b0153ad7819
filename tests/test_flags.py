"""The command line is made from declarations written once: every ``DQNConfig`` field is a flag
of ``--mode train`` (its docstring the help), no flag is declared twice, and each mode's
commands hold only its flags. Fast: nothing here trains."""

from __future__ import annotations

import ast
import dataclasses
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer

from dqn_mlx import cli  # noqa: F401  (registers the modes)
from dqn_mlx.config import FLAGS, DQNConfig, field_help, flag_fields, flag_name, flag_of
from dqn_mlx.flags import MODES, app, declared_flags
from dqn_mlx.sweep import _flag_args

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "dqn_mlx"


def _commands() -> dict[str, Any]:
    group: Any = typer.main.get_command(app)
    return dict(group.commands)


def test_every_config_field_is_a_flag_of_train_with_its_docstring_as_help() -> None:
    fields = [f.name for f in dataclasses.fields(DQNConfig)]
    assert set(fields) - set(flag_fields()) == {"preset", "frame_skip_overrides"}
    train = {param.name: param for param in _commands()["train"].params}
    docs = field_help()
    for field in flag_fields():
        param = train[field]
        assert param.opts[0] == flag_name(field), field
        assert " ".join(param.help.split()) == docs[field].replace("``", ""), field
        assert param.default is None  # left out: the preset's value
    assert train["total_steps"].opts == ["--steps"]
    assert train["terminal_on_life_loss"].secondary_opts == ["--no-terminal-on-life-loss"]


def test_no_flag_is_declared_twice() -> None:
    """A flag read by several modes is the same declaration in each (help, type), and
    the source declares each flag once: a config field's flag only from the field, every other
    one in one ``Annotated`` alias of ``cli.py``."""
    seen: dict[str, tuple[object, ...]] = {}
    for command in _commands().values():
        for param in command.params:
            if param.name == "mode":
                continue  # its default is the command's name
            what = (param.name, param.help, param.type_descriptor.annotation)
            for flag in (*param.opts, *param.secondary_opts):
                assert seen.setdefault(flag, what) == what, flag
    aliases = [
        node.targets[0].id
        for node in ast.parse((SRC / "cli.py").read_text()).body
        if isinstance(node, ast.Assign)
        and isinstance(node.targets[0], ast.Name)
        and isinstance(node.value, ast.Subscript)
        and ast.unparse(node.value).startswith("Annotated[")
    ]
    assert len(aliases) == len(set(aliases)) > 15
    mode_params = {
        arg.arg
        for node in ast.walk(ast.parse((SRC / "cli.py").read_text()))
        if isinstance(node, ast.FunctionDef) and node.name in ("train", "evaluate", "report",
                                                               "bench", "sweep")
        for arg in node.args.args
    }  # fmt: skip
    assert not mode_params & set(flag_fields())  # no config field re-declared by a mode
    named = [
        ast.literal_eval(name)
        for node in ast.walk(ast.parse((SRC / "cli.py").read_text()))
        if isinstance(node, ast.Call) and ast.unparse(node.func) == "_flag"
        for name in node.args[2:]
    ]
    assert named == ["--set"]  # the one flag not named after its parameter


def test_each_mode_reads_its_flags_and_the_config_flags_it_needs() -> None:
    declared = declared_flags()
    assert set(declared) == set(MODES)
    config = {flag_name(f) for f in flag_fields()}
    assert config <= declared["train"]
    assert declared["sweep"] & config == config - {"--seed"}  # --seeds instead
    assert declared["eval"] & config == {"--seed", "--eval-steps"}
    assert declared["bench"] & config == {"--steps"}
    assert declared["report"] == {"--mode", "--weights-dir"}
    assert "--load-path" in declared["eval"] and "--load-path" not in declared["train"]


def test_a_mode_lists_the_few_config_flags_it_borrows_beside_its_own() -> None:
    """In eval, --seed and --eval-steps are the games' seed and nips2013's length, so --help
    lists them under Eval, not under the training panels; bench's --steps under Speed. The
    modes that read every field (train, sweep) list each in the field's own panel."""
    panels = {
        name: {flag: param.rich_help_panel for param in command.params for flag in param.opts}
        for name, command in _commands().items()
    }
    assert panels["eval"]["--seed"] == panels["eval"]["--eval-steps"] == "Eval"
    assert panels["eval"]["--load-path"] == "Eval"
    assert panels["bench"]["--steps"] == panels["bench"]["--rounds"] == "Speed"
    assert panels["train"]["--eval-steps"] == panels["train"]["--steps"] == "Train"
    shared = panels["train"].keys() & panels["sweep"].keys()
    assert len(shared) > 30
    assert all(panels["train"][f] == panels["sweep"][f] for f in shared)


def test_messages_name_a_field_by_the_flag_a_user_types() -> None:
    assert flag_of("total_steps") == "--steps" and flag_of("replay_size") == "--replay-size"
    assert flag_of("gamma") == "--gamma or --set gamma=..."
    assert set(FLAGS) < set(flag_fields())  # the run's own panel; the rest: hyperparameters


def test_a_sweep_passes_its_training_flags_on_as_the_training_command_reads_them() -> None:
    flags = {"total_steps": 3000, "terminal_on_life_loss": False, "gamma": 0.9, "loss": "huber"}
    args = _flag_args(flags)
    assert args == ["--steps", "3000", "--no-terminal-on-life-loss", "--gamma", "0.9",
                    "--loss", "huber"]  # fmt: skip
    train = _commands()["train"]
    context = train.make_context("train", list(args))
    parsed = {name: context.params[name] for name in flags}
    assert parsed == flags


@pytest.mark.parametrize("mode", MODES)
def test_the_help_of_a_mode_lists_exactly_its_flags(mode: str) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "main.py"), "--mode", mode, "--help"],
        capture_output=True, text=True, timeout=60, check=True, env={"COLUMNS": "200"},
    )  # fmt: skip
    listed = set(re.findall(r"^│ (--[a-z-]+)", result.stdout, re.M)) - {"--help"}
    own = {flag for flag in declared_flags()[mode] if not flag.startswith("--no-")}
    assert listed == own
    assert "Usage: main.py --mode " + mode in result.stdout


def test_help_names_what_a_flag_takes_not_its_python_type() -> None:
    """--env takes a game id (repeated in a sweep), --set a name=value: the help says so, not
    ``<list[str]>``."""
    shown = subprocess.run([sys.executable, str(ROOT / "main.py"), "--mode", "sweep", "--help"],
                           capture_output=True, text=True, check=True,
                           env={"COLUMNS": "120", "PATH": ""}).stdout  # fmt: skip
    assert "list[str]" not in shown
    assert re.search(r"--env\s+<id>", shown) and re.search(r"--set\s+<name=value>", shown), shown
