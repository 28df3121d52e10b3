"""Asking the page's server as a browser or a script would (urllib, no extra client library)."""
from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request


def request(url: str, path: str, body: bytes | None = None, headers: dict | None = None,
            method: str | None = None) -> tuple[int, dict, bytes]:
    """(status, headers, body) of one request; errors are answers too."""
    req = urllib.request.Request(url.rstrip("/") + path, data=body, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=60) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def post(url: str, endpoint: str, payload) -> tuple[int, object]:
    status, _, body = request(url, f"/api/{endpoint}", json.dumps(payload).encode(),
                              {"Content-Type": "application/json"})
    return status, json.loads(body)


def get(url: str, endpoint: str, params: dict | None = None) -> tuple[int, object]:
    query = "?" + urllib.parse.urlencode(params) if params else ""
    status, _, body = request(url, f"/api/{endpoint}{query}")
    return status, json.loads(body)


def assert_sentence(status: int, data, says: str = "") -> str:
    """A 400 with {"error": one sentence}."""
    assert status == 400, data
    assert set(data) == {"error"} and "\n" not in data["error"] and data["error"].endswith("."), data
    assert says in data["error"], data
    return data["error"]
