"""User-facing errors.

Anything a user can fix (a bad path, a corrupt file, a wrong option) raises :class:`FmcInputError`
with a one-line message that says what is wrong and what to do. The CLI turns it into exit code 2.
"""

from __future__ import annotations


class FmcInputError(ValueError):
    """Bad input: the message is one line, says what is wrong and what to do."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))
