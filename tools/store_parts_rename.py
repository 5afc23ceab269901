"""Rewrite callers of the flat `MemoryStore` methods to the store's parts.

`store.add_items(...)` becomes `store.catalog.add_items(...)`, `MemoryStore.user_snapshot`
(in docstrings and docs) becomes `MemoryStore.reads.user_snapshot`, and so on for every method
in `PARTS`; a few settings the store kept as attributes move to the part that uses them
(`ATTRIBUTES`), and `store._write()` is now `store.write()`.

Only receivers that are a store are rewritten, since other objects have methods of the same
names (`re.search`, `client.events`, `backend.job`):

* a name that is ``store`` or ends in ``_store`` (``store``, ``self.store``, ``svc.store``,
  ``model.store``, ``self._store``, ``sqlite_store``), whatever precedes it;
* ``MemoryStore`` itself (a reference such as ``MemoryStore.search`` in prose);
* in a ``.py`` file, the names it binds to a store: ``name: MemoryStore`` (a parameter or a
  variable), ``name = MemoryStore(...)`` / ``MemoryStore.open(...)``, ``with
  MemoryStore.open(...) as name``, ``name = other`` where ``other`` is one; plus the few
  lambdas' parameters in `EXTRA_NAMES`.

``setattr(store, "add_items", ...)`` (a monkeypatch) becomes ``setattr(store.catalog,
"add_items", ...)``; likewise ``getattr``, ``hasattr``, ``delattr``.

Idempotent: a rewritten call's receiver is a part (``store.catalog``), which no rule matches
again; the three names that are a part and a method (``events``, ``jobs``, ``fits``) are
rewritten only where called (``store.jobs(``), so ``store.jobs.claim_job(`` stays.

Usage (from the repository root)::

    python tools/store_parts_rename.py            # rewrite, print each change
    python tools/store_parts_rename.py --check    # print what would change, write nothing (exit 1 if any)
    python tools/store_parts_rename.py PATH ...   # only these files or folders
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: part -> the methods it took over from the flat store.
PARTS: dict[str, tuple[str, ...]] = {
    "users": ("create_tenant", "ensure_tenant", "list_tenants", "create_user", "create_users", "list_users",
              "set_profile", "profile", "profile_history", "user_summary"),
    "catalog": ("add_items", "item_texts", "item_meta", "catalog_stamp", "keys_without_vector"),
    "events": ("ingest_events", "events", "add_feedback", "feedback"),
    "content": ("add_document", "add_documents", "documents", "add_face", "add_voice", "add_subject", "subjects",
                "media", "media_blob", "add_embeddings", "search", "vectors", "spaces"),
    "artifacts": ("add_artifact", "artifact", "artifacts", "artifact_blob"),
    "reads": ("user_snapshot", "user_snapshots", "taste_read", "item_vectors", "search_items"),
    "fits": ("fit_data", "save_fit", "current_fit", "fits", "fit_mapping", "fit_residue", "fit_due"),
    "jobs": ("job_scratch", "drop_job_scratch", "submit_job", "job", "jobs", "claim_job", "claim_jobs",
             "renew_lease", "finish_job", "finish_jobs", "fail_job", "cancel_job", "mark_cancelled",
             "requeue_expired"),
    "keys": ("create_api_key", "authenticate", "list_api_keys", "revoke_api_key"),
    "audit": ("record_audit", "audit_log"),
    "privacy": ("export_user", "import_user", "forget_user", "forget_item", "delete_events", "purge_expired"),
}

#: settings the store held as attributes -> the part that holds them now.
ATTRIBUTES = {"media_limits": "content", "max_document_chars": "content", "max_queued_jobs": "jobs",
              "scratch_dir": "jobs", "refit_every_events": "fits"}

#: store-level names that changed (the transaction context is public now).
RENAMED = {"_write": "write"}

#: files whose lambdas take a store under a name nothing annotates.
EXTRA_NAMES = {"tests/memory/test_store.py": ("s",), "tests/memory/test_datarules.py": ("s",),
               "tests/memory/test_content.py": ("s",)}

#: where callers live: folders searched for .py files, and the Markdown files.
PY_FOLDERS = ("unipgen", "tests", "benchmarks", "examples")
MARKDOWN = ("README.md", "docs/*.md")

PART_OF = {method: part for part, methods in PARTS.items() for method in methods}
CALLED_ONLY = set(PART_OF) & set(PARTS)  # events, jobs, fits: a part's name too

_STORE_NAME = r"\b(?:\w*_)?store"
_BOUND = [
    re.compile(r"\b([A-Za-z_]\w*)\s*:\s*MemoryStore\b"),
    re.compile(r"\b([A-Za-z_]\w*)\s*=\s*MemoryStore(?:\.open)?\("),
    re.compile(r"MemoryStore\.open\([^\n]*?\)\s+as\s+([A-Za-z_]\w*)"),
]
_CALL = re.compile(r"\s*\(")
_ALIAS = re.compile(r"^\s*([A-Za-z_]\w*)\s*=\s*([A-Za-z_]\w*)\s*(?:#.*)?$", re.MULTILINE)


def store_names(path: Path, text: str) -> list[str]:
    """Names a .py file binds to a store, beyond the ``*store`` ones every file gets."""
    names = {m.group(1) for pattern in _BOUND for m in pattern.finditer(text)}
    names.update(EXTRA_NAMES.get(path.relative_to(ROOT).as_posix(), ()) if path.is_relative_to(ROOT) else ())
    aliases = [(m.group(1), m.group(2)) for m in _ALIAS.finditer(text)]
    while True:  # `s = populated`: an alias of a store is a store
        more = {new for new, old in aliases if new not in names and (old in names or _is_store_name(old))}
        if not more:
            break
        names |= more
    return sorted(n for n in names if not _is_store_name(n))


def _is_store_name(name: str) -> bool:
    return re.fullmatch(r"(?:\w*_)?store", name) is not None


def receiver_pattern(names: list[str]) -> str:
    """A regex for a store receiver: a ``*store`` name, ``MemoryStore``, or one of `names`
    (not after a dot: ``self.s`` is not the local ``s``)."""
    alternatives = [_STORE_NAME, r"\bMemoryStore"] + [rf"(?<![\w.]){re.escape(n)}" for n in names]
    return "(?:" + "|".join(alternatives) + ")"


def rewrite(text: str, names: list[str]) -> tuple[str, list[tuple[int, str, str]]]:
    """`text` with store calls moved to parts, and each change as (line, before, after)."""
    receiver = receiver_pattern(names)
    members = "|".join(sorted({*PART_OF, *ATTRIBUTES, *RENAMED}, key=len, reverse=True))
    pattern = re.compile(rf"({receiver})\.({members})\b")
    changes: list[tuple[int, str, str]] = []

    def replace(match: re.Match[str]) -> str:
        store, member = match.group(1), match.group(2)
        if text.startswith(".", match.end()) and member not in RENAMED:
            return match.group(0)  # already a part (store.events.ingest_events) or not a call chain we know
        if member in CALLED_ONLY and not _CALL.match(text, match.end()):
            return match.group(0)  # `store.jobs` alone is the part
        if member in RENAMED:
            new = f"{store}.{RENAMED[member]}"
        elif member in ATTRIBUTES:
            new = f"{store}.{ATTRIBUTES[member]}.{member}"
        else:
            new = f"{store}.{PART_OF[member]}.{member}"
        changes.append((text.count("\n", 0, match.start()) + 1, match.group(0), new))
        return new

    text = pattern.sub(replace, text)
    # monkeypatch.setattr(store, "keys_without_vector", ...) names the method in a string
    by_name = re.compile(rf"\b((?:set|get|has|del)attr\(\s*)({receiver})(\s*,\s*[\"'])({'|'.join(PART_OF)})([\"'])")

    def replace_named(match: re.Match[str]) -> str:
        call, store, comma, member, quote = match.groups()
        new = f"{call}{store}.{PART_OF[member]}{comma}{member}{quote}"
        changes.append((text.count("\n", 0, match.start()) + 1, match.group(0), new))
        return new

    return by_name.sub(replace_named, text), changes


def targets(paths: list[str]) -> list[Path]:
    if paths:
        found = []
        for given in map(Path, paths):
            found += sorted(given.rglob("*.py")) + sorted(given.rglob("*.md")) if given.is_dir() else [given]
        return [p.resolve() for p in found]
    files = [p for folder in PY_FOLDERS for p in sorted((ROOT / folder).rglob("*.py"))]
    files += [p for pattern in MARKDOWN for p in sorted(ROOT.glob(pattern))]
    return [p for p in files if p.resolve() != Path(__file__).resolve()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="*", help="files or folders (default: the callers' folders)")
    parser.add_argument("--check", action="store_true", help="only print what would change")
    args = parser.parse_args(argv)
    total = 0
    for path in targets(args.paths):
        text = path.read_text()
        names = store_names(path, text) if path.suffix == ".py" else []
        new, changes = rewrite(text, names)
        if not changes:
            continue
        shown = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
        for line, before, after in changes:
            print(f"{shown}:{line}: {before} -> {after}")
        total += len(changes)
        if not args.check:
            path.write_text(new)
    verb = "would change" if args.check else "changed"
    print(f"{verb} {total} store calls", file=sys.stderr)
    return 1 if args.check and total else 0


if __name__ == "__main__":
    sys.exit(main())
