"""Running the app under uvicorn in the foreground (``mlp serve``)."""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

from tasks.core.config import Settings, settings
from tasks.serving.app import create_app
from tasks.serving.options import ServeOptions, check_bind
from tasks.serving.runtime_options import RuntimeOptions


def serve(host: str | None = None, port: int | None = None, s: Settings | None = None,
          access_log: bool = False, models: Collection[str] | None = None,
          token: str | None = None, api_keys: str | Path | None = None,
          insecure: bool = False, strict_inputs: bool | None = None,
          log_requests: list[str] | None = None,
          batching_parameters: str | Path | None = None, batching: bool = True) -> None:
    """Run the server in the foreground (``mlp serve``).

    Args:
        host: Bind address (default ``MLP_SERVE_HOST``).
        port: Port (default ``MLP_SERVE_PORT``).
        s: Settings.
        models: Serve only these registered models (default: every champion).
        access_log: Log every request (off by default: it costs a sizeable share of the
            per-request time at hundreds of requests per second).
        token: Bearer token every request but ``/healthz`` must carry (default
            ``MLP_SERVE_TOKEN``).
        api_keys: File of accepted keys, one per line (default ``MLP_SERVE_API_KEYS``).
        insecure: Allow a non-loopback ``host`` without a token or keys.
        strict_inputs: Refuse tabular instances outside their model's schema (default
            ``MLP_SERVE_STRICT_INPUTS``; else only models whose spec says so).
        log_requests: ``[NAME=]RATE`` request log sampling (else ``MLP_SERVE_LOG_SAMPLE``).
        batching_parameters: JSON file of micro-batching parameters (else
            ``MLP_SERVE_BATCHING_PARAMETERS``).
        batching: False turns micro-batching off.

    Raises:
        OptionError: Invalid limits or keys, or a non-loopback host without credentials
            (checked before anything is loaded).

    """
    import uvicorn

    s = s or settings()
    host = host or s.serve_host
    options = ServeOptions.from_env(token=token, api_keys=api_keys,
                                    strict_inputs=strict_inputs or None)
    check_bind(host, options, insecure)
    extras = RuntimeOptions.from_env(log_requests=log_requests,
                                     batching_file=batching_parameters,
                                     batching=None if batching else False)
    uvicorn.run(create_app(s, models=models, options=options, runtime=extras), host=host,
                port=port or s.serve_port, log_level="info", access_log=access_log)
