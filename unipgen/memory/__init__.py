"""The user-memory store: SQLAlchemy tables, faiss indexes, a content-addressed blob store,
lineage of derived data, forget with a residue check, and export/import."""

from unipgen.memory.blobs import BlobStore
from unipgen.memory.content import Hit
from unipgen.memory.store import MemoryStore

__all__ = ["BlobStore", "Hit", "MemoryStore"]
