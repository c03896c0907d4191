"""Every connection state transition, in one table.

Rule 1: everything that changes a connection's state goes through
:func:`transition`; the table below is the whole state machine.
Rule 2: a (state, event) pair missing from the table is a bug in the caller,
reported as one clear LocalProtocolError naming both.

::

    client: INITIAL_SENT --hello--> CONFIRMING --confirmed--> ESTABLISHED
    server: HELLO_SENT --finish--> ESTABLISHED
    ESTABLISHED --close--> SHUTTING_DOWN --all_delivered--> CLOSING --drained--> CLOSED
    any open state --abort--> CLOSING;  --peer_closed--> DRAINING --drained--> CLOSED
    any state but CLOSED --timeout--> CLOSED;  --failed--> CLOSED (the endpoint gave up on it)
"""

from __future__ import annotations

import enum

from aetherflow_sdk._errors import LocalProtocolError


class ConnectionState(enum.Enum):
    INITIAL_SENT = "initial_sent"  # client: INITIAL sent, waiting for RETRY or SERVER_HELLO
    HELLO_SENT = "hello_sent"  # server: SERVER_HELLO sent, waiting for CLIENT_FINISH
    CONFIRMING = "confirming"  # client: FINISH sent, may send data, waiting for HANDSHAKE_DONE
    ESTABLISHED = "established"
    SHUTTING_DOWN = "shutting_down"  # graceful close: delivering what was already sent
    CLOSING = "closing"  # CLOSE sent; answering stray packets with CLOSE until drained
    DRAINING = "draining"  # peer's CLOSE received; silent until drained
    CLOSED = "closed"


class ConnectionEvent(enum.Enum):
    HELLO_RECEIVED = "hello_received"
    FINISH_RECEIVED = "finish_received"
    CONFIRMED = "confirmed"
    CLOSE_REQUESTED = "close_requested"
    ALL_DELIVERED = "all_delivered"
    ABORT = "abort"
    PEER_CLOSED = "peer_closed"
    TIMEOUT = "timeout"
    FAILED = "failed"  # its processing kept raising: the endpoint drops it without a word
    DRAINED = "drained"


S = ConnectionState
E = ConnectionEvent

TRANSITIONS: dict[tuple[ConnectionState, ConnectionEvent], ConnectionState] = {
    (S.INITIAL_SENT, E.HELLO_RECEIVED): S.CONFIRMING,
    (S.HELLO_SENT, E.FINISH_RECEIVED): S.ESTABLISHED,
    (S.CONFIRMING, E.CONFIRMED): S.ESTABLISHED,
    # A graceful close before the handshake finished has nothing to deliver.
    (S.INITIAL_SENT, E.CLOSE_REQUESTED): S.CLOSED,
    (S.HELLO_SENT, E.CLOSE_REQUESTED): S.CLOSED,
    (S.CONFIRMING, E.CLOSE_REQUESTED): S.SHUTTING_DOWN,
    (S.ESTABLISHED, E.CLOSE_REQUESTED): S.SHUTTING_DOWN,
    (S.SHUTTING_DOWN, E.ALL_DELIVERED): S.CLOSING,
    (S.INITIAL_SENT, E.ABORT): S.CLOSED,
    (S.HELLO_SENT, E.ABORT): S.CLOSED,
    (S.CONFIRMING, E.ABORT): S.CLOSING,
    (S.ESTABLISHED, E.ABORT): S.CLOSING,
    (S.SHUTTING_DOWN, E.ABORT): S.CLOSING,
    (S.CONFIRMING, E.PEER_CLOSED): S.DRAINING,
    (S.ESTABLISHED, E.PEER_CLOSED): S.DRAINING,
    (S.SHUTTING_DOWN, E.PEER_CLOSED): S.DRAINING,
    (S.CLOSING, E.PEER_CLOSED): S.DRAINING,
    (S.CLOSING, E.DRAINED): S.CLOSED,
    (S.DRAINING, E.DRAINED): S.CLOSED,
    **{(state, E.TIMEOUT): S.CLOSED for state in ConnectionState if state is not S.CLOSED},
    **{(state, E.FAILED): S.CLOSED for state in ConnectionState if state is not S.CLOSED},
}

HANDSHAKING = frozenset({S.INITIAL_SENT, S.HELLO_SENT})
CAN_SEND_DATA = frozenset({S.CONFIRMING, S.ESTABLISHED, S.SHUTTING_DOWN})
ACCEPTS_NEW_MESSAGES = frozenset({S.INITIAL_SENT, S.HELLO_SENT, S.CONFIRMING, S.ESTABLISHED})
OPEN = frozenset({S.INITIAL_SENT, S.HELLO_SENT, S.CONFIRMING, S.ESTABLISHED, S.SHUTTING_DOWN})


def transition(state: ConnectionState, event: ConnectionEvent) -> ConnectionState:
    """The state after ``event`` in ``state``; LocalProtocolError if the table has no such move."""
    try:
        return TRANSITIONS[(state, event)]
    except KeyError:
        raise LocalProtocolError(
            f"connection cannot handle event {event.value!r} in state {state.value!r}"
        ) from None
