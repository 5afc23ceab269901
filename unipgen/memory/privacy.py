"""`store.privacy`: a user's rights over their data: take it along (export, import), have it
deleted with everything derived from it (forget, proven by a residue scan), and have it deleted
once it is older than a retention policy allows (purge).

The work is done in `unipgen.memory.archive`, `unipgen.memory.forget` and
`unipgen.memory.retention`; this part is their one public face.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from pathlib import Path

from unipgen.memory.archive import Archive
from unipgen.memory.forget import Forget
from unipgen.memory.retention import PurgeReport, Retention
from unipgen.schema.memory import ForgetReport


class Privacy:
    """Export, import, forget and purge (see the module docstring)."""

    def __init__(self, archive: Archive, forget: Forget, retention: Retention) -> None:
        self.archive = archive
        self.forget = forget
        self.retention = retention

    def export_user(self, tenant: str, user: str, path: str | Path) -> dict[str, int]:
        """Write `user`'s data to the zip at `path`; returns how many records of each kind."""
        return self.archive.export_user(tenant, user, path)

    def import_user(self, path: str | Path, *, tenant: str | None = None) -> tuple[str, str]:
        """Load an export zip; the user must not exist yet. Returns (tenant, user)."""
        return self.archive.import_user(path, tenant=tenant)

    def forget_user(self, tenant: str, user: str) -> ForgetReport:
        """Delete a user and everything derived from their data; report any residue."""
        return self.forget.forget_user(tenant, user)

    def forget_item(self, tenant: str, kind: str, key: str, *, user: str | None = None) -> ForgetReport:
        """Delete one memory item (a photo, a document, a catalog item...) and what was derived
        from it; forgetting a catalog item also deletes the behavior events that point to it."""
        return self.forget.forget_item(tenant, kind, key, user=user)

    def delete_events(
        self, tenant: str, user: str, *, ids: list[int] | None = None, type: str | None = None,
        item: str | None = None, since: datetime | None = None, until: datetime | None = None,
    ) -> ForgetReport:
        """Delete some of `user`'s behavior events and every artifact derived from the user's
        history (see `Forget.delete_events`)."""
        return self.forget.delete_events(tenant, user, ids=ids, type=type, item=item, since=since, until=until)

    def purge_expired(self, retention_days: Mapping[str, float], *, now: datetime | None = None,
                      dry_run: bool = False) -> PurgeReport:
        """Delete, in every tenant, what is older than `retention_days` allows, and what was
        derived from it (see `Retention.purge_expired`); `dry_run` only counts."""
        return self.retention.purge_expired(retention_days, now=now, dry_run=dry_run)
