"""Every command line in the README runs as printed, on a machine without a GPU, and answers: exit 0 with
output (exit 1 where the line says nothing fits), never an error. `fitplan serve` and the --trace lines are
left to tests/test_cli_serve.py and tests/test_trace.py."""
from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from test_fuzz_cli import run

ROOT = Path(__file__).resolve().parent.parent


def readme_commands() -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    lines = [line.strip() for block in blocks for line in block.splitlines()]
    return [line for line in lines if line.startswith("fitplan ") and not line.startswith("fitplan serve")
            and "--trace" not in line]


def test_the_readme_has_examples():
    assert len(readme_commands()) >= 10


@pytest.mark.parametrize("line", readme_commands())
def test_a_readme_example_runs_as_printed(line, tmp_path, monkeypatch):
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    monkeypatch.chdir(tmp_path)
    words = shlex.split(line, comments=True)
    code, out, err = run(words[1:])
    expected = 1 if "nothing fits" in line else 0
    assert code == expected and "error:" not in err and "Traceback" not in out + err, (line, code, err)
    assert out.strip() or err.strip(), line
