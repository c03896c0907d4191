"""A node's data directory: its identity key, its lock, its document and session stores.

Layout (everything a node keeps lives here)::

    DATA/
      identity.key       the node's Ed25519 private key, 32 raw bytes, mode 0600
      lock               held (flock) while a node runs: two nodes never share a directory
      documents.sqlite   the replicas (SqliteStore: update log + snapshots of every document)
      node.sqlite        the catalog: document identities, secrets, tokens, known holders
      sessions.sqlite    the session store (SqliteSessionStore)

The default directory is ``$AETHERFLOW_HOME``, else ``$XDG_DATA_HOME/aetherflow``, else
``~/.local/share/aetherflow`` (the XDG Base Directory convention).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
from pathlib import Path

from aetherflow_sdk import LocalProtocolError
from aetherflow_sdk._identity import Identity

IDENTITY_FILE = "identity.key"
LOCK_FILE = "lock"
DOCUMENTS_FILE = "documents.sqlite"
CATALOG_FILE = "node.sqlite"
SESSIONS_FILE = "sessions.sqlite"


class DataDirError(LocalProtocolError):
    """The data directory cannot be used: not writable, or in use by another node."""


def default_data_dir() -> Path:
    """``$AETHERFLOW_HOME``, else ``$XDG_DATA_HOME/aetherflow``, else ``~/.local/share/aetherflow``."""
    home = os.environ.get("AETHERFLOW_HOME")
    if home:
        return Path(home)
    xdg = os.environ.get("XDG_DATA_HOME")
    if xdg and Path(xdg).is_absolute():  # the spec: a relative value is invalid, ignore it
        return Path(xdg) / "aetherflow"
    return Path.home() / ".local" / "share" / "aetherflow"


def _fail(path: Path, exc: OSError, what: str) -> DataDirError:
    reason = exc.strerror or str(exc)
    return DataDirError(f"cannot use data directory {path}: {what} ({reason})")


def load_identity(data_dir: Path) -> Identity:
    """The node's identity from ``identity.key``, created (mode 0600) on first use.

    A key file readable by others is tightened to 0600; a file that is not a key is an error.
    """
    path = data_dir / IDENTITY_FILE
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            mode = stat.S_IMODE(path.stat().st_mode)
            if mode & 0o077:
                path.chmod(0o600)
            raw = path.read_bytes()
        else:
            identity = Identity.generate()
            with os.fdopen(fd, "wb") as file:
                file.write(identity.private_bytes())
                file.flush()
                os.fsync(file.fileno())
            return identity
    except OSError as exc:
        raise _fail(data_dir, exc, f"cannot read or create {IDENTITY_FILE}") from None
    if len(raw) != 32:
        raise DataDirError(
            f"{path} is not an identity key (it holds {len(raw)} bytes, not 32);"
            " move it aside to make a new one"
        )
    return Identity.from_private_bytes(raw)


class DataDirLock:
    """An exclusive advisory lock on ``DATA/lock``, held while a node runs.

    ``flock`` locks die with their process, so a node killed with ``kill -9`` leaves
    no stale lock behind.
    """

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise _fail(self.path.parent, exc, "cannot create its lock file") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                holder = ""
                with contextlib.suppress(OSError, ValueError):
                    holder = f" (process {int(self.path.read_text().strip())})"
                raise DataDirError(
                    f"data directory {self.path.parent} is in use by another node{holder};"
                    " stop it, or give this node its own directory"
                ) from None
            raise _fail(self.path.parent, exc, "cannot lock it") from None
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def check_writable(data_dir: Path) -> None:
    """Refuse early (one clear line) a directory the node could read but not write."""
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _fail(data_dir, exc, "cannot create it") from None
    if not os.access(data_dir, os.W_OK | os.X_OK):
        raise DataDirError(f"cannot use data directory {data_dir}: no write permission")
