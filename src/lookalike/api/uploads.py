"""Untrusted uploads: the image type is sniffed from the first bytes (never from the file name or
the client's Content-Type). The byte cap is enforced while the body streams in (``BodySizeLimit``);
``check_upload`` re-checks the file part itself.

Only formats a browser or camera produces are accepted, so exotic Pillow plugins (EPS, PSD, ...)
never see user data. The checked bytes are decoded by the catalog like an indexed file
(``lookalike.data.images.open_image`` with the encoder's draft size), so an uploaded copy of a
catalog image gives the item's own vector; HEIC/AVIF without their plugin answer 415
``unsupported_format``.
"""
from __future__ import annotations

import json

from starlette.exceptions import HTTPException

from lookalike.api.errors import ApiError
from lookalike.data.images import ImageError, image_format_by_signature

# (magic prefix, offset, format name)
_SIGNATURES = (
    (b"\xff\xd8\xff", 0, "jpeg"),
    (b"\x89PNG\r\n\x1a\n", 0, "png"),
    (b"GIF87a", 0, "gif"),
    (b"GIF89a", 0, "gif"),
    (b"BM", 0, "bmp"),
    (b"II*\x00", 0, "tiff"),
    (b"MM\x00*", 0, "tiff"),
)


def sniff_image_type(data: bytes) -> str | None:
    """The image format named by the content's magic bytes, or None."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if image_format_by_signature(data) in ("HEIC/HEIF", "AVIF"):  # phone photos
        return image_format_by_signature(data).lower()
    for magic, offset, name in _SIGNATURES:
        if data[offset:offset + len(magic)] == magic:
            return name
    return None


def check_upload(data: bytes, max_bytes: int) -> bytes:
    """``data`` when it is a non-empty image of an accepted type within ``max_bytes``; else an
    ApiError (413, 415) or ImageError (``empty``: 422). Not decoded here: see the module docstring."""
    if len(data) > max_bytes:
        raise ApiError(413, "too_large", f"upload is {len(data):,} bytes; the limit is {max_bytes:,}")
    if not data:
        raise ImageError("empty", "empty upload (0 bytes)")
    kind = sniff_image_type(data[:16])
    if kind is None:
        raise ApiError(415, "not_an_image",
                       "the upload is not a JPEG, PNG, WebP, GIF, BMP, TIFF, HEIC or AVIF image "
                       "(type read from its content)")
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
