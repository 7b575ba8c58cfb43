"""Credentials: 401 without a valid token or key (``/healthz`` stays open), and no bind
beyond loopback without credentials unless ``--insecure``.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import httpx
import numpy as np
import pytest

from tasks.serving.options import OptionError, ServeOptions, check_bind, is_loopback
from tests.tasks.conftest import RunningServer
from tests.tasks.serving.conftest import REPO, serve_env

TOKEN = "s3cret-token-0123456789"
KEY = "api-key-abcdefghijklmnop"
IMG = (np.arange(784) % 256).reshape(28, 28).astype(float).tolist()


@pytest.mark.parametrize(("host", "loopback"), [
    ("127.0.0.1", True), ("127.0.0.2", True), ("::1", True), ("[::1]", True),
    ("localhost", True), ("0.0.0.0", False), ("::", False), ("10.1.2.3", False),
    ("example.org", False)])
def test_loopback_is_recognised(host, loopback):
    assert is_loopback(host) is loopback


def test_bind_beyond_loopback_needs_credentials_or_insecure():
    check_bind("127.0.0.1", ServeOptions())
    with pytest.raises(OptionError, match="refusing to serve on 0.0.0.0 without "
                                          "authentication"):
        check_bind("0.0.0.0", ServeOptions())
    check_bind("0.0.0.0", ServeOptions(keys=frozenset({TOKEN})))
    check_bind("0.0.0.0", ServeOptions(), insecure=True)


def test_keys_come_from_the_token_and_the_key_file(tmp_path, monkeypatch):
    monkeypatch.delenv("MLP_SERVE_TOKEN", raising=False)
    monkeypatch.delenv("MLP_SERVE_API_KEYS", raising=False)
    keys = tmp_path / "keys"
    keys.write_text(f"# team keys\n{KEY}\n\n{KEY[::-1]}  # ci\n")
    assert ServeOptions.from_env(token=TOKEN, api_keys=keys).keys == {TOKEN, KEY, KEY[::-1]}
    monkeypatch.setenv("MLP_SERVE_TOKEN", TOKEN)
    assert ServeOptions.from_env().keys == {TOKEN}
    keys.write_text("# nothing\n")
    with pytest.raises(OptionError, match=f"API keys file {keys} holds no key"):
        ServeOptions.from_env(api_keys=keys)
    keys.write_text(f"{KEY}\nshort\n")
    with pytest.raises(OptionError, match=f"{keys} line 2: a key must be at least 16"):
        ServeOptions.from_env(api_keys=keys)
    with pytest.raises(OptionError, match="cannot read API keys file"):
        ServeOptions.from_env(api_keys=tmp_path / "missing")


def test_mlp_serve_refuses_a_public_bind_without_a_token(reg_settings):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "tasks.cli", "serve", "--host", "0.0.0.0",
                          "--port", str(port)], env=serve_env(reg_settings), cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert lines == ["mlp serve: refusing to serve on 0.0.0.0 without authentication: set "
                     "--token (or MLP_SERVE_TOKEN) or --api-keys FILE (or "
                     "MLP_SERVE_API_KEYS), or pass --insecure"], out.stderr
    with pytest.raises(httpx.TransportError):  # nothing was started
        httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
    assert time.perf_counter() - t0 < 60


@pytest.fixture(scope="module")
def guarded(reg_settings, served_registry):
    options = ServeOptions(keys=frozenset({TOKEN, KEY}))
    with RunningServer(reg_settings, models=("mnist",), options=options,
                       headers={"Authorization": f"Bearer {TOKEN}"}) as srv:
        yield srv


def test_without_a_valid_token_everything_but_healthz_is_401(guarded):
    base = guarded.base
    assert httpx.get(f"{base}/healthz").json() == {"status": "ok"}
    for path in ("/readyz", "/v1/models/mnist", "/v1/models/mnist/metadata", "/demo",
                 "/openapi.json", "/v2/unknown"):
        for headers in ({}, {"Authorization": "Bearer wrong-token-0123456789"},
                        {"Authorization": TOKEN}, {"X-API-Key": TOKEN[:-1]}):
            r = httpx.get(f"{base}{path}", headers=headers)
            assert r.status_code == 401, (path, headers, r.status_code)
            assert r.headers["www-authenticate"] == "Bearer"
            assert "credentials" in r.json()["error"]
    r = httpx.post(f"{base}/v1/models/mnist:predict", json={"instances": [IMG]})
    assert r.status_code == 401 and "missing credentials" in r.json()["error"]


def test_a_valid_bearer_token_or_api_key_is_served(guarded):
    for headers in ({"Authorization": f"Bearer {TOKEN}"}, {"authorization": f"bearer {KEY}"},
                    {"X-API-Key": KEY}):
        r = httpx.post(f"{guarded.base}/v1/models/mnist:predict", json={"instances": [IMG]},
                       headers=headers)
        assert r.status_code == 200, r.text
        assert np.array(r.json()["predictions"]).shape == (1, 10)


def test_an_unauthenticated_big_body_is_refused_before_it_is_read(guarded):
    def body():
        yield b"x" * (100 * 2**20)  # 100 MB, never read

    t0 = time.perf_counter()
    r = httpx.post(f"{guarded.base}/v1/models/mnist:predict", content=body(),
                   headers={"Content-Length": str(100 * 2**20)}, timeout=30)
    assert r.status_code == 401
    assert time.perf_counter() - t0 < 5
