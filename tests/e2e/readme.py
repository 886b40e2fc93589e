"""Reading the README as a contract: its fenced blocks, in order, and whether an answer
reads as the one it shows (`...` standing for what it leaves out)."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"
NOT_RUN = re.compile(r"<!-- not run: (.+?) -->\s*$")
FENCE = re.compile(r"^```(\w*)\s*$")


@dataclass(frozen=True)
class Block:
    """A fenced block: its language, its text, the README line it starts on, and why it
    is not run (an HTML comment `<!-- not run: why -->` on the line before it), if so."""

    language: str
    text: str
    line: int
    not_run: str | None


@dataclass(frozen=True)
class Example:
    """A shell command shown with `$ ` and the output shown after it."""

    command: str
    shown: str
    line: int


def blocks(path: Path = README) -> list[Block]:
    lines = path.read_text().splitlines()
    found: list[Block] = []
    i = 0
    while i < len(lines):
        opened = FENCE.match(lines[i])
        if opened is None:
            i += 1
            continue
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
        why = NOT_RUN.search(lines[i - 1]) if i else None
        text = "\n".join(lines[i + 1 : end])
        found.append(Block(opened.group(1), text, i + 1, why.group(1) if why else None))
        i = end + 1
    return found


def examples(block: Block) -> list[Example]:
    """The `$ command` lines of a console or text block, each with the lines it shows after
    it; a command whose quotes are still open goes on to the next line."""
    found: list[Example] = []
    lines = block.text.splitlines()
    i = 0
    while i < len(lines):
        if not lines[i].startswith("$ "):
            i += 1
            continue
        start, command = i, lines[i][2:]
        while not _complete(command) and i + 1 < len(lines):
            i += 1
            command += "\n" + lines[i]
        j = i + 1
        while j < len(lines) and not lines[j].startswith("$ "):
            j += 1
        found.append(Example(command, "\n".join(lines[i + 1 : j]), block.line + 1 + start))
        i = j
    return found


def _complete(command: str) -> bool:
    try:
        shlex.split(command, comments=True)
    except ValueError:
        return False
    return not command.rstrip().endswith("\\")


def _normal(text: str) -> str:
    """Spaces as a table lays them out do not count; trailing ones neither."""
    return "\n".join(re.sub(r"[ \t]+", " ", line).strip() for line in text.strip().splitlines())


def matches(shown: str, answer: str) -> bool:
    """Whether `answer` reads as `shown`: the same lines, spacing aside, each `...`
    standing for any text (a line of `...` alone: any lines)."""
    pattern = ".*".join(re.escape(part) for part in _normal(shown).split("..."))
    return re.fullmatch(pattern, _normal(answer), re.S) is not None


def python_checked(source: str) -> str:
    """A Python example as a script that also checks what it shows: a line `expression  #
    value` whose comment reads as a Python literal asserts that the expression equals it;
    other comments are prose."""
    out = []
    inside = _continued_lines(source)
    for number, line in enumerate(source.splitlines(), start=1):
        code, hashed, comment = line.partition("  #")
        claim = _literal(comment.strip()) if hashed else _NO_CLAIM
        if claim is not _NO_CLAIM and number not in inside and _is_expression(code):
            indent = code[: len(code) - len(code.lstrip())]
            out.append(f"{indent}__shown(({code.strip()}), ({comment.strip()}), {code.strip()!r})")
        else:
            out.append(line)
    prelude = (
        "def __shown(got, shown, what):\n"
        "    assert got == shown, f'{what}: {got!r}, the README shows {shown!r}'\n"
    )
    return prelude + "\n".join(out) + "\n"


_NO_CLAIM = object()


def _literal(text: str) -> object:
    import ast

    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return _NO_CLAIM


def _is_expression(code: str) -> bool:
    import ast

    try:
        ast.parse(code.strip(), mode="eval")
    except SyntaxError:
        return False
    return bool(code.strip())


def _continued_lines(source: str) -> set[int]:
    """The lines that begin inside an open bracket: part of a longer expression, never
    a statement of their own (an indented line in a block is one)."""
    import io
    import tokenize

    depth, inside = 0, set()
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.OP and token.string in "([{":
            depth += 1
        elif token.type == tokenize.OP and token.string in ")]}":
            depth -= 1
        elif token.type == tokenize.NL and depth:
            inside.add(token.start[0] + 1)
    return inside
