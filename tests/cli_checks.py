"""Checks shared by the CLI tests."""
import json
import subprocess
import sys


def assert_user_error(result: subprocess.CompletedProcess, says: str, as_json: bool) -> None:
    """A user mistake: non-zero exit, one sentence on stderr, no traceback, {"error"} with --json."""
    assert result.returncode != 0
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and says in lines[0]
    if as_json:
        assert json.loads(result.stdout) == {"error": lines[0].removeprefix("error: ")}
    else:
        assert result.stdout == ""


def run_main(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    """cli.main.main in this process: the exit status, stdout and stderr a user would see."""
    from cli.main import main
    monkeypatch.setattr(sys, "argv", ["fitplan", *args])
    code = 0
    try:
        main()
    except SystemExit as done:
        code = done.code or 0
    out = capsys.readouterr()
    return code, out.out, out.err
