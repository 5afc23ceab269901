"""A content-addressed blob store: files named by their sha256, behind fsspec.

The default is a local directory; any fsspec URL works (``s3://bucket/prefix`` with ``s3fs``).
A local store's folders are 0700 and its files 0600: blobs are face photos and voice recordings.
A remote store is shared by every process of a deployment, so it keeps no listing cache: whether
a blob exists is asked of the server each time (another process may have written or deleted it).
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

#: fsspec's names for a folder of this machine.
_LOCAL = {"file", "local"}


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class BlobStore:
    """Put, get and delete immutable blobs by sha256 under one fsspec root."""

    def __init__(self, url: str) -> None:
        import fsspec

        self.url = url
        protocol = fsspec.core.split_protocol(url)[0] or "file"
        # fsspec filesystems cache directory listings and answer `exists` from them. Another
        # process may delete or write a blob at any time: a stale "exists" would make `put` skip
        # writing bytes that are gone, so a remote store asks the server every time.
        options = {} if protocol in _LOCAL else {"use_listings_cache": False}
        self._fs, self._root = fsspec.core.url_to_fs(url, **options)

    def _path(self, sha: str) -> str:
        return f"{self._root}/{sha[:2]}/{sha}"

    def put(self, data: bytes) -> tuple[str, bool]:
        """Store `data`; returns its sha256 and whether a new file was written. A reader never
        sees half a blob: a local file is written beside, then renamed; an object store makes an
        object visible whole or not at all (one PUT, or a multipart upload once completed), so
        the object is written in place (a rename there is a copy and a delete)."""
        sha = sha256_hex(data)
        path = self._path(sha)
        if self._fs.exists(path):
            return sha, False
        if self.is_local:
            tmp = f"{path}.{uuid.uuid4().hex}.tmp"
            _write_private(path, tmp, data)
            self._fs.mv(tmp, path)
        else:
            self._fs.pipe_file(path, data)
        return sha, True

    @property
    def is_local(self) -> bool:
        """Whether the store is a folder of this machine (not a remote object store)."""
        protocol = self._fs.protocol
        return bool(_LOCAL & set(protocol if isinstance(protocol, tuple) else (protocol,)))

    def get(self, sha: str) -> bytes:
        """The blob's bytes (one GET on an object store); FileNotFoundError when it is missing."""
        data: bytes = self._fs.cat_file(self._path(sha))
        return data

    def exists(self, sha: str) -> bool:
        return bool(self._fs.exists(self._path(sha)))

    def delete(self, sha: str) -> None:
        """Remove the blob's file; a missing one is no error."""
        try:
            self._fs.rm_file(self._path(sha))
        except FileNotFoundError:
            pass

    def local_path(self, sha: str) -> str | None:
        """The file's path when the store is a local directory (None for remote stores)."""
        return self._path(sha) if self.is_local else None

    def location(self, sha: str) -> str:
        """Where the blob is: its local path, or its URL in a remote store (``s3://bucket/...``)."""
        return self.local_path(sha) or self._fs.unstrip_protocol(self._path(sha))

    def list(self) -> Iterator[str]:
        """Every blob's sha256 (a full scan: for residue checks and garbage collection)."""
        for path in self._fs.find(self._root):  # nothing when the root does not exist yet
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
