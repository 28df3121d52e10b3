"""Reading what users give us without surprises, and writing what we make without half-written files.

Reading: only regular files (a FIFO would block forever, /dev/zero never ends), with a size limit; JSON
without NaN or Infinity and without nesting deep enough to exhaust the parser.
Writing: every file of one command appears together or not at all; nothing existing is replaced without
`force`; each file is written to a temporary in its folder and moved into place atomically.
"""
from __future__ import annotations

import json
import os
import re
import stat
import tempfile
from pathlib import Path

from common.errors import InputError, opt

MAX_TEXT_BYTES = 16 * 2**20   # config.json, plan.json, run reports and training configs are far smaller


def regular_file(path: str | Path, what: str = "file") -> os.stat_result:
    """The file's stat when `path` is a readable regular file; else one sentence saying what it is instead."""
    path = Path(path)
    try:
        info = path.stat()
    except OSError as err:
        raise InputError(f"Cannot read the {what} {_short(path)} ({err.strerror or err}); check the path.") from None
    if not stat.S_ISREG(info.st_mode):
        raise InputError(f"The {what} {_short(path)} is not a regular file; give the path of a file.")
    if not os.access(path, os.R_OK):
        raise InputError(f"The {what} {_short(path)} is not readable; check its permissions.")
    return info


def read_text(path: str | Path, what: str = "file", limit: int = MAX_TEXT_BYTES) -> str:
    """The UTF-8 text of a regular file no larger than `limit`."""
    path = Path(path)
    info = regular_file(path, what)
    if info.st_size > limit:
        raise InputError(f"The {what} {_short(path)} is {info.st_size:,} bytes, more than a {what} can be "
                         f"({limit:,}); check that it is the right file.")
    try:
        return path.read_bytes()[:limit + 1].decode("utf-8")
    except OSError as err:
        raise InputError(f"Cannot read the {what} {_short(path)} ({err.strerror or err}); check its permissions.") from None
    except UnicodeDecodeError:
        raise InputError(f"The {what} {_short(path)} is not UTF-8 text; give the {what} itself.") from None


def parse_json(text: str, where: str, remedy: str = "fix the file or write it again") -> object:
    """JSON as the standard says it: no NaN or Infinity; too deep or too large numbers are errors, not crashes.
    `remedy`: what the sentence tells the reader to do."""
    def no_constant(name: str):
        raise ValueError(f"{name} is not a JSON number")
    try:
        return json.loads(text, parse_constant=no_constant)
    except json.JSONDecodeError as err:
        raise InputError(f"{where} is not valid JSON ({err.msg} at line {err.lineno}, column {err.colno}); "
                         f"{remedy}.") from None
    except RecursionError:
        raise InputError(f"{where} nests too deeply to be real JSON; {remedy}.") from None
    except ValueError as err:   # NaN / Infinity, or an integer of thousands of digits
        digits = re.search(r"limit \((\d+) digits\)", str(err))
        value = f"an integer of more than {digits.group(1)} digits" if digits else str(err)[:80]
        raise InputError(f"{where} holds a value JSON cannot carry ({value}); {remedy}.") from None


def read_json(path: str | Path, what: str = "file") -> object:
    return parse_json(read_text(path, what), f"The {what} {_short(path)}")


def write_files(files: dict[Path, str | bytes], force: bool = False, option: str = "out") -> list[Path]:
    """Write every file, or none: refused up front if any exists (unless `force`) or is not a regular file,
    and undone if moving one into place fails. `option`: the option that named the place, for the sentence."""
    paths = [Path(p) for p in files]
    _refuse(paths, force, option)
    staged: list[tuple[Path, str]] = []
    try:
        for path, text in files.items():
            staged.append((Path(path), _stage(Path(path), text, option)))
        _swap_in(staged)
    finally:
        for _, tmp in staged:
            Path(tmp).unlink(missing_ok=True)
    return paths


def write_text(path: str | Path, text: str | bytes, force: bool = False, option: str = "out") -> Path:
    """One file (text as UTF-8, or bytes as they are), all-or-nothing like `write_files`."""
    return write_files({Path(path): text}, force, option)[0]


def write_figure(path: Path, fig) -> None:
    """A matplotlib figure as PNG, written whole or not at all (replacing a report's old picture), then closed."""
    import io

    import matplotlib.pyplot as plt
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=110)
    plt.close(fig)
    write_text(path, png.getvalue(), force=True)


def _elsewhere(option: str) -> str:
    return f"{opt(option)} folder" if option == "out" else f"path for {opt(option)}"


def _refuse(paths: list[Path], force: bool, option: str) -> None:
    for path in paths:
        if path.exists() and not path.is_file():
            raise InputError(f"{_short(path)} exists and is not a regular file; choose another {_elsewhere(option)}.")
    taken = [_short(p) for p in paths if p.exists()]
    if taken and not force:
        raise InputError(f"{', '.join(taken)} already exist{'s' if len(taken) == 1 else ''}; "
                         f"pass {opt('force')} to overwrite, or choose another {_elsewhere(option)}.")


def _stage(path: Path, text: str | bytes, option: str) -> str:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as out:
            out.write(text.encode("utf-8") if isinstance(text, str) else text)
            out.flush()
            os.fsync(out.fileno())   # on disk before it replaces anything: a crash leaves the old file or the new
        os.chmod(tmp, 0o666 & ~_umask())   # mkstemp makes 0600; these are ordinary files
    except OSError as err:
        raise InputError(f"Cannot write {_short(path)} ({err.strerror or err}); choose a writable "
                         f"{_elsewhere(option)}.") from None
    return tmp


def _swap_in(staged: list[tuple[Path, str]]) -> None:
    """Move each staged file into place; on failure put back what was there before."""
    done: list[tuple[Path, bytes | None]] = []
    try:
        for path, tmp in staged:
            before = path.read_bytes() if path.is_file() else None
            os.replace(tmp, path)
            done.append((path, before))
    except OSError as err:
        for path, before in reversed(done):
            if before is None:
                path.unlink(missing_ok=True)
            else:
                path.write_bytes(before)
        raise InputError(f"Cannot write {_short(path)} ({err.strerror or err}); nothing was written.") from None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _short(path: str | Path, limit: int = 120) -> str:
    text = str(path)
    return text if len(text) <= limit else "..." + text[-limit:]
