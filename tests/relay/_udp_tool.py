"""Small UDP programs run inside test namespaces (``python _udp_tool.py COMMAND ...``).

``echo PORT HOST...``: answer every datagram with the source address it came from, for 60 s
(one socket per address, so each answer leaves from the address it was sent to).
``punch PORT SERVER_HOST SERVER_PORT [SERVER2_HOST]``: from one socket bound to PORT, ask the
echo server(s) what they see and print it as one JSON line; then read the peer's public
"host port" from stdin, send to it every 20 ms for at most 3 s, and print one JSON line saying
whether anything from the peer arrived.
"""

from __future__ import annotations

import json
import select
import socket
import sys
import time


def echo(port: int, hosts: list[str]) -> None:
    socks = []
    for host in hosts:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((host, port))
        socks.append(sock)
    print("ready", flush=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready, _, _ = select.select(socks, [], [], 0.5)
        for sock in ready:
            _, address = sock.recvfrom(2048)
            sock.sendto(f"{address[0]} {address[1]}".encode(), address)


def _ask(sock: socket.socket, server: tuple[str, int]) -> list[object]:
    for _ in range(50):  # bounded: 5 s
        sock.sendto(b"who am i", server)
        ready, _, _ = select.select([sock], [], [], 0.1)
        if ready:
            data, source = sock.recvfrom(2048)
            if source == server:
                host, port = data.decode().split()
                return [host, int(port)]
    raise SystemExit(f"no answer from {server}")


def punch(port: int, server_host: str, server_port: int, second: str | None) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("0.0.0.0", port))
    seen = [_ask(sock, (server_host, server_port))]
    if second:
        seen.append(_ask(sock, (second, server_port)))
    print(json.dumps({"observed": seen}), flush=True)
    host, peer_port = sys.stdin.readline().split()
    peer = (host, int(peer_port))
    got = False
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        sock.sendto(b"punch", peer)
        ready, _, _ = select.select([sock], [], [], 0.02)
        if ready:
            _, source = sock.recvfrom(2048)
            if source[0] == peer[0]:
                got = True
                # keep sending a little longer so the peer hears us too
                for _ in range(10):
                    sock.sendto(b"punch", peer)
                    time.sleep(0.02)
                break
    print(json.dumps({"received": got}), flush=True)


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    if command == "echo":
        echo(int(args[0]), args[1:])
    else:
        punch(int(args[0]), args[1], int(args[2]), args[3] if len(args) > 3 else None)
