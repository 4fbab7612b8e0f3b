"""Where a sync reads its files: a local folder, or an S3-compatible bucket prefix.

A source lists itself completely (or raises: a partial listing must never look like
deletions) as entries, each a name and a stamp that changes when the file does (size and
modification time of a file; ETag and size of an object), and fetches the entries whose
bytes a run needs. An object's bytes are downloaded only when its stamp is not the one a
run already saw with the same stored document (`app.sync`).

S3 through boto3: the endpoint (`--endpoint` or AWS_ENDPOINT_URL), region and credentials
come from the environment or a profile as every AWS tool reads them, so AWS, MinIO, Ceph
and R2 work alike.
"""

from __future__ import annotations

import os
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse

from embedding.errors import InvalidInputError


@dataclass(frozen=True)
class Entry:
    key: str  # the document's name: the path under the folder or the prefix, NFC
    stamp: str  # changes when the bytes may have


class SyncSource(Protocol):
    @property
    def root(self) -> str:
        """What documents synced from here are tagged with (`synced_from`)."""
        ...

    def entries(self) -> list[Entry]:
        """Every file, or OSError: the source could not be listed whole."""
        ...

    def fetch(self, key: str, into: Path) -> Path:
        """A local path holding the entry's bytes (downloaded under `into` if need be), or
        OSError."""
        ...


class FolderSource:
    def __init__(self, folder: Path) -> None:
        if not folder.is_dir():
            raise InvalidInputError(
                f"{folder}: not a folder (nothing was synced or deleted)",
                detail={"folder": str(folder)},
            )
        self.folder = folder.resolve()
        self._paths: dict[str, Path] = {}

    @property
    def root(self) -> str:
        return str(self.folder)

    def entries(self) -> list[Entry]:
        """Every file under the folder (hidden ones skipped, as `quarry ingest` does); an
        unreadable subfolder raises."""

        def fail(exc: OSError) -> None:
            raise exc

        found = []
        for top, dirs, names in os.walk(self.folder, onerror=fail):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for name in sorted(n for n in names if not n.startswith(".")):
                path = Path(top) / name
                if path.is_symlink() and not path.resolve().is_relative_to(self.folder):
                    continue  # a link out of the folder: not this folder's to give
                if path.is_file():
                    info = path.stat()
                    key = unicodedata.normalize("NFC", path.relative_to(self.folder).as_posix())
                    self._paths[key] = path
                    found.append(Entry(key, f"{info.st_size}:{info.st_mtime_ns}"))
        return found

    def fetch(self, key: str, into: Path) -> Path:
        return self._paths[key]


class S3Source:
    """Objects under `s3://BUCKET/PREFIX`; their names are the keys below the prefix."""

    def __init__(self, url: str, endpoint: str | None = None) -> None:
        parsed = urlparse(url)
        if parsed.scheme != "s3" or not parsed.netloc:
            raise InvalidInputError(
                f"{url}: not an s3://BUCKET/PREFIX address", detail={"source": url}
            )
        self.bucket = parsed.netloc
        self.prefix = parsed.path.lstrip("/")
        if self.prefix and not self.prefix.endswith("/"):
            self.prefix += "/"
        self.url = f"s3://{self.bucket}/{self.prefix}"
        import boto3  # only a sync of a bucket needs it loaded

        try:
            self.client: Any = boto3.client("s3", endpoint_url=endpoint or None)
        except Exception as exc:  # botocore: a malformed endpoint, an unknown profile
            raise InvalidInputError(
                f"endpoint: {endpoint!r}: {exc}", detail={"field": "endpoint"}
            ) from exc

    @property
    def root(self) -> str:
        return self.url

    def entries(self) -> list[Entry]:
        """Every object under the prefix ("folder" markers skipped); any failure raises
        OSError (botocore's errors are not OSErrors)."""
        found = []
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self.prefix
            )
            for page in pages:
                for item in page.get("Contents", []):
                    key = item["Key"][len(self.prefix) :]
                    if not key or key.endswith("/") or _hidden(key):
                        continue
                    stamp = f"{item.get('ETag', '').strip(chr(34))}:{item['Size']}"
                    found.append(Entry(unicodedata.normalize("NFC", key), stamp))
        except Exception as exc:  # botocore: no credentials, no bucket, a dropped connection
            raise OSError(f"listing {self.url} failed: {exc}") from exc
        return found

    def fetch(self, key: str, into: Path) -> Path:
        parts = key.split("/")
        if any(part in ("", ".", "..") for part in parts):  # `a//b`, `/etc/x`, `../x`
            raise OSError("its name is not a safe relative path; it is not downloaded")
        target = into.joinpath(*parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.client.download_file(self.bucket, self.prefix + key, str(target))
        except Exception as exc:  # botocore's errors: the object went, access denied, ...
            raise OSError(f"download failed: {exc}") from exc
        return target


def _hidden(key: str) -> bool:
    return any(part.startswith(".") for part in key.split("/"))


def open_source(spec: str, endpoint: str | None = None) -> SyncSource:
    """A folder path, or an s3:// address."""
    if spec.startswith("s3://"):
        return S3Source(spec, endpoint)
    return FolderSource(Path(spec))
