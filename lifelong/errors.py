"""The one exception type that means "the user's input is wrong": the CLI prints it in one line and exits 2."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class UserError(Exception):
    """Bad input (config, flags, data files, checkpoints); the message names the problem and the fix."""


def closest(name: str, choices: Iterable[str]) -> str | None:
    """The choice a misspelt ``name`` most likely means, if any is close."""
    return next(iter(difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)), None)


def unknown(kind: str, name: str, choices: Iterable[str]) -> UserError:
    """``unknown KIND 'name'; did you mean 'x'? choose one of: ...`` (the hint only when a choice is close)."""
    choices = list(choices)
    guess = closest(name, choices)
    return UserError(f"unknown {kind} {name!r}; {f'did you mean {guess!r}? ' if guess else ''}choose one of: "
                     f"{', '.join(choices)}")


def first_line(err: BaseException) -> str:
    """The first line of an error's message, whole (never cut mid-word); its type's name when it has none."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[0] if lines else type(err).__name__
