"""A content-addressed blob store: files named by their sha256, behind fsspec.

The default is a local directory; any fsspec URL works (``s3://bucket/prefix`` with ``s3fs``).
A local store's folders are 0700 and its files 0600: blobs are face photos and voice recordings.
The store itself keeps no reference counts: which blobs are still needed is derived from the
database rows that name them (see `unipgen.memory.models.BLOB_COLUMNS`).
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

from unipgen.memory.private import FILE_MODE, private_dir


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class BlobStore:
    """Put, get and delete immutable blobs by sha256 under one fsspec root."""

    def __init__(self, url: str) -> None:
        import fsspec

        self.url = url
        self._fs, self._root = fsspec.core.url_to_fs(url)

    def _path(self, sha: str) -> str:
        return f"{self._root}/{sha[:2]}/{sha}"

    def put(self, data: bytes) -> tuple[str, bool]:
        """Store `data`; returns its sha256 and whether a new file was written."""
        sha = sha256_hex(data)
        path = self._path(sha)
        if self._fs.exists(path):
            return sha, False
        # Write beside, then rename: a reader never sees half a blob.
        tmp = f"{path}.{uuid.uuid4().hex}.tmp"
        if self.is_local:
            _write_private(path, tmp, data)
        else:
            self._fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
            with self._fs.open(tmp, "wb") as handle:
                handle.write(data)
        self._fs.mv(tmp, path)
        return sha, True

    @property
    def is_local(self) -> bool:
        """Whether the store is a folder of this machine (not a remote object store)."""
        protocol = self._fs.protocol
        return bool({"file", "local"} & set(protocol if isinstance(protocol, tuple) else (protocol,)))

    def get(self, sha: str) -> bytes:
        with self._fs.open(self._path(sha), "rb") as handle:
            data: bytes = handle.read()
            return data

    def exists(self, sha: str) -> bool:
        return bool(self._fs.exists(self._path(sha)))

    def delete(self, sha: str) -> None:
        if self._fs.exists(self._path(sha)):
            self._fs.rm(self._path(sha))

    def local_path(self, sha: str) -> str | None:
        """The file's path when the store is a local directory (None for remote stores)."""
        return self._path(sha) if self.is_local else None

    def list(self) -> Iterator[str]:
        """Every blob's sha256 (a full scan: for residue checks and garbage collection)."""
        if not self._fs.exists(self._root):
            return
        for path in self._fs.find(self._root):
            name = path.rsplit("/", 1)[-1]
            if len(name) == 64 and not name.endswith(".tmp"):
                yield name


def _write_private(path: str, tmp: str, data: bytes) -> None:
    """Write a local blob's scratch file created 0600 (in folders made 0700), never readable by
    another account, not even for the moment between creation and a chmod."""
    folder = Path(path).parent
    if not folder.is_dir():
        private_dir(folder.parent)  # the store's root, on the first blob
        private_dir(folder)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
