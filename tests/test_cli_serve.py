"""`fitplan serve`: prints where the page is, serves it, stops quietly on Ctrl+C, and says in one sentence why
it cannot start."""
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from cli_checks import assert_user_error

from web_checks import get

pytest.importorskip("starlette")
FITPLAN = Path(sys.executable).parent / "fitplan"


def test_serve_prints_its_address_serves_and_stops_on_ctrl_c():
    server = subprocess.Popen([str(FITPLAN), "serve", "--no-browser"], stderr=subprocess.PIPE, text=True)
    try:
        line = server.stderr.readline()
        url = re.search(r"http://127\.0\.0\.1:\d+/", line).group()
        status, models = get(url, "models", {"q": "gpt2"})
        assert status == 200 and models[0]["model"] == "openai-community/gpt2"
    finally:
        server.send_signal(signal.SIGINT)
        code = server.wait(30)
    rest = server.stderr.read()
    assert code == 0 and "stopped" in rest and "Traceback" not in rest


def test_a_taken_port_is_one_sentence():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run([str(FITPLAN), "serve", "--no-browser", "--port", str(port)], capture_output=True,
                              text=True, timeout=60)
    assert_user_error(done, f"Cannot listen on 127.0.0.1:{port}", as_json=False)
    assert "choose another --port, or 0 for a free one." in done.stderr


def test_help_teaches_with_examples():
    done = subprocess.run([str(FITPLAN), "serve", "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "Examples:" in done.stdout and "127.0.0.1" in done.stdout
    assert "serve" in subprocess.run([str(FITPLAN), "--help"], capture_output=True, text=True, timeout=60).stdout
