"""The README test's own parts can fail: a drifted output or value is caught, and what the
README leaves out (`...`, spacing) is not counted against it."""

from __future__ import annotations

import pytest

from tests.e2e.readme import Block, examples, matches, python_checked


def test_an_ellipsis_stands_for_any_text_and_spacing_does_not_count() -> None:
    assert matches("head ...@56", "head 108835fac5@56")
    assert matches("a\n...\nz", "a\nb\nc\nz")
    assert matches(" position  kind", "position kind   ")
    assert not matches("log position 59", "log position 56")
    assert not matches("a\nz", "a\nb\nz")


def test_a_value_shown_in_a_python_comment_is_checked() -> None:
    exec(python_checked("x = 2\nx + 1  # 3\n"), {})
    with pytest.raises(AssertionError, match="x \\+ 1: 4, the README shows 3"):
        exec(python_checked("x = 3\nx + 1  # 3\n"), {})


def test_prose_comments_and_indented_claims_are_read_as_python() -> None:
    source = "try:\n    raise KeyError('k')\nexcept KeyError as e:\n    e.args  # ('k',)\n"
    exec(python_checked(source + "y = 1  # a note, not a value\n"), {})
    with pytest.raises(AssertionError):
        exec(python_checked(source.replace("('k',)", "('j',)")), {})


def test_a_shell_example_is_its_command_and_the_lines_after_it() -> None:
    block = Block("text", "$ echo 'a\nb'\na\nb\n$ true", 10, None)
    found = examples(block)
    assert [(e.command, e.shown) for e in found] == [("echo 'a\nb'", "a\nb"), ("true", "")]
