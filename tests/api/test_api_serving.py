"""Serving at throughput: ETag / 304 on images, thumbnails and search answers, orjson answers equal to
the response model's JSON, and several worker processes that all see a write at once."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest

pytest.importorskip("fastapi")
import httpx  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402
from pydantic import TypeAdapter  # noqa: E402

from lookalike.api import create_app  # noqa: E402
from lookalike.api.schemas import ItemPage, SearchResponse  # noqa: E402
from lookalike.catalog import Catalog  # noqa: E402

import fakes  # noqa: E402
from fakes import QUERY_ID  # noqa: E402

ANSWER = TypeAdapter(SearchResponse)


@pytest.fixture
def writable(home, shapes_folder):
    """A TestClient on a fresh copy of the shapes catalog (tests here change it)."""
    fakes.indexed_catalog(home, shapes_folder)
    with TestClient(create_app("shapes", home=home, api_key="")) as c:
        yield c


def _item_id(client) -> str:
    return client.get("/api/items?limit=1").json()["items"][0]["id"]


@pytest.mark.parametrize("kind", ["image", "thumb", "thumb?size=128"])
def test_images_and_thumbnails_answer_304_to_their_etag(client, kind):
    item = client.get(f"/api/items?limit=1").json()["items"][0]
    url = f"{item['image_url']}" if kind == "image" else f"{item['thumb_url']}{kind[5:]}"
    first = client.get(url)
    assert first.status_code == 200 and first.content
    etag = first.headers["etag"]
    assert etag.startswith('"') and "max-age" in first.headers["cache-control"]
    again = client.get(url, headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b"" and again.headers["etag"] == etag
    assert client.get(url, headers={"If-None-Match": '"something-else"'}).status_code == 200
    assert client.get(url, headers={"If-None-Match": f'"x", {etag}'}).status_code == 304


def test_thumbnail_sizes_have_different_etags(client):
    item = client.get("/api/items?limit=1").json()["items"][0]
    tags = {client.get(f"{item['thumb_url']}?size={s}").headers["etag"] for s in (128, 256, 512)}
    assert len(tags) == 3


def test_search_answers_carry_an_etag_that_changes_with_the_catalog(writable, home):
    qid = _item_id(writable)
    url = f"/api/items/{qid}/similar?k=5"
    first = writable.get(url)
    etag = first.headers["etag"]
    assert first.status_code == 200 and first.headers["cache-control"] == "private, no-cache"
    assert writable.get(url, headers={"If-None-Match": etag}).status_code == 304
    # another URL (other k) is another answer
    other = writable.get(f"/api/items/{qid}/similar?k=6")
    assert other.headers["etag"] != etag
    # a change made elsewhere (the CLI's way in: another Catalog on the same files) shows at once
    removed = first.json()["results"][0]["id"]
    assert Catalog.open("shapes", home=home).remove([removed]) == [removed]
    fresh = writable.get(url, headers={"If-None-Match": etag})
    assert fresh.status_code == 200 and fresh.headers["etag"] != etag
    assert removed not in {h["id"] for h in fresh.json()["results"]}


def test_unknown_item_is_still_404_with_caching_on(writable):
    assert writable.get("/api/items/nope/similar", headers={"If-None-Match": "*"}).status_code == 404


def test_without_http_cache_search_answers_have_no_etag_and_no_304(home, shapes_folder):
    fakes.indexed_catalog(home, shapes_folder)
    with TestClient(create_app("shapes", home=home, api_key="", http_cache=False)) as c:
        qid = _item_id(c)
        answer = c.get(f"/api/items/{qid}/similar")
        assert answer.status_code == 200 and "etag" not in answer.headers
        assert c.get(f"/api/items/{qid}/similar", headers={"If-None-Match": "*"}).status_code == 200


def _model_json(raw: bytes) -> dict:
    """What FastAPI's response-model path answered before (validate, then dump as JSON)."""
    return json.loads(ANSWER.dump_json(ANSWER.validate_json(raw)))


def test_orjson_answers_equal_the_response_models_json(client, shapes_folder):
    answers = [
        client.get(f"/api/items/{QUERY_ID}/similar", params={"k": 7, "diversity": 0.3}),
        client.get(f"/api/items/{QUERY_ID}/similar", params={"group_by": "shape", "collapse_duplicates": True}),
        client.post("/api/search", json={"item": QUERY_ID, "k": 5, "boosts": ["colour=red:0.1"]}),
        client.post("/api/search/image", files={"file": ("q.png", (shapes_folder / "circle-red" / "circle-red-0.png").read_bytes())},
                    data={"k": "4"}),
    ]
    for answer in answers:
        assert answer.status_code == 200, answer.text
        assert answer.headers["content-type"] == "application/json"
        body = json.loads(answer.content)
        assert body["results"] and body == _model_json(answer.content)
        # key for key and value for value, floats included (orjson and pydantic both write shortest repr)
        assert json.dumps(body, sort_keys=True) == json.dumps(_model_json(answer.content), sort_keys=True)
    page = client.get("/api/items?limit=5")
    assert json.loads(page.content) == json.loads(TypeAdapter(ItemPage).dump_json(
        TypeAdapter(ItemPage).validate_json(page.content)))


# -- several worker processes -----------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _fresh_get(url: str) -> httpx.Response:
    """One request on a new connection (the kernel spreads new connections over the workers)."""
    with httpx.Client(timeout=30) as c:
        return c.get(url)


def test_two_workers_both_see_a_write_made_elsewhere(home, shapes_folder):
    cat = fakes.indexed_catalog(home, shapes_folder)
    port = _free_port()
    env = {**os.environ, "LOOKALIKE_HOME": str(home)}
    server = subprocess.Popen([sys.executable, "-m", "lookalike", "serve", "--catalog", "shapes", "--port", str(port),
                               "--workers", "2"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, server.stderr.read()
            try:
                if _fresh_get(f"{base}/api/health").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.3)
        qid, total = cat.items(limit=1)[0].id, len(cat)
        similar = f"{base}/api/items/{qid}/similar?k=5"
        before = [_fresh_get(similar) for _ in range(12)]   # every worker has answered (and cached) this version
        assert all(r.status_code == 200 for r in before)
        assert len({r.headers["etag"] for r in before}) == 1   # one data version, one ETag, whichever worker
        gone = before[0].json()["results"][0]["id"]
        assert Catalog.open("shapes", home=home).remove([gone]) == [gone]   # a write by another process
        after = [_fresh_get(similar) for _ in range(12)]
        assert all(r.status_code == 200 and gone not in {h["id"] for h in r.json()["results"]} for r in after)
        assert {r.headers["etag"] for r in after}.isdisjoint({before[0].headers["etag"]})
        counts = {_fresh_get(f"{base}/api/health").json()["items"] for _ in range(12)}
        assert counts == {total - 1}
        assert _fresh_get(f"{base}/api/items/{gone}").status_code == 404
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_json_response_writes_integers_beyond_64_bits():
    """orjson refuses ints beyond 64 bits (metadata of a JSONL catalog can hold one): such an answer
    falls back to the stdlib, exactly, instead of a 500; numpy values still serialise."""
    import numpy as np

    from lookalike.api.deps import json_response

    payload = {"metadata": {"big": 10**30}, "score": np.float32(0.5), "v": np.arange(2, dtype=np.int64)}
    assert json.loads(json_response(payload).body) == {"metadata": {"big": 10**30}, "score": 0.5, "v": [0, 1]}


def test_workers_get_one_reuseport_socket_each_and_a_busy_port_still_fails():
    """`serve --workers N` binds one SO_REUSEPORT socket per worker (lookalike.api.workers), so the
    kernel spreads connections; a port something already listens on is refused, not shared."""
    from lookalike.api.workers import reuseport_sockets

    if not hasattr(socket, "SO_REUSEPORT"):
        pytest.skip("no SO_REUSEPORT on this platform")
    port = _free_port()
    sockets = reuseport_sockets("127.0.0.1", port, 3)
    try:
        assert sockets is not None and len(sockets) == 3
        assert {s.getsockname() for s in sockets} == {("127.0.0.1", port)}
        assert all(s.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) for s in sockets)
    finally:
        for s in sockets or ():
            s.close()
    assert reuseport_sockets("127.0.0.1", port, 1) is None   # one worker: uvicorn's own socket
    with socket.socket() as busy:   # another server on the port (with SO_REUSEPORT too): not shared
        busy.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        busy.bind(("127.0.0.1", port))
        busy.listen()
        assert reuseport_sockets("127.0.0.1", port, 2) is None


def test_each_worker_starts_on_its_own_socket(monkeypatch):
    """SpreadWorkers hands worker i socket i alone (uvicorn's supervisor hands every worker the list)."""
    import signal

    from uvicorn.config import Config
    from uvicorn.supervisors.multiprocess import SIGNALS

    from lookalike.api import workers as workers_module

    _HANDLERS = {}

    started = []

    class Recorder:
        def __init__(self, config, sockets):
            self.sockets = sockets

        def start(self):
            started.append(self.sockets)

    monkeypatch.setattr(workers_module, "Process", Recorder)
    for sig in SIGNALS:   # the supervisor installs its own handlers: the test process keeps its own
        _HANDLERS[sig] = signal.getsignal(sig)
    sockets = [object(), object(), object()]
    try:
        workers_module.SpreadWorkers(Config("lookalike.api.main:app_from_env", factory=True, workers=3),
                                     sockets).init_processes()
    finally:
        for sig, handler in _HANDLERS.items():
            signal.signal(sig, handler)
    assert started == [[sockets[0]], [sockets[1]], [sockets[2]]]


def test_two_workers_share_a_burst_of_connections(home, shapes_folder):
    """Sixteen keep-alive connections opened at once reach both workers (with one shared socket the
    worker that woke first took them all): each worker holds some (the kernel hashes each connection to
    a socket: all on one has odds 2 in 65,536)."""
    if not hasattr(socket, "SO_REUSEPORT"):
        pytest.skip("no SO_REUSEPORT on this platform")
    fakes.indexed_catalog(home, shapes_folder)
    port = _free_port()
    env = {**os.environ, "LOOKALIKE_HOME": str(home)}
    server = subprocess.Popen([sys.executable, "-m", "lookalike", "serve", "--catalog", "shapes", "--port", str(port),
                               "--workers", "2"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    clients = []
    try:
        deadline = time.monotonic() + 120
        ready = 0
        while ready < 8:   # both workers up: several fresh connections answered in a row
            assert server.poll() is None, server.stderr.read()
            try:
                ready = ready + 1 if _fresh_get(f"{base}/api/health/ready").status_code == 200 else 0
            except httpx.HTTPError:
                ready = 0
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.1)
        # connected all at once (as a load generator or a proxy's pool does), then one request on each
        clients = [socket.create_connection(("127.0.0.1", port), timeout=30) for _ in range(16)]
        for c in clients:
            c.sendall(b"GET /api/health/live HTTP/1.1\r\nHost: test\r\n\r\n")
        assert all(c.recv(65536).startswith(b"HTTP/1.1 200") for c in clients)
        held = {pid: _tcp_connections(pid, port) for pid in _children(server.pid)}   # workers (+ a helper)
        assert sum(held.values()) == 16 and sum(n > 0 for n in held.values()) == 2, held
    finally:
        for c in clients:
            c.close()
        server.terminate()
        server.wait(timeout=30)


def _children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = open(f"/proc/{entry}/stat").read().rpartition(")")[2].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                out.append(int(entry))
    return out


def _tcp_connections(pid: int, port: int) -> int:
    """Established TCP connections to ``port`` among the sockets process ``pid`` holds (/proc)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    count = 0
    for line in open("/proc/net/tcp").read().splitlines()[1:]:
        parts = line.split()
        local, state, inode = parts[1], parts[3], parts[9]
        if state == "01" and int(local.split(":")[1], 16) == port and inode in inodes:
            count += 1
    return count
