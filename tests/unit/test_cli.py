"""The command line: every subcommand has a handler, and a bad setting is an error naming it."""

from __future__ import annotations

import argparse

import pytest

from stream.cli import COMMANDS, _parser, main


def test_every_subcommand_has_a_handler() -> None:
    parser = _parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert set(subparsers.choices) == set(COMMANDS)


def test_a_bad_setting_fails_naming_it(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--partitions", "zero", "topics"]) == 2
    assert "partitions" in capsys.readouterr().err
