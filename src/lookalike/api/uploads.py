"""Untrusted uploads: the image type is read from the content (never from the file name or the
client's Content-Type). The byte cap is enforced while the body streams in (``BodySizeLimit``);
``check_upload`` re-checks the file part itself.

An upload is accepted exactly when ingest would read the same bytes as a catalog file: one decision,
:func:`lookalike.data.images.image_format` (every Pillow format but the identify-only ones and EPS,
which Pillow decodes by running Ghostscript: :data:`~lookalike.data.images.NOT_DECODED`), with the
same reason for a refusal (``not_an_image`` and ``unsupported_format`` answer 415, ``corrupt`` and
``empty`` 422). The checked bytes are decoded by the catalog like an indexed file
(``lookalike.data.images.open_image`` with the encoder's draft size), so an uploaded copy of a
catalog image gives the item's own vector.
"""
from __future__ import annotations

import json

from starlette.exceptions import HTTPException

from lookalike.api.errors import ApiError
from lookalike.data.images import ImageError, image_format


def check_upload(data: bytes, max_bytes: int) -> bytes:
    """``data`` when it is a non-empty image within ``max_bytes`` in a format every path reads; else
    an ApiError 413 ``too_large`` or the ImageError of :func:`~lookalike.data.images.image_format`
    (``empty``, ``not_an_image``, ``unsupported_format``, ``corrupt``; statuses in
    :mod:`lookalike.api.errors`). Only the header is read here: see the module docstring."""
    if len(data) > max_bytes:
        raise ApiError(413, "too_large", f"upload is {len(data):,} bytes; the limit is {max_bytes:,}")
    if not data:
        raise ImageError("empty", "empty upload (0 bytes)")
    try:
        image_format(data)
    except ImageError as exc:
        if exc.reason == "not_an_image":
            raise ImageError("not_an_image", "the upload is not a JPEG, PNG, WebP, GIF, HEIC, AVIF, TIFF or other image "
                                             "lookalike reads (type read from its content)") from None
        raise
    return data


class BodySizeLimit:
    """ASGI middleware: refuse request bodies above ``max_bytes`` with a JSON 413.

    A declared Content-Length over the cap is refused before anything is read; streamed (chunked)
    bodies are counted as they arrive, so an upload is never spooled past the cap. (FastAPI's own
    ``max_body_size`` answers in plain text, which the web app could not show.)
    """

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            return await self._refuse(send)
        seen = 0

        async def counting_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    # FastAPI re-raises HTTPExceptions from body parsing: the app's handler answers.
                    raise HTTPException(413, self._message())
            return message

        await self.app(scope, counting_receive, send)

    def _message(self) -> str:
        return f"request body exceeds the upload limit of {self.max_bytes:,} bytes"

    async def _refuse(self, send) -> None:
        body = json.dumps({"error": "too_large", "message": self._message()}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})
