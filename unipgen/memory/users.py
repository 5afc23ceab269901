"""`store.users`: tenants, their users, and each user's profile with its history."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func, select

from unipgen.errors import ConflictError, InvalidInputError
from unipgen.memory.audit import audit_entry
from unipgen.memory.lookups import check_key, insert_missing_users, tenant_id_of, user_id_of
from unipgen.memory.models import (
    Artifact,
    BehaviorEvent,
    Document,
    Face,
    Feedback,
    Item,
    ProfileAttribute,
    Subject,
    Tenant,
    User,
    VoiceSample,
    utcnow,
)
from unipgen.memory.transaction import Database
from unipgen.schema.memory import TrainingConsent, UserSummary
from unipgen.schema.rules import check_json_value

_VALUE_TYPES = {bool: "bool", int: "int", float: "float", str: "str", list: "list", dict: "dict"}


class Users:
    """Tenants and users (created, listed) and the profile attributes of a user."""

    def __init__(self, db: Database) -> None:
        self.db = db

    # -- tenants and users -------------------------------------------------------------------

    def create_tenant(self, key: str) -> None:
        check_key(key, "tenant")
        with self.db.write() as w:
            if w.session.scalar(select(Tenant.id).where(Tenant.key == key)) is not None:
                raise ConflictError(f"tenant {key!r} already exists")
            w.session.add(Tenant(key=key))

    def ensure_tenant(self, key: str) -> None:
        """Create the tenant unless it exists."""
        with self.db.session() as session:
            if session.scalar(select(Tenant.id).where(Tenant.key == key)) is not None:
                return
        self.create_tenant(key)

    def create_user(self, tenant: str, key: str) -> None:
        self.create_users(tenant, [key])

    def create_users(self, tenant: str, keys: list[str], *, exist_ok: bool = False) -> int:
        """Create users in one transaction; returns how many were new."""
        for key in keys:
            check_key(key, "user")
        if len(set(keys)) != len(keys):
            raise ConflictError("duplicate user ids in the request")
        with self.db.write() as w:
            tenant_id = tenant_id_of(w.session, tenant)
            existing = set(
                w.session.scalars(
                    select(User.key).where(User.tenant_id == tenant_id, User.key.in_(keys))
                )
            )
            if existing and not exist_ok:
                raise ConflictError(f"user {min(existing)!r} already exists in {tenant!r}")
            if exist_ok:  # another request may be creating the same users right now
                return insert_missing_users(w.session, tenant_id, [k for k in keys if k not in existing])
            w.session.add_all(User(tenant_id=tenant_id, key=k) for k in keys)
            return len(keys)

    def list_users(self, tenant: str) -> list[str]:
        with self.db.session() as session:
            tenant_id = tenant_id_of(session, tenant)
            return list(
                session.scalars(select(User.key).where(User.tenant_id == tenant_id).order_by(User.key))
            )

    def list_tenants(self) -> list[str]:
        with self.db.session() as session:
            return list(session.scalars(select(Tenant.key).order_by(Tenant.key)))

    # -- consent to training ----------------------------------------------------------------

    def training_consent(self, tenant: str, user: str) -> TrainingConsent:
        """Whether `user` consents to adapters trained on their faces and subjects, and since when."""
        with self.db.session() as session:
            since = session.scalar(select(User.training_consent_at).where(User.id == user_id_of(session, tenant, user)))
        return TrainingConsent(user=user, granted=since is not None, since=since)

    def set_training_consent(self, tenant: str, user: str, granted: bool, *, actor: str = "unipgen") -> TrainingConsent:
        """Record that `user` gives (`granted`) or withdraws their consent to training, with an
        audit entry by `actor` in the same transaction. Giving it again keeps the first time.
        Withdrawing stops new trainings; adapters trained before stay until their sources or
        they are forgotten."""
        if not isinstance(granted, bool):
            raise InvalidInputError(f"training consent must be true or false, not {granted!r}")
        with self.db.write() as w:
            row = w.session.get_one(User, user_id_of(w.session, tenant, user))
            if granted and row.training_consent_at is None:
                row.training_consent_at = utcnow()
            elif not granted:
                row.training_consent_at = None
            w.session.add(audit_entry(row.tenant_id, actor, "training_consent." + ("grant" if granted else "withdraw"),
                                      user=user))
            since = row.training_consent_at
        return TrainingConsent(user=user, granted=since is not None, since=since)

    # -- profile -----------------------------------------------------------------------------

    def set_profile(
        self, tenant: str, user: str, name: str, value: Any, *, at: datetime | None = None
    ) -> None:
        """Set one profile attribute; the previous value is kept as history."""
        check_key(name, "profile attribute")
        value_type = _VALUE_TYPES.get(type(value))
        if value_type is None:
            raise InvalidInputError(
                f"profile attribute {name!r}: unsupported value type {type(value).__name__}"
            )
        check_json_value(value, f"profile attribute {name!r}")
        at = at or utcnow()
        with self.db.write() as w:
            user_id = user_id_of(w.session, tenant, user)
            current = w.session.scalar(_current_attribute(user_id, name))
            if current is not None:
                current.valid_to = at
            w.session.add(
                ProfileAttribute(
                    user_id=user_id, name=name, value=value, value_type=value_type, valid_from=at
                )
            )

    def profile(self, tenant: str, user: str) -> dict[str, Any]:
        """The current value of every profile attribute."""
        with self.db.session() as session:
            user_id = user_id_of(session, tenant, user)
            rows = session.scalars(
                select(ProfileAttribute)
                .where(ProfileAttribute.user_id == user_id, ProfileAttribute.valid_to.is_(None))
                .order_by(ProfileAttribute.name)
            )
            return {row.name: row.value for row in rows}

    def profile_history(self, tenant: str, user: str, name: str) -> list[tuple[Any, datetime]]:
        """Every value `name` has had, oldest first, with the time it was set."""
        with self.db.session() as session:
            user_id = user_id_of(session, tenant, user)
            rows = session.scalars(
                select(ProfileAttribute)
                .where(ProfileAttribute.user_id == user_id, ProfileAttribute.name == name)
                .order_by(ProfileAttribute.valid_from, ProfileAttribute.id)
            )
            return [(row.value, row.valid_from) for row in rows]

    def user_summary(self, tenant: str, user: str, top: int = 5) -> UserSummary:
        """Counts of everything held for `user`, the current profile and the most-rated items."""
        profile = self.profile(tenant, user)
        with self.db.session() as session:
            user_id = user_id_of(session, tenant, user)
            row = session.get_one(User, user_id)
            counts = {
                model.__tablename__: session.scalar(
                    select(func.count()).select_from(model).where(model.user_id == user_id)
                ) or 0
                for model in (BehaviorEvent, Document, Face, Subject, VoiceSample, Artifact, Feedback)
            }
            first, last = session.execute(
                select(func.min(BehaviorEvent.ts), func.max(BehaviorEvent.ts)).where(BehaviorEvent.user_id == user_id)
            ).one()
            top_items = session.scalars(
                select(Item.text).join(BehaviorEvent, BehaviorEvent.item_id == Item.id)
                .where(BehaviorEvent.user_id == user_id)
                .order_by(BehaviorEvent.value.desc().nulls_last(), BehaviorEvent.ts.desc()).limit(top)
            ).all()
        return UserSummary(
            tenant=tenant, user=user, created_at=row.created_at, profile=profile, counts=counts,
            first_event_at=first, last_event_at=last, top_items=list(top_items),
            training_consent_at=row.training_consent_at,
        )


def _current_attribute(user_id: int, name: str) -> Any:
    return select(ProfileAttribute).where(
        ProfileAttribute.user_id == user_id,
        ProfileAttribute.name == name,
        ProfileAttribute.valid_to.is_(None),
    )
