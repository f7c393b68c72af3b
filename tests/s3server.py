"""A local S3-compatible server (moto's server mode) on loopback, for the s3:// tests."""

from __future__ import annotations

import logging
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pyarrow.fs as pafs
import pytest

S3_ENV = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_DEFAULT_REGION",
          "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer
    logging.getLogger("werkzeug").setLevel(logging.ERROR)     # no request log on stderr
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3_env(moto_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The environment of a fresh bucket; returns it (for subprocesses) incl. ``root``."""
    for name in S3_ENV:
        monkeypatch.delenv(name, raising=False)
    env = {"AWS_ENDPOINT_URL": moto_endpoint, "AWS_REGION": "us-east-1",
           "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "s3cret-Do-Not-Store-7f3a9",
           "AWS_EC2_METADATA_DISABLED": "true", "TICKREC_JOURNAL": str(tmp_path / "journal")}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    bucket = f"tickrec-{secrets.token_hex(4)}"
    pafs.S3FileSystem(endpoint_override=moto_endpoint.split("://")[1], scheme="http",
                      region="us-east-1", access_key="testing", secret_key="testing",
                      allow_bucket_creation=True).create_dir(bucket)
    return {**os.environ, **env, "root": f"s3://{bucket}/store"}


# moto's server, less its per-request overhead (1.17x the requests/s side by side): no
# request log line, and its module list read once, not listed from disk per request.
LEAN_MOTO = ("import logging; logging.getLogger('werkzeug').setLevel(logging.ERROR); "
             "import moto.backends as b; "
             "b.list_of_moto_modules = lambda mods=frozenset(b.list_of_moto_modules()): mods; "
             "from moto.server import main; main()")


@pytest.fixture(scope="module")
def moto_process() -> Iterator[str]:
    """moto's server in its own process (for request-heavy tests: it serves on the other
    core instead of taking the test's GIL)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-c", LEAN_MOTO, "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(url + "/moto-api/", timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("moto server did not start") from None
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)
