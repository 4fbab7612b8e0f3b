"""Backups kept in an S3-compatible bucket: `quarry backup s3://BUCKET/PREFIX` and back.

A backup is made in a local folder as ever (`app.backup`), then each file is uploaded under
the prefix, `manifest.json` last: a prefix without it holds no complete backup. Verifying or
restoring downloads the prefix into a local folder first and checks it there against the
manifest's checksums, so what is restored is exactly what was verified.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from app.backup import MANIFEST
from embedding.errors import InvalidInputError


def _where(url: str, endpoint: str | None) -> tuple[Any, str, str]:
    parsed = urlparse(url)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise InvalidInputError(f"{url}: not an s3://BUCKET/PREFIX address")
    import boto3

    try:
        client = boto3.client("s3", endpoint_url=endpoint or None)
    except Exception as exc:  # a malformed endpoint, an unknown profile
        raise InvalidInputError(f"endpoint: {endpoint!r}: {exc}") from exc
    prefix = parsed.path.strip("/")
    return client, parsed.netloc, f"{prefix}/" if prefix else ""


def upload(folder: Path, url: str, endpoint: str | None = None) -> int:
    """Every file of the backup in `folder` under `url`, the manifest last; returns the
    files uploaded.

    Raises:
        InvalidInputError: the prefix is not empty, or the upload failed.
    """
    client, bucket, prefix = _where(url, endpoint)
    try:
        found = client.list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=1)
        if found.get("KeyCount"):
            raise InvalidInputError(f"{url}: is not empty (a backup goes to a new prefix)")
        files = sorted(p for p in folder.rglob("*") if p.is_file() and p != folder / MANIFEST)
        for path in [*files, folder / MANIFEST]:
            client.upload_file(str(path), bucket, prefix + path.relative_to(folder).as_posix())
    except InvalidInputError:
        raise
    except Exception as exc:  # botocore: credentials, a missing bucket, the network
        raise InvalidInputError(f"{url}: the upload failed: {exc}") from exc
    return len(files) + 1


def download(url: str, folder: Path, endpoint: str | None = None) -> None:
    """The backup under `url` into the empty folder `folder` (checked by the caller).

    Raises:
        InvalidInputError: no backup there, or the download failed.
    """
    client, bucket, prefix = _where(url, endpoint)
    try:
        keys = []
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            keys += [item["Key"] for item in page.get("Contents", [])]
        if prefix + MANIFEST not in keys:
            raise InvalidInputError(f"{url}: no {MANIFEST}: not a complete backup")
        for key in keys:
            if key == prefix or key.endswith("/"):  # a console's "folder" marker
                continue
            parts = key[len(prefix) :].split("/")
            if any(part in ("", ".", "..") for part in parts):
                raise InvalidInputError(f"{url}: an object name is not a safe path: {key!r}")
            target = folder.joinpath(*parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            client.download_file(bucket, key, str(target))
    except InvalidInputError:
        raise
    except Exception as exc:
        raise InvalidInputError(f"{url}: the download failed: {exc}") from exc
