"""The docs' commands run: every marked block of README.md and docs/*.md is executed, and every
``reward-plugin`` command anywhere in them uses options the CLI has.

Convention (docs/architecture.md, "Docs that run"): a fenced block right after the line
``<!-- docs-test -->`` is run by this file, ``<!-- docs-test: slow -->`` marks one that takes
minutes (run in the slow suite), ``<!-- docs-test: bad-input -->`` one that shows mistakes on
purpose (not run, options not checked). The blocks of one page run in order, in one fresh folder per page,
with ``bash -euo pipefail``; ``reward-plugin`` is this checkout's CLI. A fast block must not need
the output of a slow one; a slow block run alone (``-m slow``) first runs the page's fast blocks before it. Paths under ``../shared`` appear only in docs/benchmarks.md, whose
reproduction commands use the project's shared data.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import ROOT

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
MARKER = re.compile(r"^<!-- docs-test(?::\s*(?P<kind>slow|bad-input))? -->\s*$")
FENCE = re.compile(r"^(?P<indent> *)(?P<fence>```+|~~~+)(?P<lang>[\w-]*)")


@dataclass
class Block:
    page: Path
    line: int
    code: str
    lang: str
    run: bool
    slow: bool
    bad_input: bool = False

    @property
    def id(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def blocks(page: Path) -> list[Block]:
    """The fenced code blocks of ``page``, each with whether (and how) the docs test runs it."""
    lines = page.read_text(encoding="utf-8").splitlines()
    out: list[Block] = []
    i = 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        fence, start = match["fence"], i
        marker = MARKER.match(lines[i - 1]) if i > 0 else None
        i += 1
        body = []
        while i < len(lines) and not lines[i].strip().startswith(fence):
            body.append(lines[i][len(match["indent"]) :])
            i += 1
        i += 1
        kind = marker["kind"] if marker else None
        run = bool(marker) and kind != "bad-input"
        out.append(
            Block(page, start + 1, "\n".join(body), match["lang"], run, kind == "slow", kind == "bad-input")
        )
    return out


ALL_BLOCKS = [b for page in PAGES for b in blocks(page)]
RUN_BLOCKS = [
    pytest.param(b, id=b.id, marks=[pytest.mark.slow, pytest.mark.timeout(1800)] if b.slow else [])
    for b in ALL_BLOCKS
    if b.run
]


@pytest.fixture(scope="session")
def page_folders(tmp_path_factory) -> dict[Path, Path]:
    """One working folder per page (its blocks share it, in order), and a ``reward-plugin`` shim."""
    bin_dir = tmp_path_factory.mktemp("bin")
    shim = bin_dir / "reward-plugin"
    shim.write_text(
        f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -m reward_plugin "$@"\n', encoding="utf-8"
    )
    shim.chmod(0o755)
    return {"bin": bin_dir, "ran": set(), **{page: tmp_path_factory.mktemp(page.stem) for page in PAGES}}


@pytest.mark.parametrize("block", RUN_BLOCKS)
def test_marked_block_runs(block: Block, page_folders):
    assert block.lang in ("bash", "sh", "console", ""), f"{block.id}: only shell blocks can be run"
    env = {
        **os.environ,
        "PATH": f"{page_folders['bin']}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    # A slow block may use what the page's earlier fast blocks made: in a run without them
    # (`-m slow`), they run first, in the same folder.
    earlier = [
        b.code
        for b in ALL_BLOCKS
        if b.page == block.page
        and b.run
        and not b.slow
        and b.line < block.line
        and b.id not in page_folders["ran"]
    ]
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", "\n".join([*earlier, block.code]) if block.slow else block.code],
        cwd=page_folders[block.page],
        env=env,
        capture_output=True,
        text=True,
        timeout=1700 if block.slow else 600,
        check=False,
    )
    assert result.returncode == 0, f"{block.id} failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    page_folders["ran"].add(block.id)


def test_the_readme_runs_the_three_commands_on_the_bundled_sample():
    readme = [b for b in ALL_BLOCKS if b.page.name == "README.md" and b.run]
    code = "\n".join(b.code for b in readme)
    for command in ("reward-plugin convert", "reward-plugin train", "reward-plugin eval"):
        assert command in code
    assert "python -m reward_plugin.sample_data" in code


def test_the_readme_shows_an_install_command_on_its_first_screen():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    first = next(n for n, line in enumerate(lines, 1) if line.startswith("pip install"))
    assert first <= 30, f"the first install command is on line {first}"


def commands(code: str) -> list[list[str]]:
    """The ``reward-plugin ...`` command lines of a shell block (continuations joined, comments cut)."""
    joined = re.sub(r"\\\n\s*", " ", code)
    out = []
    for line in joined.splitlines():
        line = line.split(" #", 1)[0].strip()
        line = line.removeprefix("$ ")
        for part in re.split(r"&&|;|\|", line):
            part = part.strip()
            if part.startswith("reward-plugin "):
                try:
                    out.append(shlex.split(part))
                except ValueError:
                    continue
    return out


def cli_options(subcommand: str) -> set[str]:
    """The ``--options`` of ``reward-plugin SUBCOMMAND`` (from the CLI's own parser, in process)."""
    import argparse

    from reward_plugin.cli import build_parser

    parser = build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert subcommand in subparsers.choices, f"reward-plugin has no command {subcommand!r}"
    return {o for action in subparsers.choices[subcommand]._actions for o in action.option_strings}


def train_keys() -> set[str]:
    """Keys ``reward-plugin train --KEY VALUE`` accepts: RewardConfig fields and the reward stage's keys."""
    import dataclasses

    from reward_plugin.config import RewardConfig
    from reward_plugin.stages.reward import STAGE_KEYS

    return {f.name for f in dataclasses.fields(RewardConfig)} | set(STAGE_KEYS) | {"resume", "check", "help"}


def test_every_documented_command_uses_options_the_cli_has():
    known: dict[str, set[str]] = {}
    problems = []
    for block in ALL_BLOCKS:
        if (
            block.lang not in ("bash", "sh", "console", "")
            or block.page.name == "benchmarks.md"
            or block.bad_input
        ):
            continue
        for argv in commands(block.code):
            if len(argv) < 2 or argv[1].startswith("-"):
                continue
            sub = argv[1]
            if sub == "train":
                allowed = {f"--{k}" for k in train_keys()}
                used = {
                    "--" + a[2:].split("=", 1)[0].split(".")[0].replace("-", "_")
                    for a in argv[2:]
                    if a.startswith("--")
                }
            else:
                if sub not in known:
                    known[sub] = cli_options(sub)
                allowed = known[sub]
                used = {a.split("=", 1)[0] for a in argv[2:] if a.startswith("--")}
            problems += [f"{block.id}: reward-plugin {sub} {u}" for u in sorted(used - allowed)]
    assert not problems, "options the CLI does not have:\n" + "\n".join(problems)


def test_no_shared_paths_in_user_docs():
    """``../shared`` is the project's own data folder: users do not have it (benchmarks.md's commands excepted)."""
    offenders = []
    for page in PAGES:
        lines = (
            _outside_blocks(page)
            if page.name == "benchmarks.md"
            else page.read_text(encoding="utf-8").splitlines()
        )
        offenders += [f"{page.relative_to(ROOT)}: {line.strip()}" for line in lines if "../shared" in line]
    assert not offenders, "\n".join(offenders)


def _outside_blocks(page: Path) -> list[str]:
    lines = page.read_text(encoding="utf-8").splitlines()
    out, fence = [], None
    for line in lines:
        match = FENCE.match(line)
        if fence is None and match:
            fence = match["fence"]
            continue
        if fence is not None:
            if line.strip().startswith(fence):
                fence = None
            continue
        out.append(line)
    return out
