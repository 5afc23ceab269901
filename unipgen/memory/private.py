"""Files only the service's own account can read: the data dir holds face photos, voice
recordings and people's texts, so every folder unipgen makes for them is 0700 and every file
0600, whatever the process umask says.

The process umask is left alone (it is process-wide: changing it around a write would race
with other threads); modes are given at creation (`os.open`, `mkdir(mode=...)`) or set just
after, before anything is written into the file.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

log = logging.getLogger("unipgen.memory")

DIR_MODE = 0o700
FILE_MODE = 0o600


def private_dir(path: Path) -> Path:
    """`path`, created 0700 (parents too) when missing; an existing one that other accounts can
    open is tightened to 0700, with a warning (it was made by an older unipgen, or by hand)."""
    path = Path(path)
    missing = not path.exists()
    path.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        if not missing:
            log.warning("%s was readable by other accounts (mode %o): tightened to 0700", path, mode)
        _chmod(path, DIR_MODE)
    return path


def private_file(path: Path) -> None:
    """Make an existing file 0600 (a missing one is left missing)."""
    if Path(path).exists():
        _chmod(Path(path), FILE_MODE)


def touch_private(path: Path) -> None:
    """Create `path` empty with mode 0600 unless it exists; make it 0600 either way."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE))
    except FileExistsError:
        pass
    private_file(path)


def restrict_tree(root: Path) -> None:
    """Folders 0700 and files 0600, everywhere under `root` (itself included)."""
    root = Path(root)
    if not root.exists():
        return
    _chmod(root, DIR_MODE if root.is_dir() else FILE_MODE)
    for folder, dirs, files in os.walk(root):
        for name in dirs:
            _chmod(Path(folder, name), DIR_MODE)
        for name in files:
            _chmod(Path(folder, name), FILE_MODE)


def _chmod(path: Path, mode: int) -> None:
    try:
        os.chmod(path, mode)
    except OSError as exc:  # not ours (a shared mount, another owner): say so, do not fail the write
        log.warning("could not restrict %s to mode %o: %s", path, mode, exc)


__all__ = ["DIR_MODE", "FILE_MODE", "private_dir", "private_file", "restrict_tree", "touch_private"]
