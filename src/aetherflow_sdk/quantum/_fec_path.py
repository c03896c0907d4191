"""The per-connection FEC state: when to protect, what parity to send, what to rebuild.

``_fec.py`` holds the Reed–Solomon groups (``FecEncoder``/``FecDecoder``) and the
adaptive ``FecPolicy``; this module is the glue a connection needs around them,
kept out of ``_connection.py``. Sans-I/O like the rest: every call takes ``now``.

The rules, in one place:

1. **Negotiation.** A side announces ``TransportParameters.fec`` when it can decode
   (``QuantumConfig.fec`` is not "off"). Parity is sent in a direction only if that
   direction's receiver announced it.
2. **When.** "on": every ack-eliciting DATA packet is protected. "auto" (the
   default): only while ``FecPolicy`` says the loss measured on this direction is
   worth the parity (on above 0.5 %, off below 0.1 % for a whole 5 s window), and with
   only the parity that loss needs: 10+1, 10+2 or 10+3 (``parity_for_loss``), 10 to 30 %
   more bytes. And only while the sender is *app-limited*: parity is bandwidth, and a
   sender whose window or pacer sets the rate (bulk: data still waits after each packet
   it sends) would pay for it with goodput, while a lost bulk packet only costs its
   retransmission (BBR does not slow down for random loss). So once ``BULK_RUN`` (20)
   data packets in a row left with more data waiting, "auto" sends no new parity; it
   resumes when no packet has left with data waiting for ``BULK_HOLD_FRACTION`` (1/2)
   x SRTT -- the queue drained: interactive traffic again, protected from its first
   packet after that. The loss is measured all along, so the policy is ready. While
   bulk, a packet that carries a small message (at most ``SMALL_MESSAGE`` bytes: an
   edit, a presence update on another channel) is still protected, alone in its group:
   edits that share a connection with a transfer keep their repair, the transfer's own
   packets carry no parity.
   "off": never, and this side does not decode either.
3. **Send path.** A protected packet carries ``FEC_PROTECTED``, ``fec_group`` and
   ``fec_index`` in its (AEAD-authenticated) header. A group closes at 10 packets or
   ``fec_group_timeout_fraction`` (1/8) x SRTT after its first packet (with at least
   2 parity packets while the measured loss exceeds 5 %); its parity
   shards go out as PARITY packets with their own numbers from the same packet-number
   space, sealed like DATA, ahead of new data.
4. **Parity and congestion control.** A parity packet uses the link, so it counts in
   flight (the window and the pacer meter it; its loss is a congestion signal like any
   other). It is NOT ack-eliciting and never retransmitted: a lost parity shard is
   only a lost chance to repair; the data it protects is retransmitted if needed.
   The receiver still lists parity packet numbers in its ACK ranges, so in-flight
   bytes drain normally.
5. **Loss detection waits for the parity.** The receiver rebuilds a lost packet only
   when the group's parity arrives; meanwhile its ACKs of later data would make RACK
   declare the packet lost (and retransmit it) for nothing. So a protected packet is
   judged by loss detection as if it had been sent with its group's last parity
   packet (``SentPacket.fec_guard_pn``/``fec_guard_time``): lost only when packets
   after the parity are acknowledged and it is still missing.
6. **Receive path.** An authenticated protected DATA packet also feeds
   ``FecDecoder.on_data``; an authenticated PARITY packet feeds ``on_parity``. Every
   rebuilt packet is processed exactly like a received DATA packet with its number
   (replay check first, then its frames; its number goes into the ACK ranges), so it
   is acknowledged and never retransmitted. ``BadPacket`` from the decoder drops the
   packet that caused it and changes nothing.
7. **Reporting repairs.** Repaired packets are acknowledged, so the sender would see
   a clean path and switch FEC off (flapping). The receiver therefore sends its
   cumulative count of repaired packets in a FEC_REPORT frame whenever it grew, and
   the sender feeds the difference to ``FecPolicy.on_peer_recovered``. The frame is
   cumulative, so it needs no retransmission; it rides in the next packet sent (an
   ACK goes out at once after a repair, because a rebuilt packet is out of order).
"""

from __future__ import annotations

from collections import deque
from typing import Final

from aetherflow_sdk.quantum._fec import (
    DATA_SHARDS,
    FecDecoder,
    FecEncoder,
    FecPolicy,
    ParityShard,
    RecoveredPacket,
    parity_loss_thresholds,
)
from aetherflow_sdk.quantum._messages import Fragment
from aetherflow_sdk.quantum._recovery import FEC_GUARD_PENDING, SentPacket

FEC_MODES: Final = ("auto", "on", "off")
MIN_GROUP_TIMEOUT: Final = 0.001  # 1 ms (RFC 9002 kGranularity): no timer finer than the clock's use
HIGH_LOSS: Final = 0.05  # above this measured loss, groups get at least 2 parity packets
MAX_PENDING_GROUPS: Final = 1024  # groups awaiting parity; a group closes within its timeout, so far fewer
BULK_RUN: Final = 2 * DATA_SHARDS
"""Data packets in a row sent with more data waiting before "auto" calls the sender bulk (rule 2):
two groups' worth, so a paste of a few packets stays protected like an edit."""
SMALL_MESSAGE: Final = 1200
"""While bulk, packets carrying a message at most this long are still protected (rule 2): it fits
one packet, so it is interactive (an edit), not a piece of the transfer."""
BULK_HOLD_FRACTION: Final = 0.5
"""The sender stops being bulk when nothing left with data waiting for this x SRTT: longer than
the sub-millisecond gaps of an application refilling its queue, shorter than the RTT over which
the last ACKs of a transfer come back (each ACK re-evaluates it)."""


class FecPath:
    """FEC state of one connection: this side's encoder and policy, and its decoder."""

    def __init__(self, *, mode: str, group_timeout_fraction: float) -> None:
        self.mode = mode
        self.group_timeout_fraction = group_timeout_fraction
        self.can_decode = mode != "off"
        """What this side announces in its transport parameters."""
        self.peer_can_decode = False
        self.encoder = FecEncoder()
        self.policy = FecPolicy(enabled=mode == "on")
        self._parity_thresholds = parity_loss_thresholds()
        self.decoder: FecDecoder | None = FecDecoder() if self.can_decode else None
        self._parity: deque[ParityShard] = deque()
        # Protected packets whose group's parity has not all been sent: group id -> packets.
        self._awaiting_parity: dict[int, list[SentPacket]] = {}
        self.parity_packets_sent = 0
        self.parity_bytes_sent = 0
        self.recovered = 0
        """Packets of the peer this side rebuilt (received direction)."""
        self._reported = 0
        self.peer_recovered = 0
        """The peer's latest report of our packets it rebuilt."""
        self._backlogged_run = 0  # data packets in a row sent with more data waiting
        self._last_backlogged = 0.0
        self._smoothed_rtt = 0.0
        self.bulk_periods = 0
        """Times "auto" saw the sender become window/pacing-limited and held parity back."""

    # -- sending ----------------------------------------------------------------------------

    @property
    def sending(self) -> bool:
        """Whether new ack-eliciting packets are protected now.

        "on" means always: the policy still measures the loss (it sizes the groups' parity),
        but only "auto" lets it switch protection off.
        """
        if not self.peer_can_decode:
            return False
        if self.mode == "on":
            return True
        return self.mode == "auto" and self.policy.enabled and not self.bulk

    @property
    def may_protect(self) -> bool:
        """Whether the next ack-eliciting packet may be protected (it must leave room for parity)."""
        if self.sending:
            return True
        return self.peer_can_decode and self.mode == "auto" and self.policy.enabled

    def protects(self, payload: list[object]) -> bool:
        """Whether to protect a packet carrying ``payload`` (its retransmittable items).

        All of them while :attr:`sending`; while bulk only those carrying a small message."""
        if self.sending:
            return True
        return self.may_protect and any(
            isinstance(item, Fragment) and item.message_length <= SMALL_MESSAGE for item in payload
        )

    @property
    def bulk(self) -> bool:
        """The sender is window- or pacing-limited (data waits after each packet): rule 2."""
        return self._backlogged_run >= BULK_RUN

    def protect(
        self, packet_number: int, plaintext: bytes, smoothed_rtt: float, now: float
    ) -> tuple[int, int]:
        """Put an outgoing packet into the open group; its header's (fec_group, fec_index)."""
        self.encoder.group_timeout = max(self.group_timeout_fraction * smoothed_rtt, MIN_GROUP_TIMEOUT)
        return self.encoder.protect(packet_number, plaintext, now)

    def track(self, packet: SentPacket, group_id: int) -> None:
        """Loss detection waits for this packet's group's parity (rule 5)."""
        packet.fec_guard_pn = FEC_GUARD_PENDING
        self._awaiting_parity.setdefault(group_id, []).append(packet)
        if len(self._awaiting_parity) > MAX_PENDING_GROUPS:  # cannot happen with a live timer
            self._release(next(iter(self._awaiting_parity)), -1, 0.0)

    def on_data_sent(
        self,
        app_bytes: int,
        wire_bytes: int,
        now: float,
        *,
        backlogged: bool = False,
        smoothed_rtt: float = 0.0,
    ) -> None:
        """An ack-eliciting DATA packet left (protected or not): the policy's denominator.

        ``backlogged``: more application data was waiting to be sent after it (so the
        congestion window or the pacer, not the application, held it back)."""
        self.policy.on_packet_sent(app_bytes, wire_bytes, now)
        self._smoothed_rtt = smoothed_rtt
        if backlogged:
            self._backlogged_run += 1
            self._last_backlogged = now
            if self._backlogged_run == BULK_RUN:
                self.bulk_periods += 1
        else:
            self._end_bulk_if_drained(now)

    def _end_bulk_if_drained(self, now: float) -> None:
        if self._backlogged_run and now - self._last_backlogged >= max(
            BULK_HOLD_FRACTION * self._smoothed_rtt, MIN_GROUP_TIMEOUT
        ):
            self._backlogged_run = 0

    def next_parity(self, now: float) -> ParityShard | None:
        """The next parity shard to send (closing an expired group), without removing it."""
        if not self._parity and not self.encoder.has_parity_work():
            return None  # the usual case without FEC: nothing open, nothing queued
        self.poll(now)
        return self._parity[0] if self._parity else None

    def poll(self, now: float) -> None:
        """Close the open group if its timer expired; its parity joins the queue."""
        self._parity.extend(self.encoder.poll_parity(now))

    def on_parity_sent(self, shard: ParityShard, packet_number: int, wire_bytes: int, now: float) -> None:
        """``shard`` (the one ``next_parity`` returned) left as packet ``packet_number``."""
        self._parity.popleft()
        self.parity_packets_sent += 1
        self.parity_bytes_sent += wire_bytes
        self.policy.on_parity_sent(wire_bytes, now)
        packets = self._awaiting_parity.get(shard.group_id)
        if packets is None:
            return
        for packet in packets:
            packet.fec_guard_pn, packet.fec_guard_time = packet_number, now
        if shard.index - DATA_SHARDS + 1 >= shard.parity_count:
            del self._awaiting_parity[shard.group_id]

    def _release(self, group_id: int, packet_number: int, now: float) -> None:
        for packet in self._awaiting_parity.pop(group_id, []):
            packet.fec_guard_pn, packet.fec_guard_time = packet_number, now

    def get_timer(self) -> float | None:
        """When the open group must close (its parity is then due)."""
        return self.encoder.get_timer()

    def on_packets_lost(self, count: int, now: float) -> None:
        self.policy.on_packets_lost(count, now)

    def on_peer_report(self, total: int, now: float) -> None:
        """A FEC_REPORT frame: the peer rebuilt ``total`` of our packets so far."""
        if total > self.peer_recovered:
            self.policy.on_peer_recovered(total - self.peer_recovered, now)
            self.peer_recovered = total

    def update(self, now: float) -> None:
        """Re-evaluate the policy and the groups' parity (on every ACK, so kept cheap)."""
        if not self.peer_can_decode or self.mode == "off":
            return  # no parity ever goes out in this direction
        self._end_bulk_if_drained(now)
        loss = self.policy.loss_rate(now)
        if self.mode == "auto":
            self.policy.update(now, loss)
            # Send only the parity the measured loss calls for (10+1 up to 1.05 %, 10+2 up to
            # 4.9 %, the full 10+3 above: ``parity_loss_thresholds``): parity is bandwidth
            # taken from the data.
            self.encoder.max_parity = 1 + sum(loss > t for t in self._parity_thresholds)
        # A lone edit with one parity packet is lost with it 1 % of the time at 10 % loss
        # (the whole p99); a second parity packet makes that 0.1 % (``FecEncoder.min_parity``).
        self.encoder.min_parity = 2 if loss > HIGH_LOSS else 1

    # -- receiving --------------------------------------------------------------------------

    def on_data(
        self, group_id: int, index: int, packet_number: int, plaintext: bytes, now: float
    ) -> list[RecoveredPacket]:
        """An authenticated protected DATA packet; raises only BadPacket."""
        if self.decoder is None:
            return []
        return self.decoder.on_data(group_id, index, packet_number, plaintext, now)

    def on_parity(self, group_id: int, index: int, payload: bytes, now: float) -> list[RecoveredPacket]:
        """An authenticated PARITY packet's payload; raises only BadPacket."""
        if self.decoder is None:
            return []
        return self.decoder.on_parity(group_id, index, payload, now)

    def report_due(self) -> bool:
        return self.recovered > self._reported

    def take_report(self) -> int:
        """The cumulative count to put in a FEC_REPORT frame now."""
        self._reported = self.recovered
        return self.recovered
