"""The server's own settings (limits, and later credentials), read from the environment.

They live here rather than in the platform settings because only the serving layer reads
them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

MIB = 1024 * 1024
DEFAULT_MAX_BODY_BYTES = 32 * MIB


class OptionError(ValueError):
    """A serving setting is invalid; the message names the variable or option."""


def _positive_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise OptionError(f"{name}={raw!r} must be a positive integer (bytes)")
    return value


@dataclass(frozen=True)
class ServeOptions:
    """Limits of the REST server.

    Attributes:
        max_body_bytes: Largest accepted request body; a larger one is answered 413 before
            it is read (``MLP_SERVE_MAX_BODY_BYTES``, default 32 MiB).
        parse_workers: Processes that parse large bodies off the event loop.

    """

    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    parse_workers: int = 1

    @classmethod
    def from_env(cls) -> ServeOptions:
        """Options from ``MLP_SERVE_*`` variables.

        Raises:
            OptionError: A variable holds an invalid value.

        """
        return cls(max_body_bytes=_positive_int("MLP_SERVE_MAX_BODY_BYTES",
                                                DEFAULT_MAX_BODY_BYTES),
                   parse_workers=_positive_int("MLP_SERVE_PARSE_WORKERS", 1))
