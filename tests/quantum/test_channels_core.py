"""The channel table on its own (sans-I/O): turns, open/refuse/limit/close, hostile frames.

The rule for hostile input (docs/protocol.md, "Channels"): any frame an authenticated peer
sends is processed, dropped and counted, or raises RemoteProtocolError (which closes the
connection) -- nothing else, and the table's bounds hold whatever came before.
"""

from __future__ import annotations

import random
from collections import deque

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aetherflow_sdk import ChannelRefused, ClosedByPeer, RemoteProtocolError
from aetherflow_sdk._errors import ClosedByProtocolViolation
from aetherflow_sdk.quantum import QuantumConfig
from aetherflow_sdk.quantum._channels import MAX_PENDING_CONTROL, ChannelCore, Channels, ChannelState
from aetherflow_sdk.quantum._messages import Fragment, MessageReceiver, MessageSender
from aetherflow_sdk.quantum._stats import ConnectionCounters
from aetherflow_sdk.quantum._wire import (
    BlockedFrame,
    ChannelAcceptFrame,
    ChannelCloseFrame,
    ChannelOpenFrame,
    ChannelRefuseFrame,
    DatagramFrame,
    MaxDataFrame,
    encode_channel_close,
    encode_channel_open,
    encode_fragment_head,
    parse_frames_untrusted,
)
from tests.quantum._vnet import LinkProfile, VirtualNetwork

PEER = b"\x07" * 32
A = ("10.0.0.1", 4000)
B = ("10.0.0.2", 5000)


def _table(*, is_client: bool = True, **config: int) -> Channels:
    cfg = QuantumConfig(**config)  # type: ignore[arg-type]
    table = Channels(config=cfg, is_client=is_client, stats=ConnectionCounters(), datagrams_out=deque())
    sender = MessageSender(
        max_message_size=cfg.max_message_size,
        send_buffer=cfg.send_buffer,
        initial_peer_max_data=cfg.receive_window,
    )
    receiver = MessageReceiver(max_message_size=cfg.max_message_size, receive_window=cfg.receive_window)
    table.bind_default(sender, receiver, cfg.max_message_size, cfg.receive_window)
    return table


def _open(table: Channels, name: bytes) -> ChannelCore:
    core = table.open(name)
    table.on_frame(ChannelAcceptFrame(channel=core.channel_id), PEER, True)
    assert core.state is ChannelState.OPEN
    return core


def _drain(table: Channels, budget: int = 1000) -> list[Fragment]:
    out = []
    while table.has_data_to_send():
        fragment = table.next_fragment(budget, 28, 32)
        assert fragment is not None
        out.append(fragment)
    return out


# ---------------------------------------------------------------------------------- turns


def test_channels_take_turns_one_fragment_each() -> None:
    table = _table()
    bulk, edits = _open(table, b"bulk"), _open(table, b"edits")
    assert table.default is not None
    table.send_message(bulk, b"B" * 10_000, True)
    first = table.next_fragment(1000, 28, 32)  # the bulk message alone: it starts at once
    assert first is not None
    frags = [first]
    table.send_message(edits, b"e1", True)
    table.default.sender.queue_message(b"zero", True)
    table.send_message(edits, b"e2", False)
    frags += _drain(table)
    channels = [f.channel for f in frags]
    # After the bulk's first fragment, each channel with data gets the next turn in the ring
    # (channel 0 is always in it); the edits' two messages take turns within their channel.
    assert channels[:4] == [bulk.channel_id, 0, bulk.channel_id, edits.channel_id]
    first_edit = channels.index(edits.channel_id)
    assert channels.index(edits.channel_id, first_edit + 1) <= first_edit + 2
    assert sum(len(f.data) for f in frags if f.channel == bulk.channel_id) == 10_000
    assert len(frags) == -(-10_000 // (1000 - 32)) + 3
    # The budget covers the frame head: a channel fragment leaves room for its 32 bytes.
    assert all(len(f.data) <= 1000 - 32 for f in frags if f.channel)


def test_a_lost_fragment_puts_its_channel_back_in_the_ring() -> None:
    table = _table()
    core = _open(table, b"x")
    table.send_message(core, b"abc" * 500, True)
    frags = _drain(table)
    assert not table.has_data_to_send()
    table.on_fragment_lost(frags[0])
    assert table.has_data_to_send()
    again = table.next_fragment(1000, 28, 32)
    assert again is not None and again.channel == core.channel_id and again.offset == 0


def test_a_channel_blocked_by_its_window_queues_one_channel_blocked() -> None:
    table = _table(receive_window=4096, max_message_size=4096)
    core = _open(table, b"x")
    table.send_message(core, b"a" * 3000, True)
    table.send_message(core, b"b" * 3000, True)  # does not fit the peer's 4096-byte window yet
    _drain(table)
    parts: list[bytes] = []
    carried: list[object] = []
    table.write_control(parts, carried, 1000)
    frames = parse_frames_untrusted(b"".join(parts))
    assert frames == [BlockedFrame(needed_max_data=3000 + 64 + 3000, channel=core.channel_id)]
    table.on_frame(MaxDataFrame(max_data=8192, channel=core.channel_id), PEER, True)
    assert table.has_data_to_send()
    assert {f.sequence for f in _drain(table)} == {1}


# ---------------------------------------------------------------- open, refuse, limit, close


def test_ids_have_the_openers_parity_and_are_never_reused() -> None:
    client, server = _table(is_client=True), _table(is_client=False)
    assert [client.open(b"n").channel_id for _ in range(3)] == [1, 3, 5]
    assert [server.open(b"n").channel_id for _ in range(3)] == [2, 4, 6]


def test_the_peer_opens_the_filter_decides_and_the_limit_refuses() -> None:
    table = _table(is_client=False, max_channels=2)
    table.channel_filter = lambda peer, name: name != b"secret"
    table.on_frame(ChannelOpenFrame(channel=1, name=b"a"), PEER, True)
    table.on_frame(ChannelOpenFrame(channel=3, name=b"secret"), PEER, True)
    table.on_frame(ChannelOpenFrame(channel=5, name=b"b"), PEER, True)
    table.on_frame(ChannelOpenFrame(channel=7, name=b"c"), PEER, True)  # past the limit of 2
    table.on_frame(ChannelOpenFrame(channel=1, name=b"a"), PEER, True)  # a retransmitted OPEN
    assert [core.name for core in table.accepted] == [b"a", b"b"]
    parts: list[bytes] = []
    table.write_control(parts, [], 10_000)
    answers = parse_frames_untrusted(b"".join(parts))
    assert [type(frame).__name__ for frame in answers] == [
        "ChannelAcceptFrame",
        "ChannelRefuseFrame",
        "ChannelAcceptFrame",
        "ChannelRefuseFrame",
    ]
    assert isinstance(answers[1], ChannelRefuseFrame) and "filter" in answers[1].reason
    assert isinstance(answers[3], ChannelRefuseFrame) and "limit 2" in answers[3].reason
    assert table.refused == 2 and table.frames_dropped == 1
    # While the connection closes, every open is refused.
    table.on_frame(ChannelOpenFrame(channel=9, name=b"d"), PEER, False)
    assert table.open_count == 2


def test_refused_open_raises_channel_refused_with_the_reason() -> None:
    table = _table()
    core = table.open(b"doc")
    table.on_frame(ChannelRefuseFrame(channel=core.channel_id, code=1, reason="not here"), PEER, True)
    assert core.state is ChannelState.CLOSED
    error = table.error_of(core)
    assert isinstance(error, ChannelRefused) and error.reason == "not here"
    # A late frame for it is a counted drop, not a violation.
    table.on_frame(DatagramFrame(data=b"late", channel=core.channel_id), PEER, True)
    assert table.frames_dropped == 1 and table.open_count == 0


def test_close_waits_for_acks_then_sends_channel_close_and_forgets() -> None:
    table = _table()
    core = _open(table, b"x")
    table.send_message(core, b"m" * 2500, True)
    frags = _drain(table)
    parts: list[bytes] = []
    table.write_control(parts, [], 1000)  # drain what opening queued
    table.close(core)
    assert core.state is ChannelState.CLOSING and not table.has_control()
    for fragment in frags:
        table.on_fragment_acked(fragment)
    assert core.state is ChannelState.CLOSED and table.open_count == 0
    parts = []
    table.write_control(parts, [], 1000)
    assert parse_frames_untrusted(b"".join(parts)) == [ChannelCloseFrame(channel=core.channel_id)]


def test_the_peer_closing_discards_what_was_unsent_and_ends_receive_after_the_rest() -> None:
    table = _table()
    core = _open(table, b"x")
    table.send_message(core, b"never sent", True)
    fragment = Fragment(ordered=True, sequence=0, flow_offset=0, message_length=2, offset=0, data=b"hi")
    table.on_fragment(_on(fragment, core))
    table.on_frame(ChannelCloseFrame(channel=core.channel_id), PEER, True)
    assert core.state is ChannelState.PEER_CLOSED and not table.has_data_to_send()
    assert table.receive_message(core) == b"hi"
    assert table.receive_message(core) is None
    assert isinstance(table.error_of(core), ClosedByPeer)
    table.close(core)
    assert table.open_count == 0


def _on(fragment: Fragment, core: ChannelCore) -> Fragment:
    return Fragment(
        ordered=fragment.ordered,
        sequence=fragment.sequence,
        flow_offset=fragment.flow_offset,
        message_length=fragment.message_length,
        offset=fragment.offset,
        data=fragment.data,
        channel=core.channel_id,
    )


# ---------------------------------------------------------------------------------- hostile frames

_IDS = st.integers(0, 12) | st.sampled_from([2**31, 2**32 - 1])
_FRAMES = st.one_of(
    st.builds(ChannelOpenFrame, channel=_IDS, name=st.binary(min_size=1, max_size=8)),
    st.builds(ChannelAcceptFrame, channel=_IDS),
    st.builds(ChannelRefuseFrame, channel=_IDS, code=st.integers(0, 255), reason=st.text(max_size=8)),
    st.builds(ChannelCloseFrame, channel=_IDS),
    st.builds(DatagramFrame, channel=_IDS, data=st.binary(max_size=8)),
    st.builds(MaxDataFrame, channel=_IDS, max_data=st.integers(0, 2**64 - 1)),
    st.builds(BlockedFrame, channel=_IDS, needed_max_data=st.integers(0, 2**64 - 1)),
    st.builds(
        Fragment,
        ordered=st.booleans(),
        sequence=st.integers(0, 3),
        flow_offset=st.integers(0, 2**20),
        message_length=st.integers(0, 3000),
        offset=st.integers(0, 3000),
        data=st.binary(max_size=64),
        channel=_IDS,
    ),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frames=st.lists(_FRAMES, max_size=40), is_client=st.booleans(), accepting=st.booleans())
def test_hostile_channel_frames_are_processed_dropped_or_a_violation_only(
    frames: list[object], is_client: bool, accepting: bool
) -> None:
    table = _table(is_client=is_client, max_channels=3, receive_window=4096, max_message_size=4096)
    mine = [table.open(b"mine"), table.open(b"mine too")]
    for frame in frames:
        try:
            if isinstance(frame, Fragment):
                if frame.channel == 0:
                    continue  # channel 0's fragments go to the connection's own receiver
                table.on_fragment(frame)
            elif frame.channel:  # type: ignore[attr-defined]
                table.on_frame(frame, PEER, accepting)
        except RemoteProtocolError:
            break  # the connection closes here: nothing more is processed
        assert table.open_count <= 3
        assert len(table.accepted) <= 3
        for core in list(table.accepted) + mine:
            assert core.receiver.held_bytes <= 4096 + 64
    # Whatever happened, what this side sends is well-formed frames.
    parts: list[bytes] = []
    table.write_control(parts, [], 100_000)
    parse_frames_untrusted(b"".join(parts))


def test_the_control_queue_is_bounded_against_an_open_flood() -> None:
    table = _table(is_client=False, max_channels=1)
    with pytest.raises(RemoteProtocolError, match="faster than"):
        for index in range(MAX_PENDING_CONTROL + 10):
            table.on_frame(ChannelOpenFrame(channel=2 * index + 1, name=b"n"), PEER, True)


def test_never_opened_ids_and_wrong_parity_are_violations() -> None:
    for frame in (
        DatagramFrame(data=b"x", channel=9),  # never opened by the peer
        ChannelAcceptFrame(channel=2),  # the peer's own parity (we are the client: odd)
        ChannelOpenFrame(channel=3, name=b"n"),  # our parity
        ChannelCloseFrame(channel=11),  # ours, but never opened
    ):
        with pytest.raises(RemoteProtocolError, match="channel"):
            _table(is_client=True).on_frame(frame, PEER, True)


# ---------------------------------------------------------------------------------- on the virtual network


def _vpair(net: VirtualNetwork, config: QuantumConfig | None = None):  # type: ignore[no-untyped-def]
    client_ep = net.add_endpoint(A, config=config)
    server_ep = net.add_endpoint(B, config=config)
    client = client_ep.connect(B, net.now)
    net.run_until(lambda: client.is_established and bool(server_ep.accepted), max_time=60)
    return client_ep, server_ep, client, server_ep.accepted.popleft()


@pytest.mark.parametrize("seed", [1, 2])
def test_opens_refusals_messages_and_closes_survive_15_percent_loss(seed: int) -> None:
    net = VirtualNetwork(seed, LinkProfile(delay=0.010, loss=0.15, jitter=0.004))
    client_ep, server_ep, client, server = _vpair(net, QuantumConfig(max_channels=8))
    server_ep.channel_filter = lambda peer, name: not name.startswith(b"no")
    names = [b"doc%d" % i for i in range(5)] + [b"no%d" % i for i in range(3)]
    cores = [client.channels.open(name) for name in names]
    client_ep.mark_dirty(client)
    net.run_until(lambda: all(c.state is not ChannelState.OPENING for c in cores), max_time=30)
    opened = [c for c in cores if c.state is ChannelState.OPEN]
    assert [c.name for c in opened] == names[:5]
    refused = [c for c in cores if c.state is ChannelState.CLOSED]
    assert all(isinstance(client.channels.error_of(c), ChannelRefused) for c in refused)
    far = {c.name: c for c in server.channels.accepted}
    rng = random.Random(seed)
    sent = {c.name: [rng.randbytes(rng.randint(0, 5000)) for _ in range(20)] for c in opened}
    for core in opened:
        for message in sent[core.name]:
            client.channels.send_message(core, message, True)
        client.channels.close(core)
    client_ep.mark_dirty(client)
    got: dict[bytes, list[bytes]] = {name: [] for name in sent}

    def everything() -> bool:
        for name, core in far.items():
            while (message := server.channels.receive_message(core)) is not None:
                got[name].append(message)
                server_ep.mark_dirty(server)
        return (
            got == sent
            and all(c.state is ChannelState.CLOSED for c in opened)
            and all(c.state is ChannelState.PEER_CLOSED for c in far.values())
        )

    net.run_until(everything, max_time=60)
    assert client.statistics().channels_open == 0 and client.is_established


def _inject(net: VirtualNetwork, server_ep, client, plaintext: bytes) -> None:  # type: ignore[no-untyped-def]
    server_ep.receive_datagram(client._seal(plaintext), A, net.now)


def test_sealed_frames_for_unknown_channels_close_the_connection_and_late_ones_are_counted() -> None:
    net = VirtualNetwork(5, LinkProfile(delay=0.005))
    client_ep, server_ep, client, server = _vpair(net)
    core = client.channels.open(b"x")
    client_ep.mark_dirty(client)
    net.run_until(lambda: core.state is ChannelState.OPEN, max_time=5)
    client.channels.close(core)
    client_ep.mark_dirty(client)
    net.run_until(lambda: bool(server.channels.accepted), max_time=5)
    far = server.channels.accepted.popleft()
    net.run_until(lambda: far.state is ChannelState.PEER_CLOSED, max_time=5)
    server.channels.close(far)  # the server's application is done with it too: forgotten
    assert server.statistics().channels_open == client.statistics().channels_open == 0
    # A late fragment of the closed channel: dropped and counted, the connection lives on.
    late = Fragment(ordered=True, sequence=5, flow_offset=0, message_length=1, offset=0, data=b"x", channel=1)
    before = server.statistics().channel_frames_dropped
    _inject(net, server_ep, client, encode_fragment_head(late) + late.data)
    net.run_until(lambda: server.statistics().channel_frames_dropped > before, max_time=1)
    assert server.is_established
    # A CHANNEL_OPEN with the server's own parity: a protocol violation, the connection closes.
    _inject(net, server_ep, client, encode_channel_open(2, b"forged"))
    assert isinstance(server.error, ClosedByProtocolViolation)
    net.run_until(lambda: client.is_closed and server.is_closed, max_time=10)


def test_a_close_for_a_never_opened_channel_is_a_violation_end_to_end() -> None:
    net = VirtualNetwork(6, LinkProfile(delay=0.005))
    _client_ep, server_ep, client, server = _vpair(net)
    _inject(net, server_ep, client, encode_channel_close(41))
    assert isinstance(server.error, ClosedByProtocolViolation)
    assert "never opened" in str(server.error)
