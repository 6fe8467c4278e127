"""Start and stop ``streamlit run app/main.py`` as a child process on a free localhost port.

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

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from core.errors import MinbertError

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(root: str | os.PathLike, log_path: str | os.PathLike,
                 timeout_s: float = 90.0, checkpoints: str | os.PathLike | None = "root") -> tuple[subprocess.Popen, str]:
    """Launch the app on a free port; return ``(process, base_url)`` once its health check
    answers ``ok``. Jobs live under ``root``; checkpoints too, unless ``checkpoints`` names
    another folder, or is ``None``: the repository's own ``checkpoints/`` (what a fresh
    clone serves, the shipped model included). Raises :class:`MinbertError` with the end
    of the server log if it exits or does not answer within ``timeout_s`` seconds."""
    port = free_port()
    env = {**os.environ, "MINBERT_JOBS_ROOT": str(root)}
    env.pop("MINBERT_CHECKPOINTS", None)
    if checkpoints is not None:
        env["MINBERT_CHECKPOINTS"] = str(root if checkpoints == "root" else checkpoints)
    log_path = Path(log_path)
    with log_path.open("wb") as log:   # the child keeps its own descriptor
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "app/main.py", "--server.port", str(port),
             "--server.address", "127.0.0.1", "--server.headless", "true",
             "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"],
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
