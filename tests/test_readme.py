"""The README is the front door: its quick start stays two commands, the second being
what CI runs. tests/test_docs.py runs its blocks (and the guides')."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
TEST_COMMAND = 'pip install -e ".[test]" && pytest -q'


def _blocks(language):
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)


def test_quick_start_has_two_commands_main_job_then_tests():
    commands = [block.strip() for block in _blocks("bash")[:2]]
    assert commands == ["pip install -e . && bptt train --demo sine", TEST_COMMAND]


def test_ci_runs_the_readme_test_command():
    assert TEST_COMMAND in (ROOT / ".ci" / "run").read_text()

