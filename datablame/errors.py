"""One error type for bad input: a message that says what is wrong and how to fix it."""

from __future__ import annotations


class DatablameError(Exception):
    """Bad input or state the user can fix. The CLI prints it as one line and exits 2."""

    def __init__(self, problem: str, fix: str | None = None) -> None:
        self.problem = problem
        self.fix = fix
        super().__init__(f"{problem}" + (f" Fix: {fix}" if fix else ""))
