"""Error kinds the platform treats alike wherever they come from."""

from __future__ import annotations


class PermanentError(Exception):
    """A deterministic failure that a retry cannot fix.

    Bad input data, a bad parameter, a diverged model: orchestration fails the task at once
    instead of retrying it; the message is meant for the user (it names the file, row and
    field where there is one).
    """
