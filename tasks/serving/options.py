"""The server's own settings (limits and credentials), read from the environment.

They live here rather than in the platform settings because only the serving layer reads
them.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path

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
        keys: Accepted bearer tokens / API keys; empty means no authentication.
        strict_inputs: Refuse (400) a tabular instance outside its model's schema (a
            value out of range, an unseen category, a missing field) for every model,
            not only those whose spec says ``strict_inputs`` (``--strict-inputs``,
            ``MLP_SERVE_STRICT_INPUTS=1``).

    """

    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    parse_workers: int = 1
    keys: frozenset[str] = field(default=frozenset(), repr=False)
    strict_inputs: bool = False

    @classmethod
    def from_env(cls, token: str | None = None,
                 api_keys: str | Path | None = None,
                 strict_inputs: bool | None = None) -> ServeOptions:
        """Options from ``MLP_SERVE_*`` variables; ``token``/``api_keys`` win over them.

        Args:
            token: Bearer token (else ``MLP_SERVE_TOKEN``).
            api_keys: File with one API key per line (else ``MLP_SERVE_API_KEYS``); blank
                lines and ``#`` comments are skipped.
            strict_inputs: Refuse instances outside the schema (else
                ``MLP_SERVE_STRICT_INPUTS``).

        Raises:
            OptionError: A variable holds an invalid value, or the key file is missing,
                empty or holds a key that is too short.

        """
        token = token if token is not None else os.environ.get("MLP_SERVE_TOKEN") or None
        api_keys = api_keys or os.environ.get("MLP_SERVE_API_KEYS") or None
        keys = set(read_keys(Path(api_keys))) if api_keys else set()
        if token is not None:
            keys.add(_checked_key(token.strip(), "the token (--token / MLP_SERVE_TOKEN)"))
        if strict_inputs is None:
            strict_inputs = os.environ.get("MLP_SERVE_STRICT_INPUTS", "").strip().lower() \
                in ("1", "true", "yes")
        return cls(max_body_bytes=_positive_int("MLP_SERVE_MAX_BODY_BYTES",
                                                DEFAULT_MAX_BODY_BYTES),
                   parse_workers=_positive_int("MLP_SERVE_PARSE_WORKERS", 1),
                   keys=frozenset(keys), strict_inputs=bool(strict_inputs))


MIN_KEY_LENGTH = 16


def _checked_key(key: str, where: str) -> str:
    if len(key) < MIN_KEY_LENGTH or any(c.isspace() for c in key):
        raise OptionError(f"{where}: a key must be at least {MIN_KEY_LENGTH} characters "
                          "without spaces (e.g. `python -c 'import secrets; "
                          "print(secrets.token_urlsafe(32))'`)")
    return key


def read_keys(path: Path) -> list[str]:
    """API keys from a file, one per line (blank lines and ``#`` comments skipped).

    Raises:
        OptionError: The file cannot be read, holds no key, or a key is too short.

    """
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise OptionError(f"cannot read API keys file {path}: {exc.strerror}") from exc
    keys = [(n, line.split("#", 1)[0].strip()) for n, line in enumerate(lines, 1)]
    keys = [(n, k) for n, k in keys if k]
    if not keys:
        raise OptionError(f"API keys file {path} holds no key (one key per line)")
    return [_checked_key(k, f"{path} line {n}") for n, k in keys]


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps the server reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name: it may resolve to any interface
        return False


def check_bind(host: str, options: ServeOptions, insecure: bool = False) -> None:
    """Refuse to serve beyond loopback without credentials unless told ``insecure``.

    Raises:
        OptionError: ``host`` is not a loopback address, no key is set and not insecure.

    """
    if options.keys or insecure or is_loopback(host):
        return
    raise OptionError(f"refusing to serve on {host} without authentication: set --token "
                      "(or MLP_SERVE_TOKEN) or --api-keys FILE (or MLP_SERVE_API_KEYS), or "
                      "pass --insecure")
