"""`lookalike serve`: prints the URL and serves the catalog; a missing catalog is a clear error."""
from __future__ import annotations

import socket
import subprocess
import sys
import time

import pytest
from typer.testing import CliRunner

from lookalike.cli import app

from fakes import N_ITEMS

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")


def test_serve_command_prints_the_url_and_serves(web_home):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "lookalike", "serve", "--catalog", "shapes", "--home", str(web_home),
                               "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = server.stdout.readline().strip()
        assert url == f"http://127.0.0.1:{port}/"
        for _ in range(200):
            try:
                health = httpx.get(f"{url}api/health", timeout=2).json()
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        assert health["catalog"] == "shapes" and health["items"] == N_ITEMS
        assert "<title>lookalike</title>" in httpx.get(url).text
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_serve_command_on_a_missing_catalog_says_so(tmp_path):
    result = CliRunner().invoke(app, ["serve", "--catalog", "nothing", "--home", str(tmp_path)])
    assert result.exit_code == 1 and "not found" in result.output
