"""`fitplan serve`: the planning page and its JSON API on 127.0.0.1, needing no network.

Starlette routes requests; uvicorn serves them. The page (web/static/) only renders what the API answers;
every number comes from the planner through `web.api`. Every request gets an answer: bad input a 400 with
the command line's sentence ({"error": ...}), anything unforeseen a 500 with one sentence, and the server
goes on. Only requests addressed to this machine by name are served (a page elsewhere that rebinds its own
name to 127.0.0.1 is turned away), and the page may load nothing but its own files.
"""
from __future__ import annotations

import logging
import socket
import sys
import threading
import webbrowser
from pathlib import Path
from typing import Callable

import click
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from common.errors import FitplanError, InputError, opt
from common.files import parse_json
from web import api

STATIC = Path(__file__).resolve().parent / "static"
HOST = "127.0.0.1"
MAX_BODY_BYTES = 4 * 2**20   # a config.json and the options: a few KiB
HEADERS = {   # the page's own files only; no framing, sniffing or referrers
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; "
                               "script-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer", "Cache-Control": "no-store",
}
log = logging.getLogger("fitplan.web")


def error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=HEADERS)


async def api_endpoint(request: Request) -> Response:
    """/api/<endpoint>: parameters from the query string (GET) or a JSON object (POST), the CLI's JSON back."""
    endpoint = request.path_params["endpoint"]
    if endpoint not in api.ENDPOINTS:
        return error(404, f"There is no /api/{api.clipped(endpoint)}; the API has "
                          f"{', '.join('/api/' + e for e in api.ENDPOINTS)} (docs/web.md).")
    try:
        payload = await parameters(request)
        download = payload.pop("download", None) if endpoint == "configs" else None
        data = await run_in_threadpool(api.answer, endpoint, payload)
        return attachment(data, download) if download is not None else JSONResponse(data, headers=HEADERS)
    except FitplanError as err:
        return error(400, api.sentence(err))
    except Exception:  # noqa: BLE001 - a bug must cost one request, not the server
        log.exception("request to /api/%s failed", endpoint)
        return error(500, f"fitplan failed on this request to /api/{endpoint} (a bug, logged by the server); "
                          "please report it with the request.")


async def parameters(request: Request) -> dict:
    """The request's parameters: the query string, or the POST body's JSON object."""
    if request.method == "GET":
        return dict(request.query_params)
    body = await limited_body(request)
    if not body.strip():
        return {}
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError("The request body is not UTF-8 text; send the parameters as a JSON object.") from None
    data = parse_json(text, "The request body", "send the parameters as a JSON object")
    if not isinstance(data, dict):
        raise InputError(f"The request body holds a JSON {type(data).__name__}; send the parameters as a JSON "
                         "object, e.g. {\"model\": \"Llama-3.1-8B\", \"gpu\": \"RTX 4090\"}.")
    return data


async def limited_body(request: Request) -> bytes:
    """The body, refused as soon as it outgrows what a request can hold."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise InputError(f"The request body is over {MAX_BODY_BYTES // 2**20} MiB, more than a config.json and "
                             "options can be; send the model's config.json itself.")
        chunks.append(chunk)
    return b"".join(chunks)


def attachment(data: dict, name: object) -> Response:
    """One file of /api/configs, to save (`download`=its name)."""
    if not isinstance(name, str) or name not in data["files"]:
        raise InputError(f"download names one of the files: {', '.join(data['files'])}.")
    kind = "application/json" if name.endswith(".json") else "application/yaml"
    return Response(data["files"][name], media_type=kind,
                    headers={**HEADERS, "Content-Disposition": f'attachment; filename="{name}"'})


async def index(request: Request) -> Response:
    return FileResponse(STATIC / "index.html", headers=HEADERS)


async def palette(request: Request) -> Response:
    """The pictures' colours and names, so the page draws what --plot draws."""
    from cli.plot import LABELS, PALETTE, PHASE_NAMES
    return JSONResponse({"colors": PALETTE, "labels": LABELS, "phases": PHASE_NAMES}, headers=HEADERS)


async def form(request: Request) -> Response:
    """The options the page offers, read from `fitplan plan`'s own parameters: flag, help, choices."""
    from cli.commands.plan import command
    fields = {}
    for param in command.params:
        if isinstance(param, click.Option) and param.name not in ("as_json", "trace", "plot"):
            choices = list(param.type.choices) if isinstance(param.type, click.Choice) else None
            fields[param.name] = {"flag": param.opts[0], "help": param.help or "", "choices": choices}
    return JSONResponse(fields, headers=HEADERS)


async def http_error(request: Request, exc: HTTPException) -> Response:
    """Unknown pages and methods answer in one sentence too."""
    if exc.status_code == 405:
        return error(405, f"{request.url.path} takes GET or POST, not {request.method}.")
    return error(exc.status_code, f"There is nothing at {api.clipped(request.url.path)}; the page is at /.")


def app() -> Starlette:
    routes = [Route("/", index), Route("/palette.json", palette), Route("/form.json", form),
              Route("/api/{endpoint}", api_endpoint, methods=["GET", "POST"]),
              Mount("/static", StaticFiles(directory=STATIC), name="static")]
    hosts = Middleware(TrustedHostMiddleware, allowed_hosts=[HOST, "localhost"])
    return Starlette(routes=routes, middleware=[hosts], exception_handlers={HTTPException: http_error})


def bound_socket(port: int) -> socket.socket:
    """A listening socket on 127.0.0.1:`port` (0: a free one), or one sentence saying why not."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind((HOST, port))
        sock.listen(128)   # from now on a request waits for the server instead of being refused
    except OSError as err:
        sock.close()
        raise InputError(f"Cannot listen on {HOST}:{port} ({err.strerror or err}); choose another {opt('port')}, "
                         "or 0 for a free one.") from None
    return sock


def serve(port: int = 0, open_browser: bool = True, ready: Callable[[str, object], None] | None = None) -> None:
    """Serve the page until interrupted; the address goes to stderr (and `ready`, a callable, for tests)."""
    import uvicorn

    sock = bound_socket(port)
    url = f"http://{HOST}:{sock.getsockname()[1]}/"
    print(f"fitplan serve: {url} (Ctrl+C stops it)", file=sys.stderr, flush=True)
    server = uvicorn.Server(uvicorn.Config(app(), log_level="warning", access_log=False, lifespan="off"))
    if open_browser:
        threading.Timer(0.5, webbrowser.open, [url]).start()
    if ready:
        ready(url, server)
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:
        pass   # uvicorn stops gracefully, then raises the Ctrl+C again: it is how the page is closed, not an error
    print("fitplan serve: stopped.", file=sys.stderr, flush=True)
