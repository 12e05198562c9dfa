"""What a stored file is called: the media's title, else the URL's last path segment, with
the extension of its content type."""

from __future__ import annotations

import re
import unicodedata
from urllib.parse import quote, unquote, urlsplit

EXTENSIONS = {
    "video/mp4": "mp4",
    "audio/mp4": "m4a",
    "video/webm": "webm",
    "video/x-matroska": "mkv",
    "video/quicktime": "mov",
    "video/3gpp": "3gp",
    "video/x-msvideo": "avi",
    "video/ogg": "ogv",
    "audio/ogg": "ogg",
    "audio/mpeg": "mp3",
    "audio/wav": "wav",
    "audio/flac": "flac",
    "image/jpeg": "jpg",
    "image/png": "png",
    "image/gif": "gif",
    "image/webp": "webp",
}
_UNSAFE = re.compile(r'[\x00-\x1f\x7f/\\:*?"<>|]+')
_SPACES = re.compile(r"\s+")
MAX_STEM = 150  # characters; a file system allows 255 bytes, UTF-8 takes up to 4 a character


def sanitised(text: str) -> str:
    """A file name stem safe on every common file system (no separators, controls or
    reserved characters, no leading dots), or "" when nothing is left."""
    text = unicodedata.normalize("NFC", text)
    text = _UNSAFE.sub(" ", text)
    text = "".join(c for c in text if unicodedata.category(c) not in ("Cc", "Cf", "Zl", "Zp"))
    text = _SPACES.sub(" ", text).strip(" .")
    return text[:MAX_STEM].strip(" .")


def filename(title: str | None, url: str, content_type: str) -> str:
    stem = sanitised(title or "")
    if not stem:
        last = unquote(urlsplit(url).path.rstrip("/").rsplit("/", 1)[-1])
        stem = sanitised(last.rsplit(".", 1)[0] if "." in last.strip(".") else last)
    extension = EXTENSIONS.get(content_type, "bin")
    return f"{stem or 'media'}.{extension}"


def content_disposition(name: str) -> str:
    """``attachment`` with ``name`` as RFC 6266 has it: an ASCII ``filename`` for old
    clients (other characters as ``_``), and ``filename*`` in UTF-8 for the rest."""
    fallback = "".join(c if " " <= c < "\x7f" else "_" for c in name)
    fallback = fallback.replace("\\", "_").replace('"', "_")
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"
