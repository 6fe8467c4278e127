"""The app's server: Streamlit's own (``st.App``, served by uvicorn) with anti-framing
headers on every HTTP response, and a refusal to expose the Train page's actions to a
network without a guard.

    python -m app.serve [--address 127.0.0.1] [--port 8501]      # what the Docker image runs

Every HTTP response carries ``X-Frame-Options: DENY`` and ``Content-Security-Policy:
frame-ancestors 'none'`` (Streamlit itself sets neither; the Train page has buttons that
change state, so no other site may frame it: clickjacking). Listening on an address other
than loopback while the Train page is open to everyone (neither ``MINBERT_READ_ONLY=1``
nor ``MINBERT_SECRET`` set) is refused unless ``MINBERT_ALLOW_OPEN_TRAIN=1`` says that is
meant. Bad ``MINBERT_*`` settings stop the start with one line (core/settings.py).

Used by the browser end-to-end test and by docs/screenshots.py::

    from app.serve import start_server, stop_server
    proc, url = start_server(root, root / "streamlit.log")   # returns once /_stcore/health says ok
    ...
    stop_server(proc)

The server reads jobs (``MINBERT_JOBS_ROOT``) and, by default, checkpoints
(``MINBERT_CHECKPOINTS``) from ``root``. It runs in its own session (process group), headless, without
the file watcher and without usage statistics.
"""
from __future__ import annotations

import argparse
import ipaddress
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from core.paths import REPO
from core.errors import MinbertError

# What every HTTP response says about framing (OWASP Clickjacking Defense cheat sheet:
# CSP frame-ancestors, with X-Frame-Options for older browsers).
FRAME_HEADERS = {"x-frame-options": "DENY", "content-security-policy": "frame-ancestors 'none'"}


class AntiFraming:
    """ASGI middleware: ``FRAME_HEADERS`` on every HTTP response that does not set them
    itself (websocket traffic passes unchanged)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_framed(message):
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {bytes(k).lower() for k, _ in headers}
                headers += [(k.encode(), v.encode()) for k, v in FRAME_HEADERS.items() if k.encode() not in present]
                message = {**message, "headers": headers}
            await send(message)
        await self.app(scope, receive, send_framed)


def make_app():
    """The app (app/main.py) as an ``st.App`` with :class:`AntiFraming`."""
    import streamlit as st
    from starlette.middleware import Middleware
    return st.App(str(REPO / "app" / "main.py"), middleware=[Middleware(AntiFraming)])


def is_loopback(address: str) -> bool:
    """Whether ``address`` is reachable from this machine only (127.0.0.0/8, ::1, localhost)."""
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def check_exposure(address: str, env: dict | None = None) -> None:
    """:class:`MinbertError` when ``address`` reaches beyond this machine while the Train
    page's actions are open to anyone (core.jobs.access.access_mode 'open'), unless
    ``MINBERT_ALLOW_OPEN_TRAIN=1``. Also reads every MINBERT_* setting once."""
    from core.jobs.access import access_mode
    from core.settings import check_environment, env_bool
    check_environment(env)
    if is_loopback(address) or access_mode(env) != "open" or env_bool("MINBERT_ALLOW_OPEN_TRAIN", False, env):
        return
    raise MinbertError(
        f"refusing to listen on {address}: anyone who reaches it could start, cancel and resume training jobs. "
        f"Set MINBERT_READ_ONLY=1 (watch only) or MINBERT_SECRET=<a shared secret> (asked for on the Train page), "
        f"put authentication in front, or set MINBERT_ALLOW_OPEN_TRAIN=1 if an open Train page is meant")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m app.serve", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--address", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8501)
    args = p.parse_args(argv)
    try:
        check_exposure(args.address)
    except MinbertError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    os.chdir(REPO)   # .streamlit/config.toml (upload limit, error details, theme) is read from here
    make_app().run(config={"server.address": args.address, "server.port": args.port, "server.headless": True,
                           "browser.gatherUsageStats": False, "server.fileWatcherType": "none"})
    return 0


# ------------------------------------------------------------------ tests, screenshots
def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(root: str | os.PathLike, log_path: str | os.PathLike,
                 timeout_s: float = 90.0, checkpoints: str | os.PathLike | None = "root") -> tuple[subprocess.Popen, str]:
    """Launch the app (``python -m app.serve``) on a free port; return ``(process,
    base_url)`` once its health check answers ``ok``. Jobs live under ``root``;
    checkpoints too, unless ``checkpoints`` names another folder, or is ``None``: the
    repository's own ``checkpoints/`` (what a fresh clone serves, the shipped model
    included). Raises :class:`MinbertError` with the end of the server log if it exits or
    does not answer within ``timeout_s`` seconds."""
    port = free_port()
    env = {**os.environ, "MINBERT_JOBS_ROOT": str(root)}
    env.pop("MINBERT_CHECKPOINTS", None)
    if checkpoints is not None:
        env["MINBERT_CHECKPOINTS"] = str(root if checkpoints == "root" else checkpoints)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
    log_path = Path(log_path)
    with log_path.open("wb") as log:   # the child keeps its own descriptor
        proc = subprocess.Popen(
            [sys.executable, "-m", "app.serve", "--port", str(port), "--address", "127.0.0.1"],
            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                if r.read().strip() == b"ok":
                    return proc, url
        except OSError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            stop_server(proc)
            raise MinbertError("streamlit did not start:\n" + log_path.read_text(errors="replace")[-3000:])
        time.sleep(0.5)


def stop_server(proc: subprocess.Popen, grace_s: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after ``grace_s`` seconds."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


if __name__ == "__main__":
    sys.exit(main())


# The page is busy while a script runs or a placeholder is left in the main column.
BUSY = ('[data-testid="stStatusWidget"], [data-testid="stSpinner"], '
        '[data-testid="stMain"] [data-testid="stSkeleton"]')


def wait_settled(pg, quiet_s: float = 1.0, timeout_s: float = 300.0) -> None:
    """Wait until a Playwright page of the app has settled: nothing :data:`BUSY` for
    ``quiet_s`` seconds in a row (tests, screenshots, page timings). TimeoutError after
    ``timeout_s`` seconds."""
    deadline, since = time.time() + timeout_s, None
    while time.time() < deadline:
        if pg.locator(BUSY).count():
            since = None
        elif since is None:
            since = time.time()
        elif time.time() - since >= quiet_s:
            return
        time.sleep(0.2)
    raise TimeoutError(f"the page was still running after {timeout_s:.0f} s")
