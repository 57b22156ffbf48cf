"""Every shell and Python block of README.md and docs/*.md runs, in the order written, in a
fresh directory per page, so the guides cannot rot.

How a page is run:
- ```bash blocks run under `bash -euo pipefail`; ```python blocks each in a fresh
  interpreter (each is self-contained, as a reader copies it); other fences (```console,
  ```text, plain ```) are shown, not run.
- A marker on the line before a block's opening fence:
    <!-- needs: ray -->           skipped (with the reason) when that module is absent;
                                  several: <!-- needs: onnx, onnxruntime -->
    <!-- not-run: REASON -->      never run here (a benchmark, the test suite itself)
- A leading `pip install ... && ` is the installation this test already runs under:
  the command after it runs.
- The checkout is what runs: PYTHONPATH is the repository root, and `bptt` and `python`
  on PATH are this interpreter running it. Ray stays on 127.0.0.1.
A block fails on a non-zero exit status (or a timeout) and shows its code and output.
"""
import importlib.util
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
README_MAX_LINES = 300
BLOCK_TIMEOUT = 600  # seconds; a block that hangs fails instead of stalling the suite

FENCE = re.compile(r"^```(\w*)\s*$")
MARKER = re.compile(r"^<!--\s*(needs|not-run):\s*(.*?)\s*-->\s*$")
PIP_INSTALL = re.compile(r"^pip install [^&\n]*&&\s*", flags=re.M)
RUN = {"bash": ["bash", "-euo", "pipefail", "-c"], "python": [sys.executable, "-c"]}


@dataclass
class Block:
    """One fenced block: where it is, its language and code, and its marker."""
    page: Path
    line: int  # 1-based line of the opening fence
    language: str
    code: str
    needs: list = field(default_factory=list)
    not_run: str = ""

    @property
    def name(self):
        where = self.page.relative_to(ROOT) if self.page.is_relative_to(ROOT) else self.page.name
        return f"{where}:{self.line}"


def read_blocks(page):
    """The runnable blocks of a markdown page (bash and python fences), in order."""
    lines, blocks, index = page.read_text().splitlines(), [], 0
    while index < len(lines):
        opening = FENCE.match(lines[index])
        if not opening:
            index += 1
            continue
        end = next(i for i in range(index + 1, len(lines)) if lines[i].startswith("```"))
        marker = MARKER.match(lines[index - 1]) if index else None
        block = Block(page, index + 1, opening.group(1), "\n".join(lines[index + 1:end]) + "\n")
        if marker and marker.group(1) == "needs":
            block.needs = [name.strip() for name in marker.group(2).split(",")]
        elif marker:
            block.not_run = marker.group(2)
        if block.language in RUN:
            blocks.append(block)
        index = end + 1
    return blocks


def shims(directory):
    """A bin directory whose `bptt` and `python` run this interpreter on the checkout."""
    directory.mkdir()
    scripts = {"python": f'exec "{sys.executable}" "$@"\n',
               "bptt": f'exec "{sys.executable}" -c "from cli import main; main(prog_name=\'bptt\')" "$@"\n'}
    for name, body in scripts.items():
        path = directory / name
        path.write_text("#!/bin/sh\n" + body)
        path.chmod(0o755)
    return directory


class PageRun:
    """The blocks of one page run in order in one fresh directory; each runs once."""

    def __init__(self, page, directory):
        self.blocks = read_blocks(page)
        self.directory = directory / "work"
        self.directory.mkdir()
        self.env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
                        PATH=os.pathsep.join([str(shims(directory / "bin")), os.environ["PATH"]]),
                        MPLBACKEND="Agg", RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", RAY_AUTH_MODE="disabled")
        self.outcomes = {}  # block index -> ("ran", returncode, output) or ("skipped", reason)

    def outcome(self, index):
        """Run the blocks up to `index` that have not run yet (a later block may use an
        earlier one's files) and return the outcome of block `index`."""
        for earlier in range(index + 1):
            if earlier not in self.outcomes:
                self.outcomes[earlier] = self._run(self.blocks[earlier])
        return self.outcomes[index]

    def _run(self, block):
        if block.not_run:
            return "skipped", f"{block.name}: not run in tests: {block.not_run}"
        missing = [name for name in block.needs if importlib.util.find_spec(name) is None]
        if missing:
            return "skipped", f"{block.name}: needs {', '.join(missing)}, not installed"
        code = PIP_INSTALL.sub("", block.code) if block.language == "bash" else block.code
        try:
            done = subprocess.run(RUN[block.language] + [code], cwd=self.directory, env=self.env,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                  timeout=BLOCK_TIMEOUT)
        except subprocess.TimeoutExpired as expired:
            return "ran", f"timeout after {BLOCK_TIMEOUT} s", expired.stdout or ""
        return "ran", done.returncode, done.stdout


ALL_BLOCKS = [(page, index, block) for page in PAGES for index, block in enumerate(read_blocks(page))]
RUNS = {}  # page -> PageRun, shared by the tests of that page's blocks


@pytest.mark.parametrize("page, index, block", ALL_BLOCKS, ids=[block.name for _, _, block in ALL_BLOCKS])
def test_block_runs(page, index, block, tmp_path_factory):
    if page not in RUNS:
        RUNS[page] = PageRun(page, tmp_path_factory.mktemp(page.stem))
    outcome = RUNS[page].outcome(index)
    if outcome[0] == "skipped":
        pytest.skip(outcome[1])
    _, returncode, output = outcome
    if returncode != 0:
        pytest.fail(f"{block.name} ({block.language}) exited with {returncode}\n--- code ---\n{block.code}"
                    f"--- output ---\n{output}", pytrace=False)


def test_readme_is_short_and_links_every_guide():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= README_MAX_LINES
    guides = sorted(path.name for path in (ROOT / "docs").glob("*.md"))
    unlinked = [name for name in guides if f"](docs/{name})" not in readme]
    assert guides and not unlinked, f"guides not linked from README.md: {unlinked}"


def anchors(page):
    """GitHub's anchors of a page's headings: lower case, punctuation dropped, spaces to -."""
    headings = re.findall(r"^#+ (.*)$", page.read_text(), flags=re.M)
    return {re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-") for heading in headings}


@pytest.mark.parametrize("page", PAGES, ids=[str(page.relative_to(ROOT)) for page in PAGES])
def test_relative_links_point_to_files_and_headings(page):
    links = re.findall(r"\]\(([^)#:]*)(?:#([^)]*))?\)", page.read_text())
    broken = [f"{target}#{anchor}" for target, anchor in links
              if not (page.parent / target).exists()
              or anchor and anchor not in anchors(page.parent / target if target else page)]
    assert not broken, f"{page.name}: links to missing files or headings: {broken}"


def test_markers_are_read(tmp_path):
    """The parser itself: a marker applies to the block right after it, other fences are
    not run, and the pip-install prefix is dropped."""
    page = tmp_path / "sample.md"
    page.write_text("text\n```bash\necho one\n```\n<!-- needs: ray, onnx -->\n```python\nprint(2)\n```\n"
                    "```console\n$ shown\n```\n<!-- not-run: slow -->\n```bash\nsleep 1\n```\n")
    blocks = read_blocks(page)
    assert [(b.language, b.line, b.needs, b.not_run) for b in blocks] == [
        ("bash", 2, [], ""), ("python", 6, ["ray", "onnx"], ""), ("bash", 13, [], "slow")]
    assert PIP_INSTALL.sub("", 'pip install -e ".[test]" && bptt train --demo sine') == "bptt train --demo sine"
