"""Every command a docs page shows (README.md, docs/*.md) is one the parser takes: its
subcommand exists and every option it names is one of that subcommand's."""

import importlib.util
import re
from pathlib import Path

import pytest

from lazyvm.commands import build_parser

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md"] + sorted((ROOT / "docs").glob("*.md"))
# Where a command written in a page ends.
STOP = {"|", "||", "&&", ";", ">", "<", "2>", "2>&1"}
HEAD = re.compile(r"(python3? -m lazyvm(?:\.\w+)*|lazyvm)(?:\s+(\S.*))?$")


def _subcommands():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    return parser, sub.choices


def commands(text):
    """(line number, head, rest) of every command form in a page: lines of code blocks
    (continuation lines joined) and inline code spans that start with `lazyvm ` or hold
    `python -m lazyvm...`; two commands on one line are two."""
    out = []
    in_block = False
    lines = text.splitlines()
    no = 0
    while no < len(lines):
        line = lines[no]
        no += 1
        if line.lstrip().startswith("```"):
            in_block = not in_block
            continue
        if in_block:
            start = no
            while line.rstrip().endswith("\\") and no < len(lines):
                line = line.rstrip()[:-1] + " " + lines[no]
                no += 1
            spans = [line]
        else:
            start = no
            spans = re.findall(r"`([^`]+)`", line)
        for span in spans:
            s = re.sub(r"^\$\s+", "", span.strip())
            s = s.split(" #")[0]
            parts = re.split(r"\s{2,}(?=lazyvm\s)", s)   # two commands side by side
            for part in parts:
                m = HEAD.search(part)
                if not m:
                    continue
                if m.group(1) == "lazyvm" and m.start(1) != 0:
                    continue                 # `from lazyvm import ...` and the like
                out.append((start, m.group(1), m.group(2) or ""))
    return out


def problems(head, rest, parser=None, subs=None):
    """What is wrong with one command form: [] when the parser takes it."""
    if parser is None:
        parser, subs = _subcommands()
    if head.startswith("python"):
        mod = head.split()[-1]
        if importlib.util.find_spec(mod) is None:
            return [f"no module {mod}"]
        if mod != "lazyvm":
            return []                    # python -m lazyvm.X: the module's own arguments
    toks = []
    for t in rest.split():
        if t in STOP:
            break
        toks.append(t)
    if not toks:
        return []
    first = toks[0].strip("[]()`'\",.")
    if first.startswith("-"):
        ok = first.split("=")[0] in parser._option_string_actions
        return [] if ok else [f"lazyvm has no option {first}"]
    if not re.fullmatch(r"[a-z][a-z-]*", first):
        return []                        # a placeholder such as COMMAND
    if first not in subs:
        return [f"no subcommand {first!r} (there are {', '.join(subs)})"]
    if first == "bench":
        return []                        # the rest goes to pytest
    sp = subs[first]
    out = []
    for t in toks[1:]:
        opt = t.strip("[]()`'\",").split("=")[0]
        if not re.fullmatch(r"--?[A-Za-z][\w-]*", opt):
            continue
        if opt not in sp._option_string_actions:
            out.append(f"lazyvm {first} has no option {opt}")
    return out


CASES = [(p.relative_to(ROOT).as_posix(), no, head, rest) for p in PAGES if p.exists()
         for no, head, rest in commands(p.read_text())]


def test_the_pages_show_commands():
    assert len(CASES) > 30
    assert any(page == "README.md" for page, *_ in CASES)


def test_the_check_finds_a_command_that_does_not_exist():
    page = "\n".join([
        "Run `lazyvm compare --quik` first.",
        "```",
        "lazyvm costs show        # gone",
        "lazyvm sweep s.toml --out r.csv \\",
        "    --scheduler tcp://h:1 --cluster x",
        "python -m lazyvm.nosuch",
        "from lazyvm import Machine",
        "```",
        "`lazyvm run fork_exit --quick`   `python -m lazyvm run --list`",
    ])
    found = {(no, tuple(problems(head, rest))) for no, head, rest in commands(page)}
    assert found == {(1, ("lazyvm compare has no option --quik",)),
                     (3, ("no subcommand 'costs' (there are compare, run, bench, "
                          "calibrate, capture, replay, show, sweep)",)),
                     (4, ("lazyvm sweep has no option --cluster",)),
                     (6, ("no module lazyvm.nosuch",)),
                     (9, ())}


@pytest.mark.parametrize("page,no,head,rest", CASES,
                         ids=[f"{c[0]}:{c[1]}" for c in CASES])
def test_every_command_a_page_shows_exists(page, no, head, rest):
    assert problems(head, rest) == [], f"{page}:{no}: {head} {rest}"
