"""`medvault serve --workers N`: N server processes on one port, settings passed to each, migrations
run once before they start."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from medvault.config import load_settings
from medvault.store.setup import initialise


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _children(pid: int) -> set[int]:
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if stat.read_text().rsplit(")", 1)[1].split()[1] == str(pid):
                found.add(int(stat.parent.name))
        except OSError:
            continue
    return found


def _get(port: int, path: str, timeout: float = 2) -> int | None:
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        conn.request("GET", path)
        status = conn.getresponse().status
        conn.close()
        return status
    except OSError:
        return None


def test_two_workers_serve_one_port(tmp_path: Path) -> None:
    data = tmp_path / "data"
    initialise(load_settings(data_dir=data, environment="development"))
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDVAULT_")}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from medvault.cli.main import app; sys.exit(app())",
            "serve",
            "--data-dir",
            str(data),
            "--port",
            str(port),
            "--workers",
            "2",
        ],
        env={**env, "MEDVAULT_ENVIRONMENT": "development"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        # A readiness poll (the server gives no other signal): each round either answers or fails.
        while _get(port, "/healthz") != 200 or len(_children(proc.pid)) < 2:
            assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
            assert time.monotonic() < deadline, "the workers did not come up within 60 s"
            time.sleep(0.1)
        workers = _children(proc.pid) - {proc.pid}
        assert len(workers) >= 2  # uvicorn's worker processes (a resource tracker may be one more)
        # A worker still starting holds its accepted connections until it is ready: wait for them.
        assert [_get(port, "/fhir/metadata", timeout=60) for _ in range(20)] == [200] * 20
        assert _get(port, "/fhir/Patient", timeout=60) == 401  # the guard holds in every worker
        # Each worker logs to a file of its own (one rotating file shared by processes loses lines).
        logged = {p.name for p in (data / "logs").glob("medvault.*.log")}
        assert {f"medvault.{pid}.log" for pid in workers} & logged
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out.decode()
    assert b"Traceback" not in out
