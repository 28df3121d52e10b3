"""`fitplan serve`: the planning page on this machine (the web front end, `web/`)."""
from __future__ import annotations

import importlib.util

import click

from common.errors import EnvironmentProblem


@click.command("serve", short_help="Plan in the browser: a local page with the same answers.")
@click.option("--port", type=click.IntRange(0, 65535), default=0, show_default=True,
              help="Port on 127.0.0.1; 0 picks a free one (printed on stderr).")
@click.option("--no-browser", is_flag=True, help="Do not open the page in a browser.")
def command(port: int, no_browser: bool) -> None:
    """Start the planning page on 127.0.0.1 and open it in the browser.

    Pick a model (type to search the catalog, or drop a config.json), a card and the options; the
    recommended plan, the others, the picture of a training step and what to change when nothing fits
    update as you change them. Download plan.json and the Accelerate / DeepSpeed configs, and copy the
    `fitplan launch` command. The page needs no network; its JSON API (/api/plan, /api/estimate, ...)
    answers what the commands print with --json (docs/web.md). Ctrl+C stops it.

    \b
    Examples:
      fitplan serve
      fitplan serve --port 8765 --no-browser
      curl 'http://127.0.0.1:8765/api/plan?model=Llama-3.1-8B&gpu=RTX%204090'
    """
    missing = [name for name in ("starlette", "uvicorn") if importlib.util.find_spec(name) is None]
    if missing:
        raise EnvironmentProblem(f"fitplan serve needs {' and '.join(missing)}; install them with "
                                 "pip install 'fitplan[web]'.")
    from web.server import serve
    serve(port, open_browser=not no_browser)
