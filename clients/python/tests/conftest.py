"""A live `facesweep up` on a temp data dir and free ports, and the sample photos served
over loopback HTTP, both started here and stopped after the tests."""

from __future__ import annotations

import functools
import http.server
import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from facesweep_client import Client, FacesweepError, NotFound

REPO = Path(__file__).resolve().parents[3]
READY_SECS = 180


def free_base() -> int:
    """A base port with base..base+3 (gRPC) and base+10..base+13 (/metrics) free."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = s.getsockname()[1]
        if base > 60000:
            continue
        ports = [base + i for i in (0, 1, 2, 3, 10, 11, 12, 13)]
        try:
            held = []
            for p in ports:
                s = socket.socket()
                held.append(s)
                s.bind(("127.0.0.1", p))
            return base
        except OSError:
            continue
        finally:
            for s in held:
                s.close()
    raise RuntimeError("no free port range for facesweep up")


@pytest.fixture(scope="session")
def photos():
    samples = Path(os.environ.get("FACESWEEP_SAMPLES", Path.home() / ".cache/facesweep/samples"))
    assert (samples / "astronaut.png").exists(), f"no sample photos in {samples}: run scripts/setup.sh"
    handler = functools.partial(QuietHandler, directory=str(samples))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="session")
def mesh(tmp_path_factory):
    """(delegator, results) of a running `facesweep up`."""
    binary = os.environ.get("FACESWEEP_BIN", str(REPO / "target/debug/facesweep"))
    tmp = tmp_path_factory.mktemp("up")
    base = free_base()
    log = open(tmp / "up.log", "wb")
    cmd = [binary, "up", "--port", str(base), "--data-dir", str(tmp / "data"),
           "--model", str(REPO / "models/retinaface_mnet025.pt")]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "RUST_LOG": "warn"})
    addrs = (f"127.0.0.1:{base}", f"127.0.0.1:{base + 2}")
    try:
        wait_ready(proc, Client(*addrs, timeout=5), tmp / "up.log")
        yield addrs
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_ready(proc, client: Client, log: Path) -> None:
    """Until the delegator answers (NotFound for an unknown job), at most READY_SECS."""
    deadline = time.monotonic() + READY_SECS
    while True:
        assert proc.poll() is None, f"facesweep up exited: {log.read_text()[-3000:]}"
        try:
            client.progress("no-such-job-ready-probe")
            return
        except NotFound:
            return
        except FacesweepError:
            assert time.monotonic() < deadline, f"facesweep up not ready in {READY_SECS} s: {log.read_text()[-3000:]}"
            time.sleep(0.5)


def wait_until(pred, secs: float, what: str):
    deadline = time.monotonic() + secs
    while True:
        v = pred()
        if v:
            return v
        assert time.monotonic() < deadline, f"{what}: not within {secs} s"
        time.sleep(0.25)
