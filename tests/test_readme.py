"""The README is the front door: its commands and examples must stay true."""
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


def test_python_examples_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the examples write model.npz
    namespace = {}
    for block in _blocks("python"):
        exec(compile(block, "README.md", "exec"), namespace)
    assert (tmp_path / "model.npz").exists()
    assert namespace["stats"]["updates"] == 4  # 100 steps per piece, k1=25
