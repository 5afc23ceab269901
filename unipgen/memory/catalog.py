"""`store.catalog`: a tenant's catalog items (what users rate, click and buy), written in bulk."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from functools import cache
from typing import Any

import numpy as np
from sqlalchemy import bindparam, func, insert, select

from unipgen.errors import ConflictError, InvalidInputError
from unipgen.memory.embeddings import put_embeddings
from unipgen.memory.indexes import IndexManager
from unipgen.memory.lookups import OWNER_MODELS, existing_keys, ids_by_key, tenant_id_of, user_id_of
from unipgen.memory.media import MediaLimits, check_size, image_header, sniff_image
from unipgen.memory.models import Embedding, EmbeddingSpace, Item, Tenant
from unipgen.memory.parsing import parse_rows, refuse_duplicates
from unipgen.memory.transaction import Database, Transaction
from unipgen.schema.memory import ItemIn

_CHUNK = 20_000  # rows per executemany: bounded memory, few round trips


class Catalog:
    """Catalog items: added in one transaction each call (with their images and vectors), read
    back as texts and metadata, and listed when they still lack a vector."""

    def __init__(self, db: Database, indexes: IndexManager, max_blob_bytes: int, media_limits: MediaLimits) -> None:
        self.db = db
        self.indexes = indexes
        self.max_blob_bytes = max_blob_bytes
        self.media_limits = media_limits

    def add_items(
        self, tenant: str, items: Iterable[ItemIn | dict[str, Any]], *, exist_ok: bool = False,
        vectors: Mapping[str, Mapping[str, np.ndarray]] | None = None, decoded: bool = False,
    ) -> int:
        """Add catalog items in one transaction; returns how many were new.

        With `exist_ok`, items whose id is already there are skipped (their content is kept).
        `vectors` ({space: {item key: vector}}) stores the new items' embeddings in the same
        transaction. `decoded`: the caller's encoder decoded the images already, so only their
        headers are checked here (as in `Content.add_face`).
        """
        parsed = parse_rows(items, ItemIn, "item")
        refuse_duplicates([i.key for i in parsed], "item")
        with self.db.write() as w:
            tenant_id = tenant_id_of(w.session, tenant)
            existing = existing_keys(w.session, Item, tenant_id, [i.key for i in parsed])
            if existing and not exist_ok:
                raise ConflictError(f"item {min(existing)!r} already exists in {tenant!r}")
            new = [i for i in parsed if i.key not in existing]
            rows = [self._item_row(w, tenant_id, i, decoded) for i in new]
            for start in range(0, len(rows), _CHUNK):
                w.session.execute(insert(Item), rows[start : start + _CHUNK])
            w.analyze_after_commit("items", len(rows))
            if vectors is not None and new:
                self._put_item_vectors(w, tenant_id, parsed, existing, vectors)
            return len(new)

    def _put_item_vectors(
        self, w: Transaction, tenant_id: int, parsed: list[ItemIn], existing: set[str],
        vectors: Mapping[str, Mapping[str, np.ndarray]],
    ) -> None:
        new = {i.key for i in parsed} - existing
        for space, by_key in vectors.items():
            unknown = set(by_key) - {i.key for i in parsed}
            if unknown:
                raise InvalidInputError(f"vector given for item {min(unknown)!r}, which is not in the request")
            ids = ids_by_key(w.session, Item, tenant_id, new & set(by_key), "item", None)
            rows = [(ids[key], None, vector) for key, vector in by_key.items() if key in new]
            if rows:
                put_embeddings(w, self.indexes, tenant_id, space, rows, "item")

    def _item_row(self, w: Transaction, tenant_id: int, item: ItemIn, decoded: bool) -> dict[str, Any]:
        image_sha = None
        if item.image is not None:
            what = f"image of item {item.key!r}"
            check_size(item.image, self.max_blob_bytes, what)
            check = image_header if decoded else sniff_image
            image_sha = w.put_blob(item.image, check(item.image, what, self.media_limits))
        return {"tenant_id": tenant_id, "key": item.key, "text": item.text,
                "image_sha": image_sha, "meta": item.meta}

    def item_texts(self, tenant: str, keys: Sequence[str] | None = None) -> dict[str, str]:
        """Text of catalog items (all of them when `keys` is None); on a request's hot path
        (recommendations), so one bare connection and a prebuilt statement."""
        if keys is not None and not keys:
            return {}
        with self.db.engine.connect() as conn:
            if keys is None:
                rows = conn.execute(select(Item.key, Item.text).join(Tenant, Tenant.id == Item.tenant_id)
                                    .where(Tenant.key == tenant))
            else:
                rows = conn.execute(_item_texts_statement(), {"tenant": tenant, "keys": list(keys)})
            found = dict(rows.all())
        if not found:
            with self.db.session() as session:
                tenant_id_of(session, tenant)  # an unknown tenant is an error, not "no items"
        return found

    def item_meta(self, tenant: str, keys: Sequence[str] | None = None) -> dict[str, dict[str, Any]]:
        """Metadata of the catalog items that have some (genres, year...): all, or those of `keys`."""
        with self.db.session() as session:
            query = select(Item.key, Item.meta).where(Item.tenant_id == tenant_id_of(session, tenant),
                                                      Item.meta.is_not(None))
            if keys is not None:
                query = query.where(Item.key.in_(list(keys)))
            return {key: meta for key, meta in session.execute(query)}

    def catalog_stamp(self, tenant: str, space: str = "text") -> tuple[int, int | None]:
        """Two cheap numbers that change whenever the tenant's catalog may have gained an item
        without a vector in `space`: how many items it has, and the space's generation (which a
        deleted item's vector bumps, so a deletion and an addition do not cancel out)."""
        with self.db.session() as session:
            tenant_id = tenant_id_of(session, tenant)
            items = session.scalar(select(func.count()).select_from(Item).where(Item.tenant_id == tenant_id))
            generation = session.scalar(select(EmbeddingSpace.generation).where(
                EmbeddingSpace.tenant_id == tenant_id, EmbeddingSpace.name == space))
            return items or 0, generation

    def keys_without_vector(self, tenant: str, space: str, kind: str, *, user: str | None = None) -> list[str]:
        """Keys of the catalog's items (or, with `user`, that user's `kind` items) with no vector
        in `space` yet, in insertion order: what still needs embedding after a bulk load."""
        model, per_user = OWNER_MODELS[kind]
        with self.db.session() as session:
            if per_user:
                scope = model.user_id == user_id_of(session, tenant, user or "")
            else:
                scope = model.tenant_id == tenant_id_of(session, tenant)
            return _missing(session, model, kind, space, scope)


@cache
def _item_texts_statement() -> Any:
    return (select(Item.key, Item.text).join(Tenant, Tenant.id == Item.tenant_id)
            .where(Tenant.key == bindparam("tenant"), Item.key.in_(bindparam("keys", expanding=True))))


def _missing(session: Any, model: Any, owner_kind: str, space: str, scope: Any) -> list[str]:
    """Keys of `model` rows in `scope` that have no vector in `space` (one anti-join query)."""
    vector = select(Embedding.id).where(Embedding.owner_kind == owner_kind, Embedding.owner_id == model.id,
                                        Embedding.space == space).exists()
    return list(session.scalars(select(model.key).where(scope, ~vector).order_by(model.id)))
