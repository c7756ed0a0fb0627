"""``image_url`` → a decoded picture, within the server's limits.

Accepted: ``data:image/…;base64,…`` URLs, and — only when the server was started with
``--allowed-media-dir`` — local paths or ``file://`` URLs that resolve (symlinks followed) inside
that folder. ``http(s)://`` URLs are refused, never fetched: a server that fetches whatever URL a
request names can be made to reach hosts its clients cannot. Every picture is held to a byte
limit before it is decoded and to the pixel limit read from its header before its pixels are.
Runs in a worker thread (decoding is CPU work)."""

from __future__ import annotations

import base64
import binascii
import io
import warnings
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from ..images import DEFAULT_MAX_PIXELS
from .errors import ApiError

FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP")  # what Pillow is allowed to parse: no exotic decoders
INLINE_HINT = "send the picture inline as a data URL: 'data:image/png;base64,...'"


@dataclass
class MediaPolicy:
    max_image_bytes: int = 10 << 20  # per picture, encoded
    max_pixels: int = DEFAULT_MAX_PIXELS  # per picture, from its header
    allowed_dir: Path | None = None  # local files are read only from inside this folder

    def __post_init__(self):
        if self.allowed_dir is not None:
            folder = Path(self.allowed_dir).expanduser()
            if not folder.is_dir():
                raise ValueError(f"--allowed-media-dir {self.allowed_dir} is not a folder; give an existing folder "
                                 "of pictures, or leave the option out to accept data URLs only")
            self.allowed_dir = folder.resolve()


def load_image_url(url: str, policy: MediaPolicy, where: str = "image_url"):
    """One ``image_url.url`` → a loaded PIL image, or ApiError (400 bad, 403 not allowed, 413 too large)."""
    if url[:5].lower() == "data:":
        data = _data_url_bytes(url, policy.max_image_bytes, where)
    else:
        data = _local_bytes(_local_path(url, where), url, policy, where)
    return open_picture(data, policy.max_pixels, where)


def _data_url_bytes(url: str, limit: int, where: str) -> bytes:
    header, comma, payload = url[5:].partition(",")
    params = [p.strip().lower() for p in header.split(";")]
    if not comma:
        raise ApiError(400, f"{where}: a data URL reads 'data:image/png;base64,<data>'; this one has no ','", where)
    if not params[0].startswith("image/"):
        raise ApiError(400, f"{where}: the data URL's media type is {params[0] or 'missing'!r}, not an image; "
                       f"send a picture ({', '.join(FORMATS).lower()}) as 'data:image/png;base64,...'", where)
    if "base64" not in params[1:]:
        raise ApiError(400, f"{where}: the data URL must be base64-encoded ('data:{params[0]};base64,...')", where)
    if len(payload) // 4 * 3 > limit:
        raise ApiError(413, f"{where}: the picture is about {len(payload) // 4 * 3:,} bytes, over this server's limit "
                       f"of {limit:,} bytes per image; send a smaller picture (downscale or recompress it)", where,
                       "image_too_large")
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as e:
        raise ApiError(400, f"{where}: the data URL's payload is not valid base64 ({e}); encode the file's bytes "
                       "with standard base64 (A–Z, a–z, 0–9, '+', '/', '=' padding), no line breaks", where) from None


def _local_path(url: str, where: str) -> str:
    """A file URL or a bare path → the path it names; other schemes are refused."""
    scheme = urlsplit(url).scheme.lower() if "://" in url else ""
    if scheme in ("http", "https"):
        raise ApiError(400, f"{where}: remote image URLs ({scheme}://) are not fetched by this server; {INLINE_HINT}",
                       where, "remote_url_refused")
    if scheme == "file":
        parts = urlsplit(url)
        if parts.netloc not in ("", "localhost"):
            raise ApiError(400, f"{where}: a file URL names a path on this machine, 'file:///folder/picture.png'; got "
                           f"host {parts.netloc!r}", where)
        return unquote(parts.path)
    if scheme:
        raise ApiError(400, f"{where}: unsupported URL scheme {scheme!r}; use a data URL, or a path / file:// URL "
                       "inside the server's --allowed-media-dir", where)
    return url


def _local_bytes(raw: str, url: str, policy: MediaPolicy, where: str) -> bytes:
    if policy.allowed_dir is None:
        raise ApiError(403, f"{where}: this server reads no local files ({url[:80]!r}); {INLINE_HINT}, or start the "
                       "server with --allowed-media-dir FOLDER", where, "local_files_disabled")
    try:  # resolve(): symlinks and '..' are followed first, so the check below sees where the path really goes
        path = Path(raw)
        path = (path if path.is_absolute() else policy.allowed_dir / path).resolve()
    except (OSError, ValueError, RuntimeError):
        raise ApiError(400, f"{where}: {url[:200]!r} is not a usable file path", where) from None
    if not path.is_relative_to(policy.allowed_dir):
        raise ApiError(403, f"{where}: {url[:200]!r} is outside the folder this server may read (--allowed-media-dir); "
                       "copy the picture there, or send it as a data URL", where, "outside_allowed_dir")
    if not path.is_file():
        raise ApiError(400, f"{where}: there is no picture file {url[:200]!r} in the allowed folder", where)
    limit = policy.max_image_bytes
    with open(path, "rb") as f:
        data = f.read(limit + 1)  # never more than the limit, even if the file grows meanwhile
    if len(data) > limit:
        raise ApiError(413, f"{where}: {url[:200]!r} is over this server's limit of {limit:,} bytes per image; send "
                       "a smaller picture", where, "image_too_large")
    return data


def open_picture(data: bytes, max_pixels: int, where: str):
    """Encoded bytes → a loaded PIL image; the pixel count is checked from the header first."""
    from PIL import Image

    try:
        with warnings.catch_warnings():  # Pillow warns of bombs at open; the limit below decides
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=FORMATS)  # reads the header only
    except Image.DecompressionBombError:
        raise _too_many_pixels(where, "far more", max_pixels) from None
    except (OSError, SyntaxError, ValueError):
        raise ApiError(400, f"{where}: the bytes are not a picture in a supported format "
                       f"({', '.join(FORMATS).lower()})", where, "invalid_image") from None
    width, height = img.size
    if width * height > max_pixels:
        raise _too_many_pixels(where, f"{width}×{height} = {width * height:,}", max_pixels)
    try:
        img.load()  # decode fully now: a truncated file fails here, not in the vision graph
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        raise ApiError(400, f"{where}: the {img.format} picture is truncated or corrupt; send the complete file",
                       where, "invalid_image") from None
    return img


def _too_many_pixels(where: str, count: str, limit: int) -> ApiError:
    return ApiError(413, f"{where}: the picture is {count} pixels, over this server's limit of {limit:,}; downscale it "
                    "(or start the server with a higher --max-image-pixels)", where, "image_too_large")
