"""The user-memory store: SQLAlchemy tables, faiss indexes, a content-addressed blob store,
lineage of derived data, forget with a residue check, and export/import.

`MemoryStore` opens them and exposes its parts (`store.users`, `store.content`...; see
`unipgen.memory.store`)."""

from unipgen.memory.blobs import BlobStore
from unipgen.memory.embeddings import Hit
from unipgen.memory.store import MemoryStore
from unipgen.memory.transaction import Transaction

__all__ = ["BlobStore", "Hit", "MemoryStore", "Transaction"]
