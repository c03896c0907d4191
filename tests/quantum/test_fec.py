"""Reed–Solomon FEC 10+3: encoder groups and timer, decoder recovery and bounds, and the policy."""

from __future__ import annotations

import contextlib
import itertools
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aetherflow_sdk._errors import BadPacket, LocalProtocolError
from aetherflow_sdk.quantum._fec import (
    FINISHED_MEMORY_FACTOR,
    MAX_PLAINTEXT,
    FecDecoder,
    FecEncoder,
    FecPolicy,
    ParityShard,
    RecoveredPacket,
    parity_count,
    parity_for_loss,
    parity_loss_thresholds,
)

# A shard as the connection would see it: ("data", index, packet number, plaintext)
# or ("parity", index, payload).
Shard = tuple[str, int, int, bytes]


def _group(
    rng: random.Random, k: int = 10, *, first_pn: int = 100, max_size: int = 1400
) -> tuple[int, list[Shard]]:
    """Protect ``k`` random packets with a fresh encoder; return (group id, the k + parity shards)."""
    encoder = FecEncoder(group_timeout=0.010)
    shards: list[Shard] = []
    group_id = -1
    for n in range(k):
        plaintext = rng.randbytes(rng.randrange(0, max_size + 1))
        group_id, index = encoder.protect(first_pn + n, plaintext, now=0.0)
        assert index == n
        shards.append(("data", index, first_pn + n, plaintext))
    parity = encoder.poll_parity(now=1.0)  # closes a partial group too
    assert len(parity) == parity_count(k)
    assert {p.group_id for p in parity} == {group_id}
    shards += [("parity", p.index, -1, p.payload) for p in parity]
    return group_id, shards


def _deliver(
    decoder: FecDecoder, group_id: int, shards: list[Shard], now: float = 0.0
) -> list[RecoveredPacket]:
    out: list[RecoveredPacket] = []
    for kind, index, pn, body in shards:
        if kind == "data":
            out += decoder.on_data(group_id, index, pn, body, now)
        else:
            out += decoder.on_parity(group_id, index, body, now)
    return out


# ---- recovery ----------------------------------------------------------------------------


def test_any_three_of_thirteen_lost_recovers_all_ten() -> None:
    seed = 31
    rng = random.Random(seed)
    group_id, shards = _group(rng)
    subsets = list(itertools.combinations(range(13), 3))
    assert len(subsets) == 286
    for lost in subsets:
        kept = [s for i, s in enumerate(shards) if i not in lost]
        rng.shuffle(kept)  # any arrival order
        recovered = _deliver(FecDecoder(), group_id, kept)
        expected = {(s[2], s[3]) for i, s in enumerate(shards) if i in lost and s[0] == "data"}
        got = [(r.packet_number, r.plaintext) for r in recovered]
        assert len(got) == len(set(got)), f"seed={seed} lost={lost}: duplicates"
        assert set(got) == expected, f"seed={seed} lost={lost}"


def test_four_lost_recovers_nothing() -> None:
    seed = 32
    rng = random.Random(seed)
    group_id, shards = _group(rng)
    for lost in itertools.combinations(range(13), 4):
        kept = [s for i, s in enumerate(shards) if i not in lost]
        rng.shuffle(kept)
        decoder = FecDecoder()
        assert _deliver(decoder, group_id, kept) == [], f"seed={seed} lost={lost}"
        assert decoder.statistics().decodes == 0
        if any(shards[i][0] == "data" for i in lost):
            assert decoder.tracked_groups == 1  # still waiting; loss recovery will resend


@settings(max_examples=150, deadline=None)
@given(
    sizes=st.lists(st.integers(0, 1400), min_size=1, max_size=10),
    seed=st.integers(0, 2**32 - 1),
)
def test_random_sizes_and_losses_up_to_parity_count(sizes: list[int], seed: int) -> None:
    rng = random.Random(seed)
    encoder = FecEncoder()
    shards: list[Shard] = []
    group_id = 0
    for n, size in enumerate(sizes):
        plaintext = rng.randbytes(size)
        group_id, index = encoder.protect(n, plaintext, now=0.0)
        shards.append(("data", index, n, plaintext))
    parity = encoder.poll_parity(now=encoder.get_timer() or 0.0)
    shards += [("parity", p.index, -1, p.payload) for p in parity]
    lost = rng.sample(range(len(shards)), rng.randint(0, len(parity)))
    kept = [s for i, s in enumerate(shards) if i not in lost]
    rng.shuffle(kept)
    recovered = _deliver(FecDecoder(), group_id, kept)
    got = [(r.packet_number, r.plaintext) for r in recovered]
    every = {(s[2], s[3]) for s in shards if s[0] == "data"}
    lost_data = {(shards[i][2], shards[i][3]) for i in lost if shards[i][0] == "data"}
    # Every lost packet comes back, nothing comes back twice, and nothing is invented.
    # (With spare shards, a packet that is merely late may be rebuilt before it arrives.)
    assert lost_data <= set(got) <= every, f"seed={seed}"
    assert len(got) == len(set(got)), f"seed={seed}"


# ---- the encoder's groups and timer --------------------------------------------------------


def test_parity_scales_with_group_size() -> None:
    assert [parity_count(k) for k in range(1, 11)] == [1, 1, 1, 2, 2, 2, 3, 3, 3, 3]


def test_group_closes_at_ten_packets() -> None:
    encoder = FecEncoder(group_timeout=0.010)
    for n in range(10):
        assert encoder.protect(n, b"x" * n, now=0.001 * n) == (0, n)
    assert encoder.get_timer() is None  # closed by count, no timer left
    parity = encoder.poll_parity(now=0.009)
    assert [p.index for p in parity] == [10, 11, 12]
    assert encoder.protect(10, b"next", now=0.009) == (1, 0)
    assert encoder.get_timer() == pytest.approx(0.019)


def test_partial_group_timer_protects_a_single_packet() -> None:
    encoder = FecEncoder(group_timeout=0.010)
    group_id, _ = encoder.protect(7, b"one edit", now=1.0)
    assert encoder.get_timer() == pytest.approx(1.010)
    assert encoder.poll_parity(now=1.005) == []  # not yet
    parity = encoder.poll_parity(now=1.010)
    assert len(parity) == 1 and parity[0].index == 10
    assert encoder.get_timer() is None
    assert encoder.statistics().partial_groups == 1
    # The data packet is lost; its lone parity rebuilds it.
    decoder = FecDecoder()
    assert decoder.on_parity(group_id, parity[0].index, parity[0].payload, now=1.03) == [
        RecoveredPacket(packet_number=7, plaintext=b"one edit")
    ]


def test_expired_group_closes_when_the_next_packet_comes() -> None:
    encoder = FecEncoder(group_timeout=0.005)
    encoder.protect(1, b"a", now=0.0)
    encoder.protect(2, b"b", now=0.001)
    assert encoder.protect(3, b"c", now=0.006) == (1, 0)  # the timer had passed: a new group
    assert [p.group_id for p in encoder.poll_parity(now=0.006)] == [0]


def test_group_timeout_is_settable_and_validated() -> None:
    encoder = FecEncoder()
    encoder.group_timeout = 0.025 / 4  # srtt/4
    assert encoder.group_timeout == pytest.approx(0.00625)
    with pytest.raises(LocalProtocolError):
        encoder.group_timeout = 0.0
    with pytest.raises(LocalProtocolError):
        encoder.protect(1, bytes(MAX_PLAINTEXT + 1), now=0.0)


def test_group_ids_wrap_at_u32() -> None:
    encoder = FecEncoder(first_group_id=2**32 - 1, group_timeout=0.001)
    assert encoder.protect(1, b"a", now=0.0)[0] == 2**32 - 1
    assert encoder.protect(2, b"b", now=1.0)[0] == 0


# ---- the decoder's edge cases ------------------------------------------------------------


def test_out_of_order_and_duplicate_shards() -> None:
    seed = 33
    rng = random.Random(seed)
    group_id, shards = _group(rng)
    data, parity = shards[:10], shards[10:]
    decoder = FecDecoder()
    # Parity first, duplicated; then 7 data packets, one twice.
    assert _deliver(decoder, group_id, parity + parity) == []
    assert _deliver(decoder, group_id, [*data[3:9], data[5]]) == []
    recovered = _deliver(decoder, group_id, [data[9]])
    assert sorted(r.packet_number for r in recovered) == [100, 101, 102], f"seed={seed}"
    # Late shards of a finished group are ignored: nothing is recovered twice.
    assert _deliver(decoder, group_id, data[:3] + parity) == []
    assert decoder.statistics().recovered == 3
    assert decoder.tracked_groups == 0


def test_complete_group_needs_no_decode() -> None:
    group_id, shards = _group(random.Random(34))
    decoder = FecDecoder()
    assert _deliver(decoder, group_id, shards) == []
    assert decoder.statistics().decodes == 0
    assert decoder.tracked_groups == 0


def _valid_parity() -> tuple[int, ParityShard]:
    encoder = FecEncoder()
    group_id, _ = encoder.protect(1, b"hello", now=0.0)
    encoder.protect(2, b"world!", now=0.0)
    return group_id, encoder.poll_parity(now=1.0)[0]


@pytest.mark.parametrize(
    "mutate",
    [
        lambda p: p[:3],  # shorter than the header
        lambda p: b"\x00" + p[1:],  # k = 0
        lambda p: b"\x0b" + p[1:],  # k = 11 > 10
        lambda p: p[:1] + b"\x00" + p[2:],  # parity count 0
        lambda p: p[:1] + b"\x04" + p[2:],  # parity count 4 > 3
        lambda p: p[:-1],  # block shorter than its length field
        lambda p: p + b"\x00",  # longer
        lambda p: p[:2] + b"\x00\x05" + p[4:9],  # block too short for a block header
    ],
)
def test_garbage_parity_raises_bad_packet(mutate: object) -> None:
    group_id, shard = _valid_parity()
    assert callable(mutate)
    with pytest.raises(BadPacket):
        FecDecoder().on_parity(group_id, shard.index, mutate(shard.payload), now=0.0)


def test_bad_indices_raise_bad_packet() -> None:
    group_id, shard = _valid_parity()
    decoder = FecDecoder()
    for index in (9, 13, 255, -1):
        with pytest.raises(BadPacket):
            decoder.on_parity(group_id, index, shard.payload, now=0.0)
    with pytest.raises(BadPacket):
        decoder.on_parity(group_id, 11, shard.payload, now=0.0)  # k=2 has a single parity shard
    with pytest.raises(BadPacket):
        decoder.on_data(group_id, 10, 5, b"x", now=0.0)


def test_contradicting_shards_are_rejected_without_harm() -> None:
    group_id, shard = _valid_parity()  # a 2-packet group: b"hello" (pn 1), b"world!" (pn 2)
    # Data that arrived before any parity (k unknown, so accepted) and that the parity
    # then contradicts: the parity is rejected and the group keeps what it had.
    for index, plaintext in ((0, b"far too long for the blocks of this group"), (5, b"hi")):
        decoder = FecDecoder()
        assert decoder.on_data(group_id, 1, 2, b"world!", now=0.0) == []
        assert decoder.on_data(group_id, index, 9, plaintext, now=0.0) == []
        with pytest.raises(BadPacket):
            decoder.on_parity(group_id, shard.index, shard.payload, now=0.0)
        assert decoder.tracked_groups == 1 and decoder.statistics().decodes == 0
    # Parity first, then data that contradicts it: the data is rejected.
    decoder = FecDecoder()
    assert decoder.on_parity(group_id, shard.index, shard.payload, now=0.0) == []
    with pytest.raises(BadPacket):
        decoder.on_data(group_id, 2, 3, b"x", now=0.0)  # index 2 of a 2-packet group
    with pytest.raises(BadPacket):
        decoder.on_data(group_id, 1, 2, b"longer than any block of the group", now=0.0)
    # ... and the group still decodes from the good shards.
    assert decoder.on_data(group_id, 1, 2, b"world!", now=0.0) == [
        RecoveredPacket(packet_number=1, plaintext=b"hello")
    ]


@settings(max_examples=300, deadline=None)
@given(payload=st.binary(max_size=64), index=st.integers(0, 255))
def test_any_parity_bytes_parse_or_raise_bad_packet(payload: bytes, index: int) -> None:
    decoder = FecDecoder()
    with contextlib.suppress(BadPacket):
        decoder.on_parity(1, index, payload, now=0.0)


def test_memory_is_bounded_under_a_flood_of_group_ids() -> None:
    seed = 35
    rng = random.Random(seed)
    decoder = FecDecoder(max_groups=32)
    _, shard = _valid_parity()
    for n in range(20_000):
        group_id = rng.getrandbits(32)
        if n % 2:
            decoder.on_data(group_id, rng.randrange(10), n, b"x" * 100, now=n * 1e-4)
        else:
            decoder.on_parity(group_id, shard.index, shard.payload, now=n * 1e-4)
        assert decoder.tracked_groups <= 32, f"seed={seed}"
        assert len(decoder._finished) <= FINISHED_MEMORY_FACTOR * 32
    assert decoder.statistics().evicted_incomplete > 0


def test_old_groups_expire() -> None:
    decoder = FecDecoder(group_lifetime=1.0)
    decoder.on_data(5, 0, 1, b"a", now=0.0)
    decoder.on_data(6, 0, 2, b"b", now=0.5)
    assert decoder.tracked_groups == 2
    decoder.on_data(7, 0, 3, b"c", now=1.2)
    assert decoder.tracked_groups == 2  # group 5 is gone
    # A late parity for an expired group does nothing.
    _, shard = _valid_parity()
    assert decoder.on_parity(5, shard.index, shard.payload, now=1.3) == []


# ---- policy ----------------------------------------------------------------------------


def _run_policy(policy: FecPolicy, loss: float, seconds: float, seed: int, start: float = 0.0) -> list[bool]:
    """50 packets/s with seeded random loss; returns ``enabled`` after every packet."""
    rng = random.Random(seed)
    states = []
    for n in range(int(seconds * 50)):
        now = start + n / 50
        policy.on_packet_sent(200, 248, now)
        if rng.random() < loss:
            if policy.enabled:
                policy.on_peer_recovered(1, now + 0.04)  # FEC repaired it; the peer says so
            else:
                policy.on_packets_lost(1, now + 0.04)
        states.append(policy.update(now))
    return states


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_policy_turns_on_under_loss_and_stays_on(seed: int) -> None:
    policy = FecPolicy()
    states = _run_policy(policy, 0.02, 30.0, seed)
    first_on = states.index(True)
    assert first_on < 50 * 10, f"seed={seed}: took {first_on / 50:.1f} s"
    # Repaired losses still count, so it does not flap off once FEC works.
    assert all(states[first_on:]), f"seed={seed}"


@pytest.mark.parametrize("seed", [1, 2])
def test_policy_stays_off_on_a_clean_path_and_turns_off_when_it_clears(seed: int) -> None:
    policy = FecPolicy()
    assert not any(_run_policy(policy, 0.0, 20.0, seed))
    lossy = _run_policy(policy, 0.05, 10.0, seed, start=20.0)
    assert lossy[-1], f"seed={seed}"
    clean = _run_policy(policy, 0.0, 15.0, seed, start=30.0)
    assert not clean[-1], f"seed={seed}"
    assert clean[0], "hysteresis: one clean moment does not turn it off"


def test_policy_counts_wire_bytes_against_app_bytes() -> None:
    policy = FecPolicy()
    for _ in range(10):
        policy.on_packet_sent(1000, 1032, now=0.0)
    for _ in range(3):
        policy.on_parity_sent(1050, now=0.0)
    stats = policy.statistics(now=0.0)
    assert stats.app_bytes == 10_000
    assert stats.wire_overhead == pytest.approx((10_320 + 3_150) / 10_000)
    with pytest.raises(LocalProtocolError):
        FecPolicy(enable_above=0.001, disable_below=0.01)


def test_more_parity_than_the_minimum_is_accepted_and_helps() -> None:
    """A lone packet with 2 parity shards (``min_parity``) survives losing one of them."""
    encoder = FecEncoder()
    encoder.min_parity = 2
    group_id, _ = encoder.protect(7, b"edit", now=0.0)
    parity = encoder.poll_parity(now=1.0)
    assert [p.index for p in parity] == [10, 11]
    decoder = FecDecoder()
    assert decoder.on_parity(group_id, parity[1].index, parity[1].payload, now=0.0) == [
        RecoveredPacket(packet_number=7, plaintext=b"edit")
    ]
    with pytest.raises(LocalProtocolError):
        encoder.min_parity = 4


# ---- parity sized to the measured loss ------------------------------------------------------


def test_parity_for_loss_follows_the_binomial_tail() -> None:
    # 10+1 repairs a lost packet unless one of the 10 others is lost too: 9.6 % at 1 % loss.
    assert [parity_for_loss(p) for p in (0.0, 0.005, 0.01, 0.02, 0.04, 0.05, 0.10, 0.5)] == [
        1,
        1,
        1,
        2,
        2,
        3,
        3,
        3,
    ]


def test_the_per_ack_loss_bands_give_the_same_parity_as_the_binomial_tail() -> None:
    seed = 7
    rng = random.Random(seed)
    thresholds = parity_loss_thresholds()
    edges = [t + d for t in thresholds for d in (-1e-12, 0.0, 1e-12)]
    for loss in [rng.random() * 0.2 for _ in range(2000)] + edges:
        banded = 1 + sum(loss > t for t in thresholds)
        assert banded == parity_for_loss(loss), f"seed={seed} loss={loss!r}"


def test_a_full_group_sends_only_max_parity_and_still_repairs_that_many_losses() -> None:
    rng = random.Random(5)
    for max_parity in (1, 2, 3):
        encoder = FecEncoder(group_timeout=0.010)
        encoder.max_parity = max_parity
        packets = [(200 + n, rng.randbytes(rng.randrange(1, 1400))) for n in range(10)]
        group_id = -1
        for pn, plaintext in packets:
            group_id, _ = encoder.protect(pn, plaintext, now=0.0)
        parity = encoder.poll_parity(now=0.0)
        assert len(parity) == max_parity
        for lost in itertools.combinations(range(10), max_parity):
            decoder = FecDecoder()
            recovered: list[RecoveredPacket] = []
            for index, (pn, plaintext) in enumerate(packets):
                if index not in lost:
                    recovered += decoder.on_data(group_id, index, pn, plaintext, 0.0)
            for shard in parity:
                recovered += decoder.on_parity(group_id, shard.index, shard.payload, 0.0)
            assert sorted((r.packet_number, r.plaintext) for r in recovered) == sorted(
                packets[i] for i in lost
            ), f"max_parity={max_parity} lost={lost}"


def test_max_parity_is_validated_and_min_parity_wins() -> None:
    encoder = FecEncoder()
    with pytest.raises(LocalProtocolError, match="max_parity"):
        encoder.max_parity = 0
    encoder.max_parity = 1
    encoder.min_parity = 2
    for n in range(10):
        encoder.protect(n, b"x", now=0.0)
    assert len(encoder.poll_parity(now=0.0)) == 2
