"""A serving process of its own (``mlp serve`` in a subprocess) for latency and CLI tests.

Latency is measured against a server in another process, so the test's own client does
not share the server's GIL.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.tasks.conftest import free_port

REPO = Path(__file__).resolve().parents[3]


def serve_env(s, **extra: str) -> dict[str, str]:
    """The environment of an ``mlp serve`` process reading the test store of ``s``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLP_SERVE_")}
    env.update(MLP_HOME=str(s.root), MLFLOW_TRACKING_URI=s.tracking_uri,
               MLP_SERVE_POLL_SECONDS="0.5", TF_CPP_MIN_LOG_LEVEL="2",
               GIT_PYTHON_REFRESH="quiet", **extra)
    return env


class ServerProcess:
    """``python -m tasks.cli serve ARGS`` on a free loopback port, until ``/readyz``."""

    def __init__(self, s, *args: str, log: Path, **env: str) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.cmd = [sys.executable, "-m", "tasks.cli", "serve", "--host", "127.0.0.1",
                    "--port", str(self.port), *args]
        self.env = serve_env(s, **env)
        self.log = log
        self.proc: subprocess.Popen | None = None
        self.headers: dict[str, str] = {}

    def __enter__(self) -> ServerProcess:
        self._out = open(self.log, "w")  # noqa: SIM115
        self.proc = subprocess.Popen(self.cmd, env=self.env, cwd=REPO, stdout=self._out,
                                     stderr=subprocess.STDOUT)
        deadline = time.time() + 180
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.log.read_text()[-2000:]}")
            try:
                if httpx.get(f"{self.base}/readyz", headers=self.headers).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"server not ready: {self.log.read_text()[-2000:]}")

    def __exit__(self, *exc) -> None:
        if self.proc.poll() is not None:
            self._out.close()
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._out.close()
