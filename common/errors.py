"""The errors a user can act on. Each message is one sentence: what is wrong and what to do.

Messages name options through `opt("lora_r")`; each front end spells them its own way when it shows the
sentence (`render`): the command line as --lora-r (the default), the web page as its field names.
"""
from __future__ import annotations

import re
from typing import Callable

_OPTION = re.compile(r"\u27e6([a-z0-9_]+)\u27e7")


def clipped(text: str, longest: int = 60) -> str:
    """One line, with any word too long to read (a pasted blob, a thousand-digit number) cut short."""
    keep = max(longest * 2 // 3, 1)
    return re.sub(r"\S{%d,}" % (longest + 1), lambda m: m.group()[:keep] + "...", " ".join(str(text).split()))


def one_line(message: str) -> str:
    """An error sentence as shown: one line, whatever the input quoted inside it held; a path fits, a pasted blob
    or a thousand-digit number is cut short."""
    return clipped(message, 240)


def full_stop(text: str) -> str:
    """`text` ending as a sentence does: click's messages end in "." or "?" or nothing."""
    text = text.rstrip()
    return text if text.endswith((".", "?", "!")) else text + "."


def opt(name: str) -> str:
    """A reference to the option `name` inside an error message."""
    return f"\u27e6{name}\u27e7"


def flag(name: str) -> str:
    """The command line's spelling of an option: --lora-r."""
    return "--" + name.replace("_", "-")


def spelled(text: str, spell: Callable[[str], str] = flag) -> str:
    """`text` with its option references spelled for a reader (as flags by default)."""
    return _OPTION.sub(lambda m: spell(m.group(1)), text)


class FitplanError(Exception):
    """A mistake in the input or an impossible request; never a bug."""

    def render(self, spell: Callable[[str], str] = flag) -> str:
        return spelled(str(self.args[0]) if self.args else "", spell)

    def __str__(self) -> str:
        return self.render()


class InputError(FitplanError):
    """Bad input: an unknown model or card, a malformed file, a value out of range."""


class UnsupportedError(FitplanError):
    """A combination the libraries cannot run (MoE experts in fp32, QLoRA under ZeRO-3, bf16 on a V100, ...)."""


class DoesNotFitError(FitplanError):
    """A plan that needs more memory than the card has, refused where it would be written or launched."""


class EnvironmentProblem(FitplanError):
    """Something missing on this machine: a package, a driver, a GPU."""
