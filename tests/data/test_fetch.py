"""Images by URL (issue #13, "Shop exports point at images by URL"): downloads against a local HTTP
server on 127.0.0.1 (ephemeral port, stopped after each test) that serves good images, slow
answers, 404/500, a 500-then-200, a 429 with Retry-After, a redirect loop, a huge body and HTML."""
from __future__ import annotations

import csv
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from fakes import FAST, png_bytes
from PIL import Image

from lookalike import Catalog
from lookalike.data.fetch import FetchError, Fetcher, is_url
from lookalike.data.sources import read_source

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220), "grey": (128, 128, 128)}
IMAGES = {name: png_bytes(Image.new("RGB", (32, 32), rgb)) for name, rgb in COLOURS.items()}
HUGE = 64 * 1024 * 1024   # bytes the /huge route would send; the tests cap at 64 KiB


class Server:
    """The test server's state: requests per path and status, and one-shot failures."""

    def __init__(self):
        self.requests: Counter[tuple[str, int]] = Counter()
        self.sent_bytes: Counter[str] = Counter()
        self.flaky_failed: set[str] = set()
        self.lock = threading.Lock()
        self.in_flight = self.max_in_flight = 0

    def full_downloads(self) -> int:
        return sum(n for (path, status), n in self.requests.items() if status == 200)

    def count(self, path: str, status: int) -> None:
        with self.lock:
            self.requests[(path, status)] += 1


def make_handler(state: Server):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        timeout = 5   # a stuck client connection cannot keep a server thread forever

        def log_message(self, *args):   # quiet
            pass

        def reply(self, status: int, body: bytes = b"", headers: dict | None = None):
            state.count(self.path, status)
            self.send_response(status)
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if body:
                self.wfile.write(body)

        def do_GET(self):
            path = self.path
            if path.startswith("/img/"):
                name = path.removeprefix("/img/").removesuffix(".png")
                etag = f'"{name}-v1"'
                if self.headers.get("If-None-Match") == etag:
                    return self.reply(304, headers={"ETag": etag})
                return self.reply(200, IMAGES[name], {"Content-Type": "image/png", "ETag": etag})
            if path.startswith("/lm/"):   # Last-Modified only, no ETag
                stamp = "Wed, 21 Oct 2015 07:28:00 GMT"
                if self.headers.get("If-Modified-Since") == stamp:
                    return self.reply(304)
                return self.reply(200, IMAGES["grey"], {"Content-Type": "image/png", "Last-Modified": stamp})
            if path.startswith("/paced/"):   # 0.1 s per image: shows how many downloads overlap
                with state.lock:
                    state.in_flight += 1
                    state.max_in_flight = max(state.max_in_flight, state.in_flight)
                time.sleep(0.1)
                with state.lock:
                    state.in_flight -= 1
                return self.reply(200, IMAGES["red"], {"Content-Type": "image/png"})
            if path == "/slow":
                time.sleep(1.0)
                return self.reply(200, IMAGES["red"])
            if path in ("/404", "/500"):
                return self.reply(int(path[1:]), b"error page", {"Content-Type": "text/html"})
            if path.startswith("/flaky"):   # 500 the first time, then the image
                with state.lock:
                    first = path not in state.flaky_failed
                    state.flaky_failed.add(path)
                return self.reply(500) if first else self.reply(200, IMAGES["blue"], {"Content-Type": "image/png"})
            if path == "/busy":   # 429 with Retry-After the first time
                with state.lock:
                    first = path not in state.flaky_failed
                    state.flaky_failed.add(path)
                return self.reply(429, headers={"Retry-After": "0"}) if first else self.reply(200, IMAGES["green"])
            if path.startswith("/loop"):
                return self.reply(302, headers={"Location": "/loop-again" if path == "/loop" else "/loop"})
            if path == "/moved":
                return self.reply(301, headers={"Location": "/img/green.png"})
            if path == "/huge":   # no Content-Length: only the streaming cap can stop it
                state.count(path, 200)
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.send_header("Connection", "close")
                self.end_headers()
                self.close_connection = True
                chunk = IMAGES["red"] + b"\0" * (16384 - len(IMAGES["red"]))
                try:
                    for _ in range(HUGE // len(chunk)):
                        self.wfile.write(chunk)
                        state.sent_bytes[path] += len(chunk)
                except (BrokenPipeError, ConnectionResetError):
                    pass
                return None
            if path == "/empty":   # 200 with no body (a CDN placeholder)
                return self.reply(200, b"", {"Content-Type": "image/png"})
            if path == "/cut":     # a PNG cut inside its header: a damaged image, not some other file
                return self.reply(200, IMAGES["red"][:20], {"Content-Type": "image/png"})
            if path == "/html":
                return self.reply(200, b"<!doctype html><html><body>Sign in</body></html>", {"Content-Type": "image/png"})
            return self.reply(404)
    return Handler


class QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):   # clients hanging up (timeouts, caps) are expected
        pass


@pytest.fixture
def server():
    state = Server()
    httpd = QuietServer(("127.0.0.1", 0), make_handler(state))
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def fast_fetcher(cache_dir: Path | None = None, **overrides) -> Fetcher:
    options = dict(cache_dir=cache_dir, connect_timeout=1.0, read_timeout=0.3, retries=2, backoff=0.01,
                   max_bytes=64 * 1024, max_redirects=3)
    return Fetcher(**{**options, **overrides})


def reason(fetcher: Fetcher, url: str) -> str:
    with pytest.raises(FetchError) as caught:
        fetcher.fetch(url)
    return caught.value.reason


def test_is_url():
    assert is_url("https://shop.example/a.jpg") and is_url("HTTP://x/y.png")
    assert not is_url("images/a.jpg") and not is_url("/abs/http/a.jpg") and not is_url("ftp://x/a.jpg")


def test_good_image_is_downloaded_and_cached_by_url(server, tmp_path):
    with fast_fetcher(tmp_path / "cache") as fetcher:
        data, cached = fetcher.fetch(f"{server.url}/img/red.png")
    assert data == IMAGES["red"] and cached.read_bytes() == IMAGES["red"]
    assert cached.is_relative_to(tmp_path / "cache")
    assert Image.open(cached).getpixel((0, 0)) == COLOURS["red"]


def test_each_failure_has_its_reason(server, tmp_path):
    with fast_fetcher(tmp_path / "cache") as fetcher:
        assert reason(fetcher, f"{server.url}/404") == "http_404"
        assert reason(fetcher, f"{server.url}/500") == "http_500"
        assert reason(fetcher, f"{server.url}/slow") == "timeout"
        assert reason(fetcher, f"{server.url}/loop") == "too_many_redirects"
        assert reason(fetcher, f"{server.url}/huge") == "too_large"
        assert reason(fetcher, f"{server.url}/html") == "not_an_image"
        assert reason(fetcher, "http://127.0.0.1:1/refused.png") == "connection_error"
    assert server.requests[("/404", 404)] == 1                 # a client error is not retried
    assert server.requests[("/500", 500)] == 3                 # 1 + retries=2
    assert server.sent_bytes["/huge"] < HUGE // 4              # stopped near the cap (+ socket buffers)
    assert not list((tmp_path / "cache").rglob("*.bin"))      # nothing that failed is cached


def test_5xx_and_429_are_retried_then_succeed(server):
    with fast_fetcher() as fetcher:
        assert fetcher.fetch(f"{server.url}/flaky")[0] == IMAGES["blue"]
        assert fetcher.fetch(f"{server.url}/busy")[0] == IMAGES["green"]
        assert fetcher.fetch(f"{server.url}/moved")[0] == IMAGES["green"]   # a redirect within the cap
    assert fetcher.stats.retried == 2
    assert server.requests[("/flaky", 500)] == 1 and server.requests[("/flaky", 200)] == 1
    assert server.requests[("/busy", 429)] == 1


def test_backoff_grows_exponentially_with_jitter_and_honours_retry_after():
    fetcher = Fetcher(backoff=1.0, max_wait=5.0)
    waits = [fetcher._wait(attempt, None) for attempt in range(3)]
    assert 1.0 <= waits[0] <= 1.5 and 2.0 <= waits[1] <= 3.0 and 4.0 <= waits[2] <= 5.0
    assert fetcher._wait(0, 2.0) == 2.0 and fetcher._wait(0, 60.0) == 5.0


def test_revalidation_reuses_the_cache(server, tmp_path):
    urls = [f"{server.url}/img/red.png", f"{server.url}/lm/grey.png"]
    with fast_fetcher(tmp_path / "cache") as fetcher:
        first = [fetcher.fetch(u)[0] for u in urls]
    with fast_fetcher(tmp_path / "cache") as again:
        second = [again.fetch(u)[0] for u in urls]
    assert first == second == [IMAGES["red"], IMAGES["grey"]]
    assert again.stats.revalidated == 2 and again.stats.downloaded == 0
    assert server.requests[("/img/red.png", 304)] == 1 and server.requests[("/lm/grey.png", 304)] == 1


def write_rows(path: Path, rows: list[dict]) -> Path:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_several_images_per_cell_or_per_product_id_become_one_item_each(tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "local.png")
    table = write_rows(tmp_path / "shop.csv", [
        {"id": "p1", "image": "https://shop.test/a.jpg | https://shop.test/b.jpg;local.png", "label": "dress"},
        {"id": "p2", "image": "https://shop.test/c.jpg", "label": "shoe"},
    ])
    read = read_source(table)
    assert [(r.id, r.url, r.metadata.get("product_id")) for r in read.rows] == [
        ("p1#1", "https://shop.test/a.jpg", "p1"), ("p1#2", "https://shop.test/b.jpg", "p1"),
        ("p1#3", None, "p1"), ("p2", "https://shop.test/c.jpg", None)]
    assert read.rows[2].path == (tmp_path / "local.png").resolve()
    products = write_rows(tmp_path / "products.csv", [
        {"product_id": "p1", "image": "https://shop.test/a.jpg"},
        {"product_id": "p1", "image": "https://shop.test/b.jpg"},
        {"product_id": "p1", "image": "https://shop.test/a.jpg"},   # the same image twice: a duplicate
        {"product_id": "p2", "image": "https://shop.test/c.jpg"},
    ])
    read = read_source(products)
    assert [(r.id, r.metadata["product_id"]) for r in read.rows] == [("p1#1", "p1"), ("p1#2", "p1"), ("p2", "p2")]
    assert [(e.reason, e.line, e.path) for e in read.errors] == [("duplicate_id", 4, "https://shop.test/a.jpg")]
    no_ids = write_rows(tmp_path / "no-ids.csv", [{"image": "https://shop.test/img/shirt.jpg?v=3"}])
    assert [r.id for r in read_source(no_ids).rows] == ["shirt"]


@pytest.mark.parametrize("column", ["image_url", "image_link", "Image Src", "images"])
def test_shop_export_image_columns_are_found(tmp_path, column):
    table = write_rows(tmp_path / "export.csv", [{"Handle": "tee", column: "https://shop.test/tee.jpg", "Title": "Tee"}])
    assert [(r.url, r.metadata) for r in read_source(table).rows] == [
        ("https://shop.test/tee.jpg", {"Handle": "tee", "Title": "Tee"})]


def test_catalog_ingests_a_shop_export_and_rerun_downloads_nothing(server, tmp_path):
    u = server.url
    table = write_rows(tmp_path / "shop.csv", [
        {"id": "p1", "image": f"{u}/img/red.png|{u}/img/green.png", "label": "dress"},
        {"id": "p2", "image": f"{u}/img/blue.png", "label": "shoe"},
        {"id": "gone", "image": f"{u}/404", "label": "shoe"},
        {"id": "page", "image": f"{u}/html", "label": "shoe"},
        {"id": "loop", "image": f"{u}/loop", "label": "shoe"},
    ])
    cat = Catalog.create("shop", home=tmp_path / "home")
    report = cat.index(table, FAST)
    assert report.added == 3
    assert {(e.id, e.reason, e.path) for e in report.errors} == {
        ("gone", "http_404", f"{u}/404"), ("page", "not_an_image", f"{u}/html"),
        ("loop", "too_many_redirects", f"{u}/loop")}
    item = cat.get("p1#2")
    assert item.metadata["image_url"] == f"{u}/img/green.png" and item.metadata["product_id"] == "p1"
    assert Path(item.path).is_relative_to(cat.dir / "downloads") and Image.open(item.path).getpixel((0, 0)) == COLOURS["green"]
    assert cat.search(image=item.path, k=1)[0].id == "p1#2"   # the cached file is a normal image path
    full = server.full_downloads()

    again = cat.index(table, FAST)
    assert again.unchanged == 3 and again.added == again.updated == 0
    assert report.downloads == {"downloaded": 3, "revalidated": 0, "retried": 0, "failed": 3}
    assert again.downloads == {"downloaded": 0, "revalidated": 3, "retried": 0, "failed": 3}
    assert server.full_downloads() - full == 1   # only the HTML page, which failed and so was not cached
    assert sum(server.requests[(f"/img/{c}.png", 304)] for c in ("red", "green", "blue")) == 3


def test_downloads_run_concurrently_bounded_by_the_workers(server, tmp_path):
    table = write_rows(tmp_path / "many.csv", [{"id": f"p{i}", "image": f"{server.url}/paced/{i}.png"}
                                               for i in range(12)])
    cat = Catalog.create("many", home=tmp_path / "home")
    progress: list[int] = []
    report = cat.index(table, FAST, workers=3, on_progress=progress.append)
    assert report.added == 12 and report.errors == [] and sum(progress) == 12   # downloads count in the progress
    assert 2 <= server.max_in_flight <= 3


def test_private_addresses_are_refused_also_after_dns_rebinding(server, monkeypatch):
    """A host name that resolves to a public address when checked and to 127.0.0.1 when connected
    (DNS rebinding) must not reach the private server: the address is resolved once, checked, and
    the connection opened to that address."""
    import socket

    real = socket.getaddrinfo
    answers = {"rebind.example": ["93.184.216.34", "127.0.0.1", "127.0.0.1", "127.0.0.1"]}
    calls = []

    def rebinding(host, port, *args, **kwargs):
        if host in answers:
            calls.append(host)
            address = answers[host].pop(0) if len(answers[host]) > 1 else answers[host][0]
            return real(address, port, *args, **kwargs)
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    port = server.url.rsplit(":", 1)[1]
    guarded = fast_fetcher(allow_private=False, retries=0, connect_timeout=0.5)
    with pytest.raises(FetchError) as caught:
        guarded.fetch(f"http://rebind.example:{port}/img/red.png")
    assert caught.value.reason in ("blocked_address", "connection_error", "timeout")
    assert server.full_downloads() == 0, "the rebound name reached the private server"
    assert calls == ["rebind.example"]   # resolved once, for the check and the connection
    # plainly private names and literal addresses, redirects included, are refused before connecting
    assert reason(guarded, f"{server.url}/img/red.png") == "blocked_address"
    assert reason(guarded, f"http://localhost:{port}/img/red.png") == "blocked_address"
    assert server.full_downloads() == 0
    assert fast_fetcher().fetch(f"{server.url}/img/red.png")[0] == IMAGES["red"]   # allowed when private is allowed


def test_an_empty_body_is_empty_and_a_cut_image_reaches_the_decoder_as_corrupt(server, tmp_path):
    """An empty 200 was 'not_an_image' (a local empty file is 'empty'); a PNG cut inside its header was
    'not_an_image' too, where the same bytes on disk are 'corrupt'."""
    with fast_fetcher(tmp_path / "cache") as fetcher:
        assert reason(fetcher, f"{server.url}/empty") == "empty"
        data, _ = fetcher.fetch(f"{server.url}/cut")
    assert data == IMAGES["red"][:20]
    table = tmp_path / "t.csv"
    table.write_text(f"id,image_url\ncut,{server.url}/cut\nok,{server.url}/img/red.png\n")
    report = Catalog.create("cut", home=tmp_path / "home").index(table, FAST)
    assert [(e.id, e.reason) for e in report.errors] == [("cut", "corrupt")] and report.added == 1
