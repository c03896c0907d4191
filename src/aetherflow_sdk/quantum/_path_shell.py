"""Moving a connection to a new path, as the application asks for it (the async shell).

The rules live in the sans-I/O core (``_paths.py``): probe the new path, move once it answers,
give up after ``MAX_PATH_CHALLENGES`` probes. This module starts a migration, pushes the first
probe out at once, and waits for the core to say how it ended.
"""

from __future__ import annotations

import socket
from collections.abc import Generator
from typing import TYPE_CHECKING, Any

import anyio

from aetherflow_sdk._errors import LocalProtocolError
from aetherflow_sdk.quantum._endpoint_core import check_address
from aetherflow_sdk.quantum._paths import DirectPath, Path, PathValidationFailed
from aetherflow_sdk.quantum._states import CAN_SEND_DATA

if TYPE_CHECKING:
    from aetherflow_sdk.quantum._endpoint import Connection


class PathMigration:
    """A migration under way. ``await`` it to wait until the connection moved.

    Returned by ``Connection.migrate_to_path(path)``, which has already started it (the first
    PATH_CHALLENGE is on its way), so it need not be awaited. Awaiting it returns once the new
    path answered and carries the connection's traffic; it raises
    :class:`~aetherflow_sdk.quantum.PathValidationFailed` if the path never answered (the
    connection stays on its old path), or the connection's error if it closed meanwhile.
    """

    def __init__(self, connection: Connection, path: Path) -> None:
        self._connection = connection
        self._path = path

    @property
    def path(self) -> Path:
        """The path the connection is moving to."""
        return self._path

    @property
    def done(self) -> bool:
        """The migration ended: moved, given up, replaced by a later one, or the connection closed."""
        core = self._connection._core
        # (Paths compare by identity, direct ones by address: a migration to an address the
        # connection used before goes on under that path's old object.)
        return core.migration_target != self._path or core.state not in CAN_SEND_DATA

    def __await__(self) -> Generator[Any, None, None]:
        return self.wait().__await__()

    async def wait(self) -> None:
        """Wait for the migration to end (see the class)."""
        connection = self._connection
        core = connection._core
        while not self.done:
            await connection._wait_change()
        if core.path == self._path:
            await anyio.lowlevel.checkpoint()
            return
        if core.state not in CAN_SEND_DATA:
            raise connection._error()
        raise PathValidationFailed(
            f"the path to {self._path.address[0]}:{self._path.address[1]} did not answer its "
            f"PATH_CHALLENGE; the connection stays on {core.peer_address[0]}:{core.peer_address[1]}"
        )


def start_migration(connection: Connection, path: Path) -> PathMigration:
    """Start moving ``connection`` to ``path`` and send the first probe now."""
    if not isinstance(path, Path):
        raise LocalProtocolError(
            f"migrate_to_path() takes a quantum.Path, got {type(path).__name__}; "
            "use migrate(address) for a plain address"
        )
    endpoint = connection._endpoint
    endpoint._check_open()
    core = connection._core
    endpoint._core.migrate(core, path, anyio.current_time())
    endpoint._after_app_action(core)
    return PathMigration(connection, path)


async def migrate(connection: Connection, address: tuple[str, int]) -> None:
    """Resolve ``address``, then move ``connection`` to it directly and wait (``Connection.migrate``)."""
    host, port = check_address(address)
    family = connection._endpoint._sock.family
    try:
        resolved = await anyio.getaddrinfo(host, port, family=family, type=socket.SOCK_DGRAM)
    except OSError as exc:
        raise LocalProtocolError(f"cannot resolve {host!r}: {exc}") from None
    sockaddr = resolved[0][4]
    target = (str(sockaddr[0]), int(sockaddr[1]))
    await start_migration(connection, DirectPath(target))


__all__ = ["PathMigration", "migrate", "start_migration"]
