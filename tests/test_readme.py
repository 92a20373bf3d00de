"""The README's Python examples run as written, so the front door stays true."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
EXAMPLES = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_examples():
    assert len(EXAMPLES) >= 6


@pytest.mark.parametrize("index", range(len(EXAMPLES)))
def test_readme_example_runs(index):
    exec(compile(EXAMPLES[index], f"README.md example {index}", "exec"), {})


def test_ci_runs_exactly_the_readmes_test_command():
    """CI proves the README only if it runs the README's own set-up-and-test command."""
    quick_start = README.read_text().split("## Quick start", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"```bash\n(?:#[^\n]*\n)*(.*?)\n```", quick_start, flags=re.S)
    test_command = [c for c in commands if "pytest" in c]
    assert len(test_command) == 1, commands
    ci = (README.parent / ".ci" / "run").read_text().splitlines()
    assert ci.count(test_command[0]) == 1, (test_command[0], ci)
