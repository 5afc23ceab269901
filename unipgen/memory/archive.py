"""Export one user's data and blobs to a zip, and import such a zip into a store.

The zip holds `manifest.json` (every row, by public keys, in a stable order) and `blobs/<sha256>`.
Entries carry a fixed date, so export → import into an empty store → export gives the same bytes.
Catalog items the user's events point to travel along; on import they are created when missing.
"""

from __future__ import annotations

import base64
import json
import zipfile
from collections import defaultdict
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from unipgen.errors import ConflictError, InvalidInputError
from unipgen.memory.blobs import sha256_hex
from unipgen.memory.embeddings import put_embeddings
from unipgen.memory.indexes import IndexManager
from unipgen.memory.lookups import OWNER_MODELS, tenant_id_of, user_id_of
from unipgen.memory.models import (
    Artifact,
    BehaviorEvent,
    Blob,
    Document,
    Embedding,
    EmbeddingSpace,
    Face,
    Feedback,
    Item,
    Lineage,
    ProfileAttribute,
    Subject,
    SubjectImage,
    User,
    VoiceSample,
)
from unipgen.memory.transaction import Database, Transaction
from unipgen.memory.users import Users
from unipgen.schema.rules import check_public_id

FORMAT = "unipgen.user-export"
VERSION = 1
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _dt(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value is not None else None


class Archive:
    """Export of one user to a zip, and import of such a zip as a new user."""

    def __init__(self, db: Database, indexes: IndexManager, users: Users) -> None:
        self.db = db
        self.indexes = indexes
        self.users = users

    def export_user(self, tenant: str, user: str, path: str | Path) -> dict[str, int]:
        """Write `user`'s data to the zip at `path`; returns how many records of each kind."""
        with self.db.session() as session:
            manifest = _manifest(session, tenant, user_id_of(session, tenant, user))
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
            _write_entry(archive, "manifest.json", json.dumps(manifest, indent=1, sort_keys=True).encode())
            for sha in sorted(manifest["blobs"]):
                _write_entry(archive, f"blobs/{sha}", self.db.blobs.get(sha))
        return {k: len(v) for k, v in manifest.items() if isinstance(v, (list, dict)) and k != "user"}

    def import_user(self, path: str | Path, *, tenant: str | None = None) -> tuple[str, str]:
        """Load an export zip; the user must not exist yet. Returns (tenant, user)."""
        manifest, blobs = _read_archive(Path(path))
        tenant = tenant or manifest["tenant"]
        _check_ids(manifest, tenant)
        self.users.ensure_tenant(tenant)
        with self.db.write() as w:
            tenant_id = tenant_id_of(w.session, tenant)
            key = manifest["user"]["key"]
            if w.session.scalar(select(User.id).where(User.tenant_id == tenant_id, User.key == key)):
                raise ConflictError(f"user {key!r} already exists in {tenant!r}; import needs a new user")
            for sha, info in manifest["blobs"].items():
                w.put_blob(blobs[sha], info["media_type"])
            _restore(self.indexes, w, tenant_id, manifest)
        return tenant, key


def _check_ids(manifest: dict[str, Any], tenant: str) -> None:
    """Refuse an archive naming an id the rule refuses (one exported before the rule existed):
    the import would store a row no URL can reach."""
    check_public_id(tenant, "tenant")
    check_public_id(manifest["user"]["key"], "user")
    for section, what in (("items", "item"), ("documents", "document"), ("faces", "face"),
                          ("subjects", "subject"), ("voices", "voice sample"), ("artifacts", "artifact")):
        for row in manifest.get(section, []):
            check_public_id(row["key"], what)
    for row in manifest.get("profile", []):
        check_public_id(row["name"], "profile attribute")


def _write_entry(archive: zipfile.ZipFile, name: str, data: bytes) -> None:
    archive.writestr(zipfile.ZipInfo(name, date_time=_ZIP_DATE), data, zipfile.ZIP_DEFLATED)


def _read_archive(path: Path) -> tuple[dict[str, Any], dict[str, bytes]]:
    try:
        with zipfile.ZipFile(path) as archive:
            manifest = json.loads(archive.read("manifest.json"))
            if manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
                raise InvalidInputError(f"{path.name} is not a unipgen user export of version {VERSION}")
            blobs = {sha: archive.read(f"blobs/{sha}") for sha in manifest["blobs"]}
    except (zipfile.BadZipFile, KeyError, json.JSONDecodeError) as exc:
        raise InvalidInputError(f"{path.name} is not a readable unipgen export: {exc}") from None
    for sha, data in blobs.items():
        if sha256_hex(data) != sha:
            raise InvalidInputError(f"{path.name}: blob {sha} does not match its content")
    return manifest, blobs


# -- export ---------------------------------------------------------------------------------------


def _manifest(session: Session, tenant: str, user_id: int) -> dict[str, Any]:
    user = session.get(User, user_id)
    assert user is not None
    events = session.execute(
        select(BehaviorEvent, Item.key).join(Item, Item.id == BehaviorEvent.item_id)
        .where(BehaviorEvent.user_id == user_id).order_by(BehaviorEvent.ts, BehaviorEvent.id)
    ).all()
    keys = _keys_of_user(session, user_id)
    artifacts = session.scalars(select(Artifact).where(Artifact.user_id == user_id).order_by(Artifact.key)).all()
    subjects = session.scalars(select(Subject).where(Subject.user_id == user_id).order_by(Subject.key)).all()
    manifest: dict[str, Any] = {
        "format": FORMAT, "version": VERSION, "tenant": tenant,
        "user": {"key": user.key, "created_at": _iso(user.created_at),
                 "training_consent_at": _iso(user.training_consent_at)},
        "profile": [
            {"name": p.name, "value": p.value, "value_type": p.value_type,
             "valid_from": _iso(p.valid_from), "valid_to": _iso(p.valid_to)}
            for p in session.scalars(select(ProfileAttribute).where(ProfileAttribute.user_id == user_id)
                                     .order_by(ProfileAttribute.name, ProfileAttribute.valid_from, ProfileAttribute.id))
        ],
        "items": [
            {"key": i.key, "text": i.text, "image_sha": i.image_sha, "meta": i.meta, "created_at": _iso(i.created_at)}
            for i in session.scalars(select(Item).where(Item.id.in_({e.item_id for e, _ in events})).order_by(Item.key))
        ],
        "events": [{"item": k, "type": e.type, "value": e.value, "ts": _iso(e.ts), "meta": e.meta} for e, k in events],
        "documents": [
            {"key": d.key, "kind": d.kind, "text": d.text, "ts": _iso(d.ts), "meta": d.meta,
             "derived_from": _sources(session, "document", d.id, keys)}
            for d in session.scalars(select(Document).where(Document.user_id == user_id).order_by(Document.key))
        ],
        "faces": [
            {"key": f.key, "blob_sha": f.blob_sha, "consent": f.consent, "created_at": _iso(f.created_at)}
            for f in session.scalars(select(Face).where(Face.user_id == user_id).order_by(Face.key))
        ],
        "subjects": [
            {"key": s.key, "name": s.name, "class_noun": s.class_noun, "created_at": _iso(s.created_at),
             "images": [i.blob_sha for i in s.images]}
            for s in subjects
        ],
        "voices": [
            {"key": v.key, "blob_sha": v.blob_sha, "consent": v.consent, "duration_s": v.duration_s,
             "sample_rate": v.sample_rate, "created_at": _iso(v.created_at)}
            for v in session.scalars(select(VoiceSample).where(VoiceSample.user_id == user_id).order_by(VoiceSample.key))
        ],
        "artifacts": [
            {"key": a.key, "kind": a.kind, "media_type": a.media_type, "blob_sha": a.blob_sha, "meta": a.meta,
             "created_at": _iso(a.created_at), "derived_from": _sources(session, "artifact", a.id, keys)}
            for a in artifacts
        ],
    }
    manifest["feedback"] = _feedback(session, user_id, keys)
    manifest["spaces"], manifest["embeddings"] = _embeddings(session, user_id, keys)
    manifest["blobs"] = _blob_index(session, manifest)
    return manifest


def _keys_of_user(session: Session, user_id: int) -> dict[tuple[str, int], str]:
    """Public key of every (kind, row id) the export can name, including the user and items."""
    keys: dict[tuple[str, int], str] = {("user", user_id): session.get_one(User, user_id).key}
    for kind, (model, _) in OWNER_MODELS.items():
        if kind == "item":
            query = select(Item.id, Item.key).join(BehaviorEvent, BehaviorEvent.item_id == Item.id).where(
                BehaviorEvent.user_id == user_id).distinct()
        else:
            query = select(model.id, model.key).where(model.user_id == user_id)
        keys.update({(kind, i): k for i, k in session.execute(query)})
    return keys


def _sources(session: Session, kind: str, row_id: int, keys: dict[tuple[str, int], str]) -> list[list[str]]:
    """What an artifact (or a document such as a chat reply) was derived from, as [kind, key] pairs."""
    edges = session.execute(
        select(Lineage.source_kind, Lineage.source_id)
        .where(Lineage.derived_kind == kind, Lineage.derived_id == row_id)
    )
    # An edge to data outside this user's export (another user's) cannot travel; it is left out.
    return sorted([kind, keys[(kind, i)]] for kind, i in edges if (kind, i) in keys)


def _feedback(session: Session, user_id: int, keys: dict[tuple[str, int], str]) -> list[dict[str, Any]]:
    rows = session.scalars(select(Feedback).where(Feedback.user_id == user_id).order_by(Feedback.ts, Feedback.id))
    return [{"type": f.type, "output": keys[("artifact", f.artifact_id)],
             "rejected": keys[("artifact", f.rejected_id)] if f.rejected_id is not None else None,
             "ts": _iso(f.ts), "meta": f.meta} for f in rows]


def _embeddings(session: Session, user_id: int, keys: dict[tuple[str, int], str]) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]]]:
    rows = session.execute(select(Embedding, EmbeddingSpace).join(
        EmbeddingSpace, (EmbeddingSpace.tenant_id == Embedding.tenant_id) & (EmbeddingSpace.name == Embedding.space)
    ).where(Embedding.user_id == user_id)).all()
    spaces = {s.name: {"dim": s.dim, "metric": s.metric} for _, s in rows}
    vectors = [
        {"space": e.space, "kind": e.owner_kind, "key": keys[(e.owner_kind, e.owner_id)],
         "vector": base64.b64encode(e.vector).decode()}
        for e, _ in rows
    ]
    return spaces, sorted(vectors, key=lambda v: (v["space"], v["kind"], v["key"]))


def _blob_index(session: Session, manifest: dict[str, Any]) -> dict[str, dict[str, Any]]:
    shas = {i["image_sha"] for i in manifest["items"]} | {f["blob_sha"] for f in manifest["faces"]}
    shas |= {v["blob_sha"] for v in manifest["voices"]} | {a["blob_sha"] for a in manifest["artifacts"]}
    shas |= {sha for s in manifest["subjects"] for sha in s["images"]}
    shas.discard(None)
    return {
        b.sha256: {"size": b.size, "media_type": b.media_type}
        for b in session.scalars(select(Blob).where(Blob.sha256.in_(shas)))
    }


# -- import ---------------------------------------------------------------------------------------


def _restore(indexes: IndexManager, w: Transaction, tenant_id: int, m: dict[str, Any]) -> None:
    s = w.session
    user = User(tenant_id=tenant_id, key=m["user"]["key"], created_at=_dt(m["user"]["created_at"]),
                training_consent_at=_dt(m["user"].get("training_consent_at")))  # absent from older exports: none
    s.add(user)
    s.flush()
    s.add_all(ProfileAttribute(user_id=user.id, name=p["name"], value=p["value"], value_type=p["value_type"],
                               valid_from=_dt(p["valid_from"]), valid_to=_dt(p["valid_to"])) for p in m["profile"])
    items = _restore_items(s, tenant_id, m["items"])
    s.add_all(BehaviorEvent(user_id=user.id, item_id=items[e["item"]], type=e["type"], value=e["value"],
                            ts=_dt(e["ts"]), meta=e["meta"]) for e in m["events"])
    rows: dict[str, list[Any]] = {
        "document": [Document(user_id=user.id, key=d["key"], kind=d["kind"], text=d["text"], ts=_dt(d["ts"]),
                              meta=d["meta"]) for d in m["documents"]],
        "face": [Face(user_id=user.id, key=f["key"], blob_sha=f["blob_sha"], consent=f["consent"],
                      created_at=_dt(f["created_at"])) for f in m["faces"]],
        "subject": [Subject(user_id=user.id, key=x["key"], name=x["name"], class_noun=x["class_noun"],
                            created_at=_dt(x["created_at"]),
                            images=[SubjectImage(position=p, blob_sha=sha) for p, sha in enumerate(x["images"])])
                    for x in m["subjects"]],
        "voice": [VoiceSample(user_id=user.id, key=v["key"], blob_sha=v["blob_sha"], consent=v["consent"],
                              duration_s=v["duration_s"], sample_rate=v["sample_rate"],
                              created_at=_dt(v["created_at"])) for v in m["voices"]],
        "artifact": [Artifact(tenant_id=tenant_id, user_id=user.id, key=a["key"], kind=a["kind"],
                              media_type=a["media_type"], blob_sha=a["blob_sha"], meta=a["meta"],
                              created_at=_dt(a["created_at"])) for a in m["artifacts"]],
    }
    for objects in rows.values():
        s.add_all(objects)
    s.flush()
    ids = {(kind, o.key): o.id for kind, objects in rows.items() for o in objects}
    ids.update({("item", k): i for k, i in items.items()})
    ids[("user", user.key)] = user.id
    for derived, section in (("artifact", "artifacts"), ("document", "documents")):
        for row in m[section]:  # documents carry lineage since chat replies (absent before)
            s.add_all(Lineage(tenant_id=tenant_id, derived_kind=derived, derived_id=ids[(derived, row["key"])],
                              source_kind=kind, source_id=ids[(kind, key)]) for kind, key in row.get("derived_from", []))
    s.add_all(Feedback(user_id=user.id, type=f["type"], artifact_id=ids[("artifact", f["output"])],
                       rejected_id=ids[("artifact", f["rejected"])] if f["rejected"] is not None else None,
                       ts=_dt(f["ts"]), meta=f["meta"]) for f in m.get("feedback", []))  # absent before 0002
    _restore_embeddings(indexes, w, tenant_id, user.id, m, ids)


def _restore_items(session: Session, tenant_id: int, items: list[dict[str, Any]]) -> dict[str, int]:
    keys = [i["key"] for i in items]
    found = dict(session.execute(select(Item.key, Item.id).where(Item.tenant_id == tenant_id, Item.key.in_(keys))).all())
    new = [Item(tenant_id=tenant_id, key=i["key"], text=i["text"], image_sha=i["image_sha"], meta=i["meta"],
                created_at=_dt(i["created_at"])) for i in items if i["key"] not in found]
    session.add_all(new)
    session.flush()
    return found | {i.key: i.id for i in new}


def _restore_embeddings(indexes: IndexManager, w: Transaction, tenant_id: int, user_id: int, m: dict[str, Any],
                        ids: dict[tuple[str, str], int]) -> None:
    groups: dict[tuple[str, str], list[tuple[int, int | None, np.ndarray]]] = defaultdict(list)
    for e in m["embeddings"]:
        vector = np.frombuffer(base64.b64decode(e["vector"]), dtype=np.float32)
        groups[(e["space"], e["kind"])].append((ids[(e["kind"], e["key"])], user_id, vector))
    for (space, kind), rows in groups.items():
        put_embeddings(w, indexes, tenant_id, space, rows, kind, metric=m["spaces"][space]["metric"])

