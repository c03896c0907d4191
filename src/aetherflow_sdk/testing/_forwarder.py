"""The link emulator's forwarding process: an epoll loop between two TUN fds.

It runs as its own process (``python -m aetherflow_sdk.testing._forwarder``),
started by :func:`aetherflow_sdk.testing.emulated_link` with the two TUN file
descriptors inherited, so that forwarding never competes for the GIL with the
program under test. It is the only place in the emulator that reads the clock;
every decision is made by :class:`LinkDirection`.

Control protocol, one JSON object per line:

* argv[1] is the configuration: ``{"fd_a", "fd_b", "a_to_b", "b_to_a", "seed"}``;
* the process writes ``{"ready": true}`` once it is forwarding;
* a line ``stats`` on stdin is answered with the current :class:`LinkStatistics`;
* end of stdin (the parent closed it, or died) stops forwarding; the final
  statistics are written and the process exits, which closes the TUN devices.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import sys
import time
from collections.abc import Callable

from aetherflow_sdk.testing._linkcore import LinkConfig, LinkDirection, LinkStatistics

_READ_SIZE = 65536  # larger than any MTU we configure: one read is one IP packet
# Packets read from one fd per wake-up: bounded so that a flood in one
# direction cannot delay due deliveries in the other by more than a batch.
_READ_BATCH = 64


def link_statistics(a_to_b: LinkDirection, b_to_a: LinkDirection) -> LinkStatistics:
    """Both directions' counters as one record."""
    return LinkStatistics(a_to_b=a_to_b.statistics(), b_to_a=b_to_a.statistics())


def forward(
    fd_a: int,
    fd_b: int,
    a_to_b: LinkDirection,
    b_to_a: LinkDirection,
    *,
    control_fd: int,
    on_control: Callable[[bytes], bool],
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Forward packets until ``on_control`` returns False (it gets b"" at end of input)."""
    for fd in (fd_a, fd_b):
        os.set_blocking(fd, False)
    poller = select.epoll()
    poller.register(fd_a, select.EPOLLIN)
    poller.register(fd_b, select.EPOLLIN)
    poller.register(control_fd, select.EPOLLIN)
    # Each readable fd feeds one direction, which delivers to the other fd.
    routes = {fd_a: (a_to_b, fd_b), fd_b: (b_to_a, fd_a)}
    directions = ((a_to_b, fd_b), (b_to_a, fd_a))
    try:
        while True:
            deadlines = [d for d in (a_to_b.next_deadline(), b_to_a.next_deadline()) if d is not None]
            timeout = max(0.0, min(deadlines) - clock()) if deadlines else -1.0
            events = poller.poll(timeout)
            now = clock()
            for fd, _mask in events:
                if fd == control_fd:
                    if not on_control(os.read(control_fd, 4096)):
                        return
                    continue
                direction, _out = routes[fd]
                for _ in range(_READ_BATCH):
                    try:
                        packet = os.read(fd, _READ_SIZE)
                    except BlockingIOError:
                        break
                    direction.offer(packet, now)
            for direction, out_fd in directions:
                for packet in direction.pop_due(now):
                    # A plain try (not contextlib.suppress): this is the per-packet hot path.
                    try:  # noqa: SIM105
                        os.write(out_fd, packet)
                    except OSError:
                        # The kernel refused the packet (device going down, or
                        # an invalid packet): on a real link it would be lost.
                        pass
    finally:
        poller.close()


def main(argv: list[str] | None = None) -> int:
    """Entry point of the forwarding process (see the module docstring)."""
    config = json.loads((argv or sys.argv)[1])
    a_to_b = LinkDirection(LinkConfig(**config["a_to_b"]), seed=f"{config['seed']}/a_to_b")
    b_to_a = LinkDirection(LinkConfig(**config["b_to_a"]), seed=f"{config['seed']}/b_to_a")
    control_fd = sys.stdin.fileno()
    pending = bytearray()

    def report() -> None:
        sys.stdout.write(json.dumps(link_statistics(a_to_b, b_to_a).to_dict()) + "\n")
        sys.stdout.flush()

    def on_control(data: bytes) -> bool:
        if not data:
            return False
        pending.extend(data)
        while b"\n" in pending:
            line, _, rest = bytes(pending).partition(b"\n")
            pending[:] = rest
            if line.strip() == b"stats":
                report()
        return True

    sys.stdout.write(json.dumps({"ready": True}) + "\n")
    sys.stdout.flush()
    # Ctrl-C in a terminal reaches the whole process group: stop and report like end of input.
    with contextlib.suppress(KeyboardInterrupt):
        forward(config["fd_a"], config["fd_b"], a_to_b, b_to_a, control_fd=control_fd, on_control=on_control)
    report()
    return 0


if __name__ == "__main__":
    sys.exit(main())
