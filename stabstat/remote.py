"""Object-storage URLs (``s3://bucket/prefix``, any fsspec URL): the fsspec helpers.

Shared by the runner (writing runs to a bucket: :mod:`runner.storage`) and the analysis side
(:mod:`stabstat.ingest.remote` mirrors a prefix and ingests it). This module imports nothing of
the store or the ingest, so the runner can use it; fsspec/s3fs come with the ``[s3]`` extra and
are imported on first use.

Endpoint and credentials: the standard AWS environment (``AWS_ENDPOINT_URL`` for S3-compatible
stores such as MinIO/Ceph/R2, ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``/``AWS_PROFILE``),
or ``storage_options`` (passed to fsspec, e.g. ``{"endpoint_url": "http://127.0.0.1:9000"}``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from stabstat.errors import InputFormatError, require

__all__ = ["filesystem", "is_remote", "storage_options_for", "url_of"]


def is_remote(path: str | os.PathLike[str]) -> bool:
    """True for a URL with a scheme other than ``file://`` (``s3://b/p``, ``gs://b/p``, ...)."""
    text = os.fspath(path)
    if "://" not in text:
        return False
    return text.split("://", 1)[0].lower() not in ("", "file", "local")


def storage_options_for(url: str, *, endpoint: str | None = None) -> dict[str, Any]:
    """fsspec options for ``url``: ``endpoint`` (S3-compatible store) when given, else {}
    (s3fs then reads ``AWS_ENDPOINT_URL`` and the usual AWS credentials itself)."""
    if endpoint and url.lower().startswith(("s3://", "s3a://")):
        return {"endpoint_url": endpoint}
    return {}


def filesystem(url: str, storage_options: Mapping[str, Any] | None = None, *,
               feature: str | None = None) -> tuple[Any, str]:
    """``(fsspec filesystem, root without scheme and trailing slash)`` for ``url``.

    Raises :class:`~stabstat.errors.MissingExtraError` naming the ``[s3]`` extra (``feature``
    says what needed it in the message).
    """
    feature = feature or f"reading runs from {url}"
    fsspec = require("fsspec", "s3", feature)
    if url.lower().startswith(("s3://", "s3a://")):
        require("s3fs", "s3", feature)
    try:
        fs, root = fsspec.core.url_to_fs(url, **dict(storage_options or {}))
    except (ValueError, ImportError) as exc:
        raise InputFormatError(f"{url}: cannot open this URL with fsspec: {exc}") from exc
    return fs, str(root).rstrip("/")


def url_of(fs: Any, path: str) -> str:
    """``s3://bucket/key`` for a path of ``fs``."""
    proto = fs.protocol[0] if isinstance(fs.protocol, (tuple, list)) else fs.protocol
    return f"{proto}://{path}"
