"""Download catalog images given by URL (shop exports), into a local cache keyed by URL.

:class:`Fetcher` turns one ``http(s)://`` URL into a local file, or a :class:`FetchError` whose
``reason`` goes into the ingest report like any other row failure (:data:`FETCH_REASONS`). It is
called from the ingest pipeline's worker threads (:func:`lookalike.data.ingest.load_row`), so the
number of downloads in flight is bounded by the executor's workers (and by ``max_connections``);
one :class:`httpx.Client` (thread-safe, connection pooling) serves them all.

What one fetch does:

- per-request ``connect_timeout`` / ``read_timeout`` (seconds; read = between two received chunks);
- up to ``retries`` further attempts on timeouts, connection errors, HTTP 5xx and 429, waiting
  ``backoff * 2**attempt`` seconds plus up to 50 % random jitter (so parallel workers do not retry in
  lock-step), or the server's ``Retry-After`` (seconds) when it sends one, capped at ``max_wait``;
- redirects followed, at most ``max_redirects`` (a loop ends as ``too_many_redirects``);
- the body streamed and abandoned as soon as it passes ``max_bytes`` (``too_large``), whatever the
  ``Content-Length`` says;
- content sniffed: the bytes must be an image Pillow recognises (an HTML error page served with
  status 200 is ``not_an_image``); the ``Content-Type`` header is only quoted in the message;
- with a ``cache_dir``: the body is kept as ``<sha256(url)>.bin`` plus ``<sha256(url)>.json``
  (url, ETag, Last-Modified); the next fetch of that URL is a conditional GET
  (``If-None-Match`` / ``If-Modified-Since``) and a ``304 Not Modified`` reuses the cached file, so
  re-running an ingest downloads nothing that did not change. A server that sends neither
  validator is asked again in full (we cannot know the image did not change).
"""
from __future__ import annotations

import email.utils
import hashlib
import ipaddress
import json
import random
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpcore
import httpx
from lookalike.data.artifacts import write_bytes, write_json
from lookalike.data.images import ImageError, image_format

URL_SCHEMES = ("http://", "https://")
#: the default cap of one download (bytes); image bytes embedded in a table are capped the same (data.sources)
MAX_DOWNLOAD_BYTES = 50 * 1024 * 1024

FETCH_REASONS = {
    "http_<status>": "the server answered with that HTTP error status (http_404, http_500, http_429 …), after retries for 5xx/429",
    "timeout": "no connection or no data within the timeout, after retries",
    "connection_error": "the host could not be reached (DNS, refused, reset, TLS), after retries",
    "too_many_redirects": "more redirects than allowed (or a redirect loop)",
    "too_large": "the body passed the size cap while downloading",
    "not_an_image": "the server sent something that is not an image (e.g. an HTML page)",
    "empty": "the server answered with an empty body",
    "bad_url": "the URL cannot be requested (malformed, unsupported scheme)",
    "blocked_address": "the host resolves to a non-public address (only when private addresses are not allowed: the write API)",
}


def is_url(text: str) -> bool:
    """True for ``http://`` / ``https://`` locations (case-insensitive scheme)."""
    return text[:8].lower().startswith(URL_SCHEMES)


class FetchError(Exception):
    """A URL that gave no image; ``reason`` is one of :data:`FETCH_REASONS` (``http_<status>`` spelled out)."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason, self.message = reason, message


@dataclass
class FetchStats:
    """What a :class:`Fetcher` did (counts; thread-safe through the fetcher's lock)."""
    downloaded: int = 0      # full 200 responses kept
    revalidated: int = 0     # 304 answers: cached file reused
    retried: int = 0         # attempts repeated after a timeout / 5xx / 429 / connection error
    failed: int = 0


@dataclass
class Fetcher:
    """Downloads images by URL (see the module docstring). Use as a context manager or call
    :meth:`close` to release the connection pool. Times in seconds, sizes in bytes."""
    cache_dir: Path | None = None
    connect_timeout: float = 10.0
    read_timeout: float = 30.0
    retries: int = 3
    backoff: float = 0.5
    max_wait: float = 30.0
    max_redirects: int = 5
    max_bytes: int = MAX_DOWNLOAD_BYTES
    max_connections: int = 16
    user_agent: str = "lookalike (catalog image ingest)"
    # False: refuse hosts that resolve to loopback, private, link-local or reserved addresses (the
    # write API, where a client names the URL: no requests into the server's own network)
    allow_private: bool = True
    stats: FetchStats = field(default_factory=FetchStats)

    def __post_init__(self) -> None:
        self._client: httpx.Client | None = None
        self._lock = threading.Lock()

    # -- life cycle -----------------------------------------------------------------------
    @property
    def client(self) -> httpx.Client:
        with self._lock:
            if self._client is None:
                limits = httpx.Limits(max_connections=self.max_connections)
                # private addresses refused: every connection (redirects too) goes to an address
                # checked when it was resolved, never through a proxy that would resolve it again
                transport = None if self.allow_private else _PublicOnlyTransport(limits=limits, trust_env=False)
                self._client = httpx.Client(
                    follow_redirects=True, max_redirects=self.max_redirects,
                    timeout=httpx.Timeout(self.read_timeout, connect=self.connect_timeout),
                    limits=limits, headers={"User-Agent": self.user_agent}, transport=transport,
                    trust_env=self.allow_private)
            return self._client

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    def __enter__(self) -> Fetcher:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- fetching -------------------------------------------------------------------------
    def cache_paths(self, url: str) -> tuple[Path, Path] | None:
        """(body file, validators file) of ``url`` in the cache; None without a cache."""
        if self.cache_dir is None:
            return None
        key = hashlib.sha256(url.encode()).hexdigest()
        folder = Path(self.cache_dir) / key[:2]
        return folder / f"{key}.bin", folder / f"{key}.json"

    def fetch(self, url: str) -> tuple[bytes, Path | None]:
        """The image bytes at ``url`` and the cached file holding them (None without a cache).
        Raises :class:`FetchError`; never anything else for network or content problems."""
        try:
            return self._fetch(url)
        except FetchError:
            self._count("failed")
            raise

    def _fetch(self, url: str) -> tuple[bytes, Path | None]:
        paths = self.cache_paths(url)
        headers: dict[str, str] = {}
        if paths and paths[0].exists() and paths[1].exists():
            try:
                validators = json.loads(paths[1].read_text())
            except (OSError, ValueError):
                validators = {}
            if validators.get("etag"):
                headers["If-None-Match"] = validators["etag"]
            if validators.get("last_modified"):
                headers["If-Modified-Since"] = validators["last_modified"]
        attempt = 0
        while True:
            try:
                status, data, response_headers = self._get(url, headers)
            except _Retryable as exc:
                if attempt >= self.retries:
                    raise FetchError(exc.reason, f"{exc.message} (after {attempt + 1} attempts): {url}") from None
                self._count("retried")
                time.sleep(self._wait(attempt, exc.retry_after))
                attempt += 1
                continue
            break
        if status == 304 and paths:
            try:
                data = paths[0].read_bytes()
            except OSError:   # cache emptied under us: ask again without validators
                return self._refetch(url)
            self._count("revalidated")
            return data, paths[0]
        if status == 304:
            return self._refetch(url)
        _sniff(data, url, response_headers.get("content-type"))
        self._count("downloaded")
        if not paths:
            return data, None
        write_bytes(paths[0], data)
        write_json(paths[1], {"url": url, "etag": response_headers.get("etag"),
                              "last_modified": response_headers.get("last-modified"), "bytes": len(data)})
        return data, paths[0]

    def _refetch(self, url: str) -> tuple[bytes, Path | None]:
        paths = self.cache_paths(url)
        if paths:
            paths[1].unlink(missing_ok=True)
        return self._fetch(url)

    def _get(self, url: str, headers: dict[str, str]) -> tuple[int, bytes, httpx.Headers]:
        """One GET (redirects followed): (status, body, headers) for 2xx/304; raises
        :class:`_Retryable` or :class:`FetchError` otherwise."""
        try:
            with self.client.stream("GET", url, headers=headers) as response:
                status = response.status_code
                if status == 304:
                    return status, b"", response.headers
                if status == 429 or status >= 500:
                    raise _Retryable(f"http_{status}", f"HTTP {status} {response.reason_phrase}",
                                     _retry_after(response.headers.get("retry-after")))
                if status >= 400:
                    raise FetchError(f"http_{status}", f"HTTP {status} {response.reason_phrase}: {url}")
                if not 200 <= status < 300:
                    raise FetchError(f"http_{status}", f"unexpected HTTP {status} {response.reason_phrase}: {url}")
                declared = response.headers.get("content-length")
                if declared and declared.isdigit() and int(declared) > self.max_bytes:
                    raise FetchError("too_large", f"{int(declared)} bytes announced, over the cap of "
                                                  f"{self.max_bytes}: {url}")
                body = bytearray()
                for chunk in response.iter_bytes():
                    body += chunk
                    if len(body) > self.max_bytes:   # abort now: never hold more than the cap (+ a chunk)
                        raise FetchError("too_large", f"over the cap of {self.max_bytes} bytes while "
                                                      f"downloading: {url}")
                return status, bytes(body), response.headers
        except httpx.TooManyRedirects:
            raise FetchError("too_many_redirects", f"more than {self.max_redirects} redirects: {url}") from None
        except httpx.TimeoutException as exc:
            raise _Retryable("timeout", f"timed out ({type(exc).__name__})") from None
        except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
            raise FetchError("bad_url", f"cannot request {url!r}: {exc}") from None
        except httpx.TransportError as exc:   # connect/read errors, remote protocol errors
            raise _Retryable("connection_error", f"connection failed ({type(exc).__name__}: {exc})") from None

    def _wait(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, self.max_wait)
        base = self.backoff * 2 ** attempt
        return min(base * (1 + 0.5 * random.random()), self.max_wait)

    def _count(self, what: str) -> None:
        with self._lock:
            setattr(self.stats, what, getattr(self.stats, what) + 1)


class _Retryable(Exception):
    def __init__(self, reason: str, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.reason, self.message, self.retry_after = reason, message, retry_after


def public_address(host: str, port: int) -> str:
    """The address to connect to for ``host``: resolved once, every address it resolves to checked.
    FetchError ``blocked_address`` when any is not public (RFC 1918, loopback, link-local such as
    cloud metadata at 169.254.169.254, reserved, multicast); ``connection_error`` when it does not
    resolve."""
    try:
        found = [info[4][0] for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)]
    except (socket.gaierror, UnicodeError) as exc:
        raise FetchError("connection_error", f"{host} does not resolve: {exc}") from None
    for address in found:
        ip = ipaddress.ip_address(address.split("%")[0])
        if not ip.is_global or ip.is_multicast:
            raise FetchError("blocked_address", f"{host} resolves to {ip}, not a public address")
    if not found:
        raise FetchError("connection_error", f"{host} does not resolve")
    return found[0]


class _PinnedBackend(httpcore.NetworkBackend):
    """httpcore's network backend with each TCP connection opened to the address
    :func:`public_address` checked, not to the host name: a name that resolves to a public address
    for a check and to a private one for the connection (DNS rebinding) cannot reach the private
    one, since it is resolved only once. TLS still verifies the certificate against the host name
    (httpcore passes it to ``start_tls`` separately)."""

    def __init__(self):
        self._inner = httpcore.SyncBackend()

    def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
        return self._inner.connect_tcp(public_address(host, port), port, timeout=timeout,
                                       local_address=local_address, socket_options=socket_options)

    def connect_unix_socket(self, path, timeout=None, socket_options=None):
        raise FetchError("blocked_address", f"unix socket {path}: not a public address")

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


class _PublicOnlyTransport(httpx.HTTPTransport):
    """httpx's transport over a connection pool whose connections go through :class:`_PinnedBackend`."""

    def __init__(self, limits: httpx.Limits, trust_env: bool = False):
        super().__init__(limits=limits, trust_env=trust_env)
        self._pool = httpcore.ConnectionPool(
            ssl_context=httpx.create_ssl_context(trust_env=trust_env), max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections, keepalive_expiry=limits.keepalive_expiry,
            http1=True, http2=False, network_backend=_PinnedBackend())


def _retry_after(value: str | None) -> float | None:
    """``Retry-After`` in seconds: either delta-seconds or an HTTP date (RFC 9110 §10.2.3)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _sniff(data: bytes, url: str, content_type: str | None) -> None:
    """Raise ``not_an_image`` / ``empty`` unless ``data`` is an image by the one decision of every path
    (:func:`lookalike.data.images.image_format`, header only). An image format not read here, or one
    cut short, goes on to the decoder, which names it / says ``corrupt`` as for the same file on disk."""
    try:
        image_format(data)
        return
    except ImageError as exc:
        if exc.reason not in ("not_an_image", "empty"):
            return
    if not data:
        raise FetchError("empty", f"the server sent no bytes (status 200): {url}")
    kind = f" (Content-Type {content_type})" if content_type else ""
    raise FetchError("not_an_image", f"the server sent {len(data)} bytes that are not an image{kind}: {url}")
