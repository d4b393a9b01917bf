"""Every Python block in README.md and docs/ runs, and every page points only at real files.

Blocks run in a fresh interpreter each, in a scratch directory of their page, with
top-level ``await`` allowed (the block then runs on a fresh event loop). What a block
needs from elsewhere is said in an HTML comment on the line right before its fence:

- ``<!-- not-run: REASON -->``: the block is not run; the reason is required (a cluster
  at a fixed address, a Kubernetes API server, an hour-long run...).
- ``<!-- continues -->``: the block runs after the page's previous block, in the same
  interpreter (the page builds one program step by step).
- ``<!-- pytest -->``: the block (after the blocks it continues) is a test module, run
  with pytest and the ``phoenix_cluster`` plugin, as a reader would run it.

A block whose first line is a comment naming a file (``# myapp/agents.py``) is that
file: it is written into the page's scratch directory, so later blocks import it.
"""

from __future__ import annotations

import itertools
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import click
import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]

_FENCE = re.compile(r"^(\s*)```(\w*)\s*$")  # indented inside a list item too
_MARK = re.compile(r"^<!--\s*(not-run|continues|pytest)\s*(?::\s*(.*?))?\s*-->$")
_FILE = re.compile(r"^#\s*([\w./-]+\.py)\s*$")

# Runs a block the way a reader pastes it: top-level `await` allowed.
_RUNNER = """
import ast, asyncio, sys, types
path = sys.argv[1]
code = compile(open(path).read(), path, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
main = types.ModuleType("__main__")
main.__file__ = path
sys.modules["__main__"] = main
result = eval(code, main.__dict__)
if asyncio.iscoroutine(result):
    asyncio.run(result)
"""


@dataclass
class Block:
    page: Path
    line: int
    language: str
    code: str
    mark: str = ""
    reason: str = ""
    previous: Block | None = None
    files: list[Block] = field(default_factory=list)

    @property
    def id(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"

    @property
    def file_name(self) -> str | None:
        first = self.code.splitlines()[0] if self.code else ""
        match = _FILE.match(first)
        return match.group(1) if match else None

    def program(self) -> str:
        """This block's code after the blocks it continues."""
        chain: list[Block] = []
        block: Block | None = self
        while block is not None:
            chain.append(block)
            block = block.previous if block.mark == "continues" else None
        return "\n\n".join(b.code for b in reversed(chain))


def blocks_of(page: Path) -> list[Block]:
    """The fenced blocks of ``page`` (every language), with their marks."""
    lines = page.read_text().splitlines()
    found: list[Block] = []
    i = 0
    while i < len(lines):
        fence = _FENCE.match(lines[i])
        if fence is None:
            i += 1
            continue
        indent = len(fence.group(1))
        end = next(j for j in range(i + 1, len(lines)) if lines[j].strip().startswith("```"))
        code = "\n".join(line[indent:] for line in lines[i + 1:end]) + "\n"
        block = Block(page, i + 1, fence.group(2), code)
        mark = _MARK.match(lines[i - 1].strip()) if i > 0 else None
        if mark is not None:
            block.mark, block.reason = mark.group(1), mark.group(2) or ""
        found.append(block)
        i = end + 1
    python = [b for b in found if b.language == "python"]
    for before, block in itertools.pairwise(python):
        block.previous = before
    files: list[Block] = []
    for block in python:
        block.files = list(files)
        if block.file_name is not None:
            files.append(block)
    return found


PYTHON_BLOCKS = [b for page in PAGES for b in blocks_of(page) if b.language == "python"]


def test_there_are_python_blocks_to_run() -> None:
    assert len(PYTHON_BLOCKS) >= 30
    assert sum(b.mark != "not-run" for b in PYTHON_BLOCKS) >= 20


def test_marks_apply_to_python_blocks_and_not_run_says_why() -> None:
    for page in PAGES:
        for block in blocks_of(page):
            if block.mark:
                assert block.language == "python", f"{block.id}: a mark on a non-Python block"
            if block.mark == "not-run":
                assert len(block.reason) >= 10, f"{block.id}: not-run needs a reason"
            if block.mark == "continues":
                assert block.previous is not None, f"{block.id}: continues nothing"


def _run(block: Block, scratch: Path) -> subprocess.CompletedProcess[str]:
    for f in block.files:
        assert f.file_name is not None
        target = scratch / f.file_name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(f.code)
        for parent in target.relative_to(scratch).parents:
            if parent != Path("."):
                (scratch / parent / "__init__.py").touch()
    env = {**os.environ,
           "PYTHONPATH": os.pathsep.join([str(scratch), str(ROOT / "src"),
                                          os.environ.get("PYTHONPATH", "")])}
    if block.mark == "pytest":
        test_file = scratch / f"test_block_{block.line}.py"
        test_file.write_text(block.program())
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                   "-o", "asyncio_mode=auto",
                   "-o", "asyncio_default_fixture_loop_scope=function",
                   "--rootdir", str(scratch), str(test_file)]
        timeout = 180
    else:
        program = scratch / f"block_{block.line}.py"
        program.write_text(block.program())
        command = [sys.executable, "-c", _RUNNER, str(program)]
        timeout = 60
    return subprocess.run(command, cwd=scratch, env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)


def _param(block: Block) -> object:
    # A block that starts node processes is a multi-process test, like the others so marked.
    starts_nodes = "LocalCluster" in block.program() or "phx_cluster" in block.program()
    return pytest.param(block, id=block.id, marks=[pytest.mark.slow] if starts_nodes else [])


@pytest.mark.parametrize("block", [_param(b) for b in PYTHON_BLOCKS if b.mark != "not-run"])
def test_python_block_runs(block: Block, tmp_path: Path) -> None:
    done = _run(block, tmp_path)
    assert done.returncode == 0, f"{block.id}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    if block.mark == "pytest":
        assert re.search(r"\b\d+ passed\b", done.stdout), done.stdout
        assert not re.search(r"\b(failed|error|skipped)\b", done.stdout), done.stdout


# ------------------------------------------------------------------ files referred to

_LINK = re.compile(r"\]\(([^)\s]+)\)")
_REPO_PATH = re.compile(
    r"`((?:src|tests|docs|examples|benchmarks|scripts|deploy|\.ci)/[^`\s:]*)`")
_PACKAGE_PATH = re.compile(r"`((?:_[a-z]+|testing)/[\w./*-]+\.py)`")
_MODULE_FILE = re.compile(r"`([\w*]+\.py)`")
_DOTTED = re.compile(r"`(phoenix_cluster\.(?:_\w+|testing)(?:\.\w+)*)")  # not logger names
_PACKAGE = ROOT / "src" / "phoenix_cluster"
_SOURCES = {p.name for top in ("src", "tests", "examples", "benchmarks")
            for p in (ROOT / top).rglob("*.py")}


def _module_exists(dotted: str) -> bool:
    """Whether ``dotted`` starts with a module of the package (the rest may name a class,
    a function or an attribute in it)."""
    parts = dotted.split(".")[1:]
    return any((_PACKAGE.joinpath(*parts[:n]).with_suffix(".py")).exists()
               or (_PACKAGE.joinpath(*parts[:n]) / "__init__.py").exists()
               for n in range(1, len(parts) + 1)) or hasattr(__import__("phoenix_cluster"),
                                                              parts[0])


def _exists(path: Path) -> bool:
    """Whether ``path`` (which may hold ``*`` wildcards) names at least one file."""
    if "*" in str(path):
        return any(ROOT.glob(str(path.relative_to(ROOT))))
    return path.exists()


def _prose(page: Path) -> str:
    """The page without its code blocks (paths in examples are the reader's)."""
    out, inside = [], False
    for line in page.read_text().splitlines():
        if line.strip().startswith("```"):
            inside = not inside
            continue
        if not inside:
            out.append(line)
    return "\n".join(out)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_page_refers_only_to_files_in_the_repository(page: Path) -> None:
    text = _prose(page)
    missing: list[str] = []
    for target in _LINK.findall(text):
        if re.match(r"^[a-z]+:", target) or target.startswith("#"):
            continue  # a URL or an anchor on the same page
        path = (page.parent / target.split("#")[0]).resolve()
        if not path.exists():
            missing.append(f"link {target}")
    for target in _REPO_PATH.findall(text):
        if not _exists(ROOT / target.rstrip("/.")):
            missing.append(f"path {target}")
    for target in _PACKAGE_PATH.findall(text):
        if not _exists(_PACKAGE / target):
            missing.append(f"package path {target}")
    for target in _MODULE_FILE.findall(text):
        if "*" not in target and target not in _SOURCES:
            missing.append(f"module {target}")
    for target in _DOTTED.findall(text):
        if not _module_exists(target):
            missing.append(f"module {target}")
    assert not missing, f"{page.relative_to(ROOT)} refers to files that do not exist: {missing}"


def _tracked_text_files() -> list[Path]:
    listed = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                            check=False)
    if listed.returncode != 0:  # not a git checkout (an sdist): every file on disk
        return [p for p in ROOT.rglob("*") if p.is_file() and ".git" not in p.parts]
    return [ROOT / name for name in listed.stdout.splitlines()]


def test_nothing_refers_to_documents_outside_the_repository() -> None:
    # The design notes the project started from are not part of the repository: what a
    # reader needs of them is in docs/.
    this = Path(__file__).resolve()
    offenders = []
    for path in _tracked_text_files():
        if path.resolve() == this or path.suffix in {".png", ".jpg", ".db", ".sqlite"}:
            continue
        try:
            text = path.read_text()
        except (UnicodeDecodeError, FileNotFoundError):
            continue
        # Spelled in pieces so that this file does not name them either.
        for word in ("DESIGN" + ".md", ".." + "/shared", "STYLE" + ".md"):
            if word in text:
                offenders.append(f"{path.relative_to(ROOT)}: {word}")
    assert not offenders


# ------------------------------------------------------------------ shell commands

def _phx_commands(block: Block) -> list[list[str]]:
    """The ``phx ...`` command lines of a shell block, as words (continuations joined)."""
    text = block.code.replace("\\\n", " ")
    commands = []
    for line in text.splitlines():
        words = shlex.split(line.split(" #")[0].strip().rstrip("&").strip(), comments=True)
        while words and "=" in words[0] and not words[0].startswith("-"):
            words = words[1:]  # PHX_COOKIE=... phx node
        if words[:1] == ["phx"] and words[1:2] != ["node:"]:
            commands.append(words[1:])
    return commands


SHELL_BLOCKS = [b for page in PAGES for b in blocks_of(page)
                if b.language in ("bash", "sh", "shell", "console") and _phx_commands(b)]


def test_shell_blocks_name_real_commands_and_flags() -> None:
    from phoenix_cluster._cli.commands import cli

    assert len(SHELL_BLOCKS) >= 10
    wrong = []
    for block in SHELL_BLOCKS:
        for words in _phx_commands(block):
            command: click.Command = cli
            rest = list(words)
            while isinstance(command, click.Group) and rest and not rest[0].startswith("-"):
                sub = command.commands.get(rest.pop(0))
                if sub is None:
                    wrong.append(f"{block.id}: no command `phx {' '.join(words)}`")
                    break
                command = sub
            else:
                known = {o for p in command.params for o in (*p.opts, *p.secondary_opts)}
                known |= {"-h", "--help"}
                for word in rest:
                    flag = word.split("=")[0]
                    if flag.startswith("-") and flag != "-" and flag not in known:
                        wrong.append(f"{block.id}: `phx {' '.join(words)}`: no option {flag}")
    assert not wrong
