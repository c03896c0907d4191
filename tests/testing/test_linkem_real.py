"""The real link emulator (root only): UDP and TCP see the delay, loss counters move, cleanup is total."""

from __future__ import annotations

import json
import math
import os
import signal
import statistics
import subprocess
import sys
import textwrap

import pytest

from aetherflow_sdk.testing import LinkConfig, emulated_link, netns_available, network_namespace, veth_pair

_reason = netns_available()
pytestmark = [pytest.mark.netns, pytest.mark.skipif(_reason is not None, reason=_reason or "")]

PORT = 47001

# A UDP echo server that also counts what it received; it stops after `idle` seconds of silence.
UDP_ECHO = textwrap.dedent(
    """
    import json, socket, sys
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((sys.argv[1], int(sys.argv[2])))
    print("ready", flush=True)
    sock.settimeout(float(sys.argv[3]))
    count = 0
    try:
        while True:
            data, peer = sock.recvfrom(2048)
            count += 1
            sock.sendto(data, peer)
    except TimeoutError:
        pass
    print(json.dumps({"received": count}), flush=True)
    """
)

# Sends N datagrams (each waits for its echo, with a timeout) and prints the round-trip times.
UDP_PING = textwrap.dedent(
    """
    import json, socket, sys, time
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.connect((sys.argv[1], int(sys.argv[2])))
    sock.settimeout(0.5)
    rtts = []
    for i in range(int(sys.argv[3])):
        sent = time.monotonic()
        sock.send(i.to_bytes(4, "big") + bytes(60))
        try:
            while int.from_bytes(sock.recv(2048)[:4], "big") != i:
                pass
            rtts.append(time.monotonic() - sent)
        except TimeoutError:
            pass
    print(json.dumps(rtts), flush=True)
    """
)

# Sends N datagrams 1 ms apart without waiting for anything.
UDP_BLAST = textwrap.dedent(
    """
    import socket, sys, time
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for i in range(int(sys.argv[3])):
        sock.sendto(i.to_bytes(4, "big") + bytes(60), (sys.argv[1], int(sys.argv[2])))
        time.sleep(0.001)  # pacing, not waiting: keeps the count independent of queues
    """
)

TCP_ECHO = textwrap.dedent(
    """
    import socket, sys
    server = socket.create_server((sys.argv[1], int(sys.argv[2])))
    print("ready", flush=True)
    server.settimeout(30)
    conn, _ = server.accept()
    while data := conn.recv(4096):
        conn.sendall(data)
    """
)

TCP_PING = textwrap.dedent(
    """
    import json, socket, sys, time
    started = time.monotonic()
    conn = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)
    connect_time = time.monotonic() - started
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    rtts = []
    for i in range(int(sys.argv[3])):
        sent = time.monotonic()
        conn.sendall(b"x" * 100)
        got = 0
        while got < 100:
            got += len(conn.recv(4096))
        rtts.append(time.monotonic() - sent)
    print(json.dumps({"connect": connect_time, "rtts": rtts}), flush=True)
    """
)


def start_server(namespace, script: str, *args: str) -> subprocess.Popen[str]:  # type: ignore[no-untyped-def]
    process = namespace.popen(
        [sys.executable, "-c", script, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "ready", process.stderr.read() if process.stderr else ""
    return process


def test_udp_round_trip_is_twice_the_one_way_delay() -> None:
    # 50 ms one way: large enough that a loose upper bound (a busy machine) still
    # catches a link that applied the delay twice.
    with emulated_link(LinkConfig(delay=0.050), seed=1) as link:
        server = start_server(link.ns_b, UDP_ECHO, link.address_b, str(PORT), "2")
        result = link.ns_a.run([sys.executable, "-c", UDP_PING, link.address_b, str(PORT), "20"])
        rtts = json.loads(result.stdout)
        assert len(rtts) == 20
        # A packet can never beat the configured delay.
        assert min(rtts) >= 0.100
        assert statistics.median(rtts) < 0.100 + 0.070
        server.terminate()
        stats = link.statistics()
        assert stats.a_to_b.forwarded == stats.b_to_a.forwarded == 20
        assert stats.a_to_b.dropped_loss == stats.a_to_b.dropped_queue == 0


def test_tcp_crosses_the_link_with_the_configured_delay() -> None:
    with emulated_link(LinkConfig(delay=0.050, rate_bps=50e6), seed=1) as link:
        start_server(link.ns_b, TCP_ECHO, link.address_b, str(PORT))
        result = link.ns_a.run([sys.executable, "-c", TCP_PING, link.address_b, str(PORT), "10"])
        report = json.loads(result.stdout)
        assert report["connect"] >= 0.100  # SYN, SYN-ACK: one round trip
        assert min(report["rtts"]) >= 0.100
        assert statistics.median(report["rtts"]) < 0.100 + 0.070


def test_loss_counters_move_at_the_configured_rate() -> None:
    loss, count, seed = 0.2, 400, 11
    with emulated_link(LinkConfig(loss=loss), LinkConfig(), seed=seed) as link:
        server = start_server(link.ns_b, UDP_ECHO, link.address_b, str(PORT), "1")
        link.ns_a.run([sys.executable, "-c", UDP_BLAST, link.address_b, str(PORT), str(count)])
        out, _ = server.communicate(timeout=30)
        received = json.loads(out.splitlines()[-1])["received"]
        stats = link.statistics().a_to_b
    assert stats.offered == count
    assert stats.dropped_loss + received == count, f"seed {seed}"
    assert stats.forwarded == received
    sigma = math.sqrt(count * loss * (1 - loss))
    assert abs(stats.dropped_loss - count * loss) < 5 * sigma, f"seed {seed}: {stats.dropped_loss} lost"


def _gone(tag: str) -> bool:
    namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    return tag not in namespaces and tag not in links


def test_cleanup_leaves_nothing_behind_even_after_an_exception() -> None:
    with pytest.raises(RuntimeError, match="boom"), emulated_link(LinkConfig(delay=0.001)) as link:
        tag = link.ns_a.name.split("-")[1]
        forwarder = link._forwarder
        assert not _gone(tag)
        raise RuntimeError("boom")
    assert _gone(tag)
    assert forwarder.poll() is not None
    assert link.final_statistics is not None


SIGTERMED = textwrap.dedent(
    """
    import sys, time
    from aetherflow_sdk.testing import LinkConfig, emulated_link
    with emulated_link(LinkConfig()) as link:
        print(link.ns_a.name.split("-")[1], flush=True)
        time.sleep(60)
    """
)


def test_sigterm_cleans_up() -> None:
    process = subprocess.Popen([sys.executable, "-c", SIGTERMED], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        tag = process.stdout.readline().strip()
        assert tag and not _gone(tag)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 128 + signal.SIGTERM
        assert _gone(tag)
    finally:
        if process.poll() is None:
            process.kill()


def test_veth_pair_joins_two_namespaces() -> None:
    with network_namespace("x") as ns_x, network_namespace("y") as ns_y:
        tag = ns_x.name.split("-")[1]
        with veth_pair(ns_x, ns_y) as pair:
            server = start_server(ns_y, UDP_ECHO, pair.address_b, str(PORT), "1")
            result = ns_x.run([sys.executable, "-c", UDP_PING, pair.address_b, str(PORT), "3"])
            assert len(json.loads(result.stdout)) == 3
            server.terminate()
        assert pair.name_a not in ns_x.ip("-o", "link").stdout
    assert _gone(tag)
    assert os.path.exists("/dev/net/tun")


def test_linkem_cli_runs_and_reports(capsys: pytest.CaptureFixture[str]) -> None:
    from aetherflow_sdk.testing.linkem import main

    assert main(["--delay-ms", "1", "--seconds", "0.05"]) == 0
    out = capsys.readouterr().out
    assert "namespace A: af-" in out and '"a_to_b"' in out
    name = out.split("namespace A: ")[1].split()[0]
    assert _gone(name.split("-")[1])


def test_linkem_cli_user_mistake_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    from aetherflow_sdk.testing.linkem import main

    assert main(["--loss", "2"]) == 2
    assert capsys.readouterr().err.strip() == "linkem: error: link loss is a probability in [0, 1), got 2.0"
