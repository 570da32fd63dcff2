"""Every `qrgate ...` command line the README and the --help texts show parses with the real parser.

Command lines are taken from the README's code blocks (with ``\\`` continuations, comments
cut) and from every inline code span that starts with ``qrgate``, and from every help and
description text of the parser. Optional parts written ``[...]`` are dropped, ``a|b`` takes
its first choice and ``...`` stands for "more of the same": what is left must parse.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import shlex
from pathlib import Path

import pytest

from firmware.cli import build_parser

REPO = Path(__file__).resolve().parents[1]
INLINE = re.compile(r"`(qrgate [^`]+)`")


def _readme_lines() -> list[str]:
    lines: list[str] = []
    text = (REPO / "README.md").read_text(encoding="utf-8")
    in_block = False
    pending = ""
    for raw in text.splitlines():
        if raw.lstrip().startswith("```"):
            in_block = not in_block
            continue
        if in_block:
            line = pending + raw.strip()
            pending = ""
            if line.endswith("\\"):
                pending = line[:-1] + " "
                continue
            line = _drop_optional(_cut_comment(line))
            for part in re.split(r"\s*(?:&&|\|\||;|\|(?=\s))\s*", line):
                part = re.sub(r"^(sudo\s+|\$\s+|/opt/qrgate/venv/bin/|\.venv/bin/)", "", part.strip())
                if part.startswith("qrgate "):
                    lines.append(_cut_comment(part))
        else:
            lines.extend(m.group(1) for m in INLINE.finditer(raw))
    return lines


def _drop_optional(text: str) -> str:
    """Remove the ``[...]`` optional parts (one level of nesting)."""
    for _ in range(2):
        text = re.sub(r"\[[^\[\]]*\]", " ", text)
    return text


def _cut_comment(line: str) -> str:
    # a "#" after whitespace starts a shell comment (outside quotes, which these lines keep simple)
    out, quote = [], ""
    for i, ch in enumerate(line):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and i and line[i - 1].isspace():
            break
        out.append(ch)
    return "".join(out).strip()


def _help_lines() -> list[str]:
    found: list[str] = []

    def walk(parser: argparse.ArgumentParser) -> None:
        texts = [parser.description or ""]
        for action in parser._actions:
            texts.append(action.help or "")
            if isinstance(action, argparse._SubParsersAction):
                for choice in action._choices_actions:
                    texts.append(choice.help or "")
                for sub in action.choices.values():
                    walk(sub)
        for text in texts:
            found.extend(m.group(1) for m in INLINE.finditer(text))

    walk(build_parser())
    return found


def argv_of(line: str) -> list[str]:
    """The arguments of a documented command line, optional and elided parts removed."""
    text = _drop_optional(line)
    text = text.replace("...", " ").replace("…", " ")
    words = shlex.split(text)
    out = []
    for word in words[1:]:
        if "|" in word and not word.startswith(("'", '"')):
            word = word.split("|")[0]
        if word in ("", ">", "<") or word.startswith((">", "<")):
            break
        out.append(word)
    return out


LINES = sorted(set(_readme_lines()) | set(_help_lines()))


def test_the_readme_and_the_help_texts_show_command_lines():
    assert len(LINES) > 40
    assert any(line.startswith("qrgate provision wards") for line in LINES)


def _command_of(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.ArgumentParser:
    """The (sub)parser the leading words of argv name."""
    for word in argv:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if word.startswith("-") or not subs:
            break
        if word in subs[0].choices:  # other words are the command's own positionals ("deny")
            parser = subs[0].choices[word]
    return parser


@pytest.mark.parametrize("line", LINES)
def test_every_documented_command_line_parses(line):
    parser = build_parser()
    argv = argv_of(line)
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            args = parser.parse_args(argv)
        except SystemExit as exit_:
            message = err.getvalue().strip().splitlines()[-1:]
            if exit_.code == 0:
                return
            # a mention of a command ("see `qrgate keys new`") leaves its required arguments out;
            # the command must exist and every option it shows must be one of its options
            mention = re.search(r"the following arguments are required|one of the arguments .* is required|"
                                r"expected one argument|invalid (int|float) value: '[A-Z_]+'", err.getvalue())
            assert mention, f"{line!r} -> {argv}: {message}"
            command = _command_of(parser, argv)
            known = {o for a in command._actions for o in a.option_strings}
            unknown = [w for w in argv if w.startswith("--") and w.split("=")[0] not in known]
            assert unknown == [], f"{line!r}: {command.prog} has no {unknown}"
            return
    assert getattr(args, "func", None) is not None or "--version" in argv, f"{line!r} names no command"


def test_every_option_a_help_text_names_exists():
    mentioned: list[tuple[str, str]] = []
    options: set[str] = set()

    def walk(parser: argparse.ArgumentParser) -> None:
        texts = [parser.description or ""]
        for action in parser._actions:
            options.update(action.option_strings)
            texts.append(action.help or "")
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    walk(sub)
        mentioned.extend((parser.prog, m) for text in texts for m in re.findall(r"`(--[a-z][a-z0-9-]*)`", text))

    walk(build_parser())
    assert [(prog, flag) for prog, flag in mentioned if flag not in options] == []


def test_provision_wards_lists_a_provinces_wards_and_a_districts_townships(capsys):
    from firmware.cli import main

    assert main(["provision", "wards", "--province", "Hà Nội"]) == 0
    out = capsys.readouterr()
    assert "Phường Hoàng Mai" in out.out.splitlines() and "wards in Thành phố Hà Nội" in out.err
    assert main(["provision", "wards", "--province", "Hà Nội", "--district", "Huyện Đông Anh"]) == 0
    assert "Thị trấn Đông Anh" in capsys.readouterr().out.splitlines()
    assert main(["provision", "wards", "--province", "Hà Nộii"]) == 78
    assert "did you mean 'Thành phố Hà Nội'" in capsys.readouterr().err
