"""How a program is written, apart from what it computes: indentation,
quotes and comments.

The AST operators (`evoprompting.mutation`) return `ast.unparse` text: four
spaces, single quotes, no comments. Programs in the LM's corpus are written in
several styles, and a child must look like the parents it came from (an LM
continues the code it reads), so the corpus writes every program in a
`Style` (`apply`) and carries its parents' comments over to the lines it kept
(`carry_comments`).
"""

from __future__ import annotations

import ast
import dataclasses
import io
import re
import tokenize
from typing import Iterable

import numpy as np


@dataclasses.dataclass(frozen=True)
class Style:
    """Indentation (spaces per level) and quotes of simple string literals."""

    indent: int = 4
    double_quotes: bool = False


def random_style(rng: np.random.Generator, *, plain: float = 0.6) -> Style:
    """The plain style (4 spaces, single quotes) with probability `plain`,
    else 2 spaces and/or double quotes."""
    if rng.random() < plain:
        return Style()
    while True:
        style = Style(indent=int(rng.choice([2, 4])),
                      double_quotes=bool(rng.random() < 0.6))
        if style != Style():
            return style


def style_of(code: str) -> Style:
    """The style `code` is written in (its first indented line's spaces; the
    quotes of its first one-line string literal without quotes inside)."""
    indent = next((len(line) - len(line.lstrip(' '))
                   for line in code.splitlines() if line.startswith(' ')), 4)
    quote = next((t.string[0] for t in _tokens(code) if t.type == tokenize.STRING
                  and re.fullmatch(_SIMPLE_STRING, t.string)), "'")
    return Style(indent=2 if indent == 2 else 4, double_quotes=quote == '"')


# A one-line string literal without quotes or backslashes inside.
_SIMPLE_STRING = r"'[^'\"\\\n]*'|\"[^'\"\\\n]*\""


def _tokens(code: str) -> list[tokenize.TokenInfo]:
    try:
        return list(tokenize.generate_tokens(io.StringIO(code).readline))
    except (tokenize.TokenError, SyntaxError):
        return []


def apply(code: str, style: Style) -> str:
    """`code` (indented by four spaces per level) in `style`.

    Only leading indentation and the quotes of one-line string literals
    without quotes or backslashes inside change; the program's AST is the
    same (checked: a rewrite that would change it returns `code` as is).
    """
    out = code
    if style.double_quotes:
        swaps = [t for t in _tokens(code) if t.type == tokenize.STRING
                 and re.fullmatch(_SIMPLE_STRING, t.string)
                 and t.string[0] == "'"]
        lines = out.splitlines(keepends=True)
        for t in reversed(swaps):  # Right to left keeps columns valid.
            row, col = t.start[0] - 1, t.start[1]
            line = lines[row]
            lines[row] = (line[:col] + '"' + t.string[1:-1] + '"'
                          + line[col + len(t.string):])
        out = ''.join(lines)
    if style.indent != 4:
        out = re.sub(r'(?m)^((?:    )+)',
                     lambda m: ' ' * (len(m.group(1)) // 4 * style.indent), out)
    try:
        same = ast.dump(ast.parse(out)) == ast.dump(ast.parse(code))
    except SyntaxError:
        same = False
    return out if same else code


def _key(line: str) -> str:
    """A code line's comparison key: its statement unparsed, if it is one."""
    text = line.strip()
    try:
        return ast.unparse(ast.parse(text))
    except SyntaxError:
        return text


def _comments(source: str) -> dict[str, tuple[list[str], str]]:
    """Comments of `source` by the key of the code line they belong to:
    (full-line comments just above it, its trailing comment)."""
    found: dict[str, tuple[list[str], str]] = {}
    above: list[str] = []
    trailing = {t.start[0]: t.string for t in _tokens(source)
                if t.type == tokenize.COMMENT}
    for n, line in enumerate(source.splitlines(), start=1):
        stripped = line.strip()
        if stripped.startswith('#'):
            above.append(stripped)
            continue
        if not stripped:
            above = []
            continue
        comment = trailing.get(n, '')
        code_part = line[:line.index(comment)] if comment else line
        if above or comment:
            found.setdefault(_key(code_part), (above, comment))
        above = []
    return found


def carry_comments(code: str, sources: Iterable[str]) -> str:
    """`code` (four-space, comment-free) with the comments that `sources`
    (its parents) have on the same statements: a line of `code` that is a
    line of a source gets that line's comments, as an LM that copies lines
    would copy them."""
    comments: dict[str, tuple[list[str], str]] = {}
    for source in sources:
        for key, value in _comments(source).items():
            comments.setdefault(key, value)
    if not comments:
        return code
    out = []
    for line in code.splitlines():
        above, trailing = comments.get(_key(line), ([], '')) if line.strip() else ([], '')
        indent = line[:len(line) - len(line.lstrip())]
        out += [indent + c for c in above]
        out.append(f'{line}  {trailing}' if trailing else line)
    return '\n'.join(out) + '\n'
