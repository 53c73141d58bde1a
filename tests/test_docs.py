"""Docs and CLI stay in step: every command has help and appears in the README."""

from pathlib import Path

import pytest
from typer.main import get_command
from typer.testing import CliRunner

from saeatlas.cli import app

README = (Path(__file__).parents[1] / "README.md").read_text()
COMMANDS = sorted(get_command(app).commands)


def test_readme_opens_with_the_two_commands():
    head = README[:600]
    assert "make demo" in head and "make test" in head


@pytest.mark.parametrize("name", COMMANDS)
def test_every_command_has_help_and_is_documented(name):
    command = get_command(app).commands[name]
    assert command.help, f"`saeatlas {name}` has no help text"
    result = CliRunner().invoke(app, [name, "--help"])
    assert result.exit_code == 0, result.output
    assert f"saeatlas {name}" in README, f"README does not document `saeatlas {name}`"
