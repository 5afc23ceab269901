"""Pydantic types shared by every layer. Nothing heavy is imported here."""

from unipgen.schema.memory import (
    EVENT_TYPES,
    DocumentIn,
    EventIn,
    EventRecord,
    ForgetReport,
    ItemIn,
    ItemKind,
    ProfileValue,
    UserSummary,
)

__all__ = ["EVENT_TYPES", "DocumentIn", "EventIn", "EventRecord", "ForgetReport", "ItemIn", "ItemKind", "ProfileValue", "UserSummary"]
