"""Running the app under uvicorn in the foreground (``mlp serve``)."""

from __future__ import annotations

from collections.abc import Collection

from tasks.core.config import Settings, settings
from tasks.serving.app import create_app


def serve(host: str | None = None, port: int | None = None, s: Settings | None = None,
          access_log: bool = False, models: Collection[str] | None = None) -> None:
    """Run the server in the foreground (``mlp serve``).

    Args:
        host: Bind address (default ``MLP_SERVE_HOST``).
        port: Port (default ``MLP_SERVE_PORT``).
        s: Settings.
        models: Serve only these registered models (default: every champion).
        access_log: Log every request (off by default: it costs a sizeable share of the
            per-request time at hundreds of requests per second).

    """
    import uvicorn

    s = s or settings()
    uvicorn.run(create_app(s, models=models), host=host or s.serve_host,
                port=port or s.serve_port, log_level="info", access_log=access_log)
