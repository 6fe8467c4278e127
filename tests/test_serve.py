"""app/serve.py (issue 24, deliverable 5): anti-framing headers on every response of the
real server, and no open Train page on a public address by default (the Docker image)."""
from __future__ import annotations

import asyncio
import json
import urllib.request
from pathlib import Path

import pytest

from app.serve import FRAME_HEADERS, AntiFraming, check_exposure, is_loopback, main, start_server, stop_server
from core.errors import ConfigError, MinbertError

REPO = Path(__file__).resolve().parents[1]


def _run(app, scope):
    sent = []

    async def receive():
        return {"type": "http.request"}

    async def send(message):
        sent.append(message)
    asyncio.run(app(scope, receive, send))
    return sent


async def _plain(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/html")]})
    await send({"type": "http.response.body", "body": b"ok"})


def test_middleware_adds_both_headers_once_and_leaves_websockets_alone():
    sent = _run(AntiFraming(_plain), {"type": "http"})
    headers = dict(sent[0]["headers"])
    assert headers[b"x-frame-options"] == b"DENY"
    assert headers[b"content-security-policy"] == b"frame-ancestors 'none'"
    assert sent[1]["body"] == b"ok"

    async def own(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": [(b"X-Frame-Options", b"SAMEORIGIN")]})
    assert [k for k, _ in _run(AntiFraming(own), {"type": "http"})[0]["headers"]].count(b"x-frame-options") == 0
    assert _run(AntiFraming(_plain), {"type": "websocket"})[0]["headers"] == [(b"content-type", b"text/html")]


def test_the_real_server_sends_anti_framing_headers(tmp_path):
    proc, url = start_server(tmp_path, tmp_path / "streamlit.log")
    try:
        for path in ("/", "/_stcore/health", "/Predict"):
            with urllib.request.urlopen(url + path, timeout=30) as r:
                assert r.status == 200
                for name, value in FRAME_HEADERS.items():
                    assert r.headers[name] == value, (path, dict(r.headers))
    finally:
        stop_server(proc)


@pytest.mark.parametrize("address, expected", [("127.0.0.1", True), ("127.0.0.2", True), ("::1", True),
                                               ("localhost", True), ("0.0.0.0", False), ("::", False),
                                               ("192.168.1.5", False), ("example.org", False)])
def test_loopback_addresses(address, expected):
    assert is_loopback(address) is expected


def test_an_open_train_page_is_not_served_on_a_public_address():
    with pytest.raises(MinbertError, match="refusing to listen on 0.0.0.0: anyone who reaches it could start"):
        check_exposure("0.0.0.0", {})
    check_exposure("127.0.0.1", {})                                   # this machine only: fine
    check_exposure("0.0.0.0", {"MINBERT_READ_ONLY": "1"})
    check_exposure("0.0.0.0", {"MINBERT_SECRET": "a-long-secret"})
    check_exposure("0.0.0.0", {"MINBERT_ALLOW_OPEN_TRAIN": "1"})
    with pytest.raises(ConfigError, match=r"\$MINBERT_MAX_RUNNING_JOBS='x'"):
        check_exposure("127.0.0.1", {"MINBERT_MAX_RUNNING_JOBS": "x"})


def test_main_refuses_with_one_line_and_exit_2(monkeypatch, capsys):
    for var in ("MINBERT_READ_ONLY", "MINBERT_SECRET", "MINBERT_ALLOW_OPEN_TRAIN"):
        monkeypatch.delenv(var, raising=False)
    assert main(["--address", "0.0.0.0", "--port", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: refusing to listen on 0.0.0.0") and err.count("\n") == 1


def test_the_docker_image_serves_through_app_serve_read_only_by_default():
    text = (REPO / "Dockerfile").read_text()
    runtime = text.split("FROM runtime AS test")[0]
    env = " ".join(line for line in runtime.splitlines() if line.startswith(("ENV", "    ")))
    assert "MINBERT_READ_ONLY=1" in env
    cmd = next(line for line in runtime.splitlines() if line.startswith("CMD"))
    assert json.loads(cmd[len("CMD"):]) == ["python3", "-m", "app.serve", "--address", "0.0.0.0", "--port", "8501"]
