"""Start or join the Ray cluster unipgen runs jobs on.

Without an address, unipgen starts a local cluster that listens on loopback only and keeps its
auth token in the data dir. Ray 2.60 does neither by default: it binds all interfaces, registers
the machine's LAN address, and writes a world-readable token to ``~/.ray/auth_token``. Two
settings fix that, and both must be in place before ``import ray``:

- ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` makes Ray use 127.0.0.1 as the node address, so
  every server binds loopback (`_node_ip_address="127.0.0.1"` is rewritten to the LAN address);
- ``RAY_AUTH_TOKEN_PATH`` points at ``<home>/ray/auth_token`` (created here, mode 600). A new
  local cluster turns token authentication on by itself.

If ray was imported before these could be set, the node-address switch is set on Ray's
constants module instead (a private name, checked by the tests). Joining a remote cluster is
explicit (`Settings.ray_address`); the caller's environment must then carry that cluster's
token (``RAY_AUTH_MODE=token`` and ``RAY_AUTH_TOKEN`` or ``RAY_AUTH_TOKEN_PATH``). Ray reads
both once per process and keeps them; `connect` makes it read them again, so a process that
imported Ray earlier, or joined another cluster before, uses the ones in its environment now.
"""

from __future__ import annotations

import os
import secrets
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from unipgen.errors import InvalidInputError, UnipgenError


@dataclass
class RayCluster:
    """The cluster this process is connected to; `shutdown` stops it if unipgen started it."""

    address: str
    started_here: bool
    temp_dir: str | None = None

    def shutdown(self) -> None:
        import ray

        ray.shutdown()
        if self.temp_dir:  # ray.shutdown leaves its session files
            shutil.rmtree(Path(self.temp_dir).parent, ignore_errors=True)


def private_temp_dir() -> Path:
    """A temp dir for a local Ray cluster, inside a fresh 0700 folder: Ray makes its own
    folders 0777 (session logs, spilled objects, sockets), so only the parent can keep other
    accounts out. Short, under /tmp: Unix socket paths are capped at 107 bytes."""
    parent = Path(tempfile.mkdtemp(prefix="unipgen-ray-", dir="/tmp"))  # mkdtemp: mode 0700
    os.chmod(parent, 0o700)
    return parent / "r"


def token_path(home: Path) -> Path:
    """The local cluster's auth token file, created (mode 600) on first use."""
    path = home / "ray" / "auth_token"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_hex(32))
    return path


def connect(home: Path, address: str | None = None, *, num_cpus: int | None = None, num_gpus: int | None = None,
            **init_kwargs: Any) -> RayCluster:
    """Join `address`, or start a local loopback-only cluster with its token under `home`.

    `num_cpus`/`num_gpus` size a local cluster (fake GPUs included: tests use `num_gpus=2`).
    Re-entrant: an existing connection is reused.
    """
    try:
        import_loopback_ray()
        import ray
    except ImportError as exc:
        raise UnipgenError("the Ray executor needs Ray: pip install 'unipgen[ray]'") from exc
    if ray.is_initialized():
        context = ray.get_runtime_context()
        return RayCluster(address=context.gcs_address, started_here=False)
    if address is not None:
        _reload_auth()  # the caller's RAY_AUTH_MODE and token, even if Ray read others before
        ray.init(address=address, **init_kwargs)
        return RayCluster(address=address, started_here=False)
    os.environ["RAY_AUTH_TOKEN_PATH"] = str(token_path(home))
    _reload_auth()  # a second cluster in this process has its own token
    temp_dir = str(private_temp_dir())
    started: Any = ray.init(address="local", num_cpus=num_cpus, num_gpus=num_gpus, include_dashboard=False,
                            _temp_dir=temp_dir, configure_logging=False, log_to_driver=False, **init_kwargs)
    node_ip = started.address_info["node_ip_address"]  # ray.init's result is a RayContext, typed as its base
    if node_ip != "127.0.0.1":
        ray.shutdown()
        raise UnipgenError(f"the local Ray cluster registered {node_ip}, not loopback: refusing to run it")
    return RayCluster(address=started.address_info["gcs_address"], started_here=True, temp_dir=temp_dir)


def _reload_auth() -> None:
    """Make Ray read ``RAY_AUTH_MODE`` and the token from the environment again: it keeps the
    mode it read when first imported and the first token it loaded, for the life of the process
    (a process that imported Ray before its environment was set, or that joins a second cluster)."""
    from ray._raylet import AuthenticationTokenLoader, Config  # type: ignore[attr-defined]  # not in _raylet.pyi

    Config.initialize("")  # what Ray itself does after it turns token mode on (`_enable_token_auth`)
    AuthenticationTokenLoader.instance().reset_cache()


def import_loopback_ray() -> None:
    """Make the next local cluster use 127.0.0.1 as its node address (see the module doc)."""
    if "ray" not in sys.modules:
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        return
    import ray._private.ray_constants as constants

    if not hasattr(constants, "ENABLE_RAY_CLUSTER"):
        raise InvalidInputError("this Ray version has no ENABLE_RAY_CLUSTER switch; import unipgen's Ray "
                                "executor before ray, or set RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0")
    constants.ENABLE_RAY_CLUSTER = False


__all__ = ["RayCluster", "connect", "private_temp_dir", "token_path"]
