"""``aetherflow relay``: run a relay.

Every setting comes from, in this order of precedence: a command-line flag, an environment
variable ``AETHERFLOW_RELAY_<NAME>`` (``AETHERFLOW_RELAY_MAX_CLIENTS=500``), a TOML file
(``--config relay.toml``, keys as the flag names with underscores), and the default. A bad value
from any of them ends in one line naming where it came from, and exit status 2.

With ``--data-dir DIR`` the relay is also a persistence peer (``_serve.py``): a node with the
relay's key (``DIR/identity.key``) on ``--serve-port`` hosts the documents it is allowed to.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import signal
import tomllib
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import anyio
import attrs

from aetherflow_node._cli import Subcommand
from aetherflow_node._datadir import IDENTITY_FILE
from aetherflow_sdk._errors import LocalProtocolError
from aetherflow_sdk._identity import Identity, format_node_id, parse_node_id

if TYPE_CHECKING:
    from aetherflow_relay._serve import DocumentHost

ENV_PREFIX: Final = "AETHERFLOW_RELAY_"


def _address(text: str) -> tuple[str, int]:
    host, sep, port = str(text).strip().rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"expected HOST:PORT, e.g. 0.0.0.0:3340, got {text!r}")
    return host, int(port)


def _boolean(value: str | bool) -> bool:
    if isinstance(value, bool):
        return value
    lowered = str(value).strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"expected true or false, got {value!r}")


def _issuers(value: str | list[str] | tuple[str, ...]) -> tuple[bytes, ...]:
    items = (
        list(value)
        if isinstance(value, (list, tuple))
        else [v for v in str(value).replace(",", " ").split() if v]
    )
    return tuple(parse_node_id(str(item)) for item in items)


def _port(value: str | int) -> int:
    text = str(value).strip()
    if not text.isdigit() or not 0 <= int(text) < 65536:
        raise ValueError(f"expected a UDP port 0..65535, got {value!r}")
    return int(text)


def _positive_int(value: str | int) -> int:
    text = str(value).strip()
    if not text.isdigit() or int(text) <= 0:
        raise ValueError(f"expected a whole number > 0, got {value!r}")
    return int(text)


_BYTES: Final = re.compile(r"^(\d+)\s*([kmg]?)(i?b)?$", re.IGNORECASE)
_BYTE_UNITS: Final = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


def _bytes(value: str | int) -> int:
    """``65536``, ``64k``, ``64MiB``, ``1G`` (binary units) -> bytes, > 0."""
    match = _BYTES.match(str(value).strip())
    if match is None:
        raise ValueError(f"expected a number of bytes like 65536, 64k or 64MiB, got {value!r}")
    amount = int(match.group(1)) * _BYTE_UNITS[match.group(2).lower()]
    if amount <= 0:
        raise ValueError(f"a quota must be > 0 bytes, got {value!r}")
    return amount


def _document_ids(value: str | list[str] | tuple[str, ...]) -> tuple[str, ...]:
    items = (
        list(value)
        if isinstance(value, (list, tuple))
        else [v for v in str(value).replace(",", " ").split() if v]
    )
    found = []
    for item in items:
        text = str(item).strip()
        try:
            uuid.UUID(text)
        except ValueError:
            hint = " (that is a ticket: give its document ID)" if text.startswith("af1") else ""
            raise ValueError(f"expected a document ID (a UUID), got {text!r}{hint}") from None
        found.append(text)
    return tuple(found)


@attrs.frozen(kw_only=True)
class _Setting:
    name: str
    parse: Callable[[Any], Any]
    default: Any
    help: str


SETTINGS: Final = (
    _Setting(name="listen", parse=_address, default="0.0.0.0:3340", help="UDP HOST:PORT to serve on"),
    _Setting(name="identity", parse=lambda v: Path(v) if v else None, default=None,
             help="file holding the relay's private key (created if missing; default: a new key each run)"),
    _Setting(name="require_token", parse=_boolean, default=False,
             help="accept only nodes with a relay token from a --trust issuer"),
    _Setting(name="trust", parse=_issuers, default=(), help="node IDs of trusted token issuers (repeatable)"),
    _Setting(name="max_clients", parse=int, default=10_000, help="registered clients at most"),
    _Setting(name="max_pending", parse=int, default=1_000, help="unregistered connections at most"),
    _Setting(name="rate", parse=float, default=2_000_000.0, help="bytes/s forwarded per client"),
    _Setting(name="burst", parse=float, default=256_000.0, help="bytes a client may send at once"),
    _Setting(name="queue_packets", parse=int, default=64, help="packets queued per client over its rate"),
    _Setting(name="max_packet_size", parse=int, default=1400, help="largest packet forwarded"),
    _Setting(name="metrics", parse=_address, default=None,
             help="serve Prometheus /metrics and /healthz on HOST:PORT"),
    _Setting(name="log_format", parse=str, default="text", help="log lines: text, json or kv (logfmt)"),
    _Setting(name="log_level", parse=str, default="info", help="debug, info, warning or error"),
    _Setting(name="data_dir", parse=lambda v: Path(v).expanduser() if v else None, default=None,
             help="host documents too (a persistence peer): the node's data directory, its key the relay's"),
    _Setting(name="serve_port", parse=_port, default=None,
             help="UDP port of the persistence peer, on the relay's host (default: the relay's port + 1)"),
    _Setting(name="serve", parse=_document_ids, default=(),
             help="document IDs hosted with any rw ticket (repeatable); serve tickets need no listing"),
    _Setting(name="quota_bytes", parse=_bytes, default="64MiB",
             help="stored bytes per hosted document; past it its remote updates are refused"),
    _Setting(name="max_documents", parse=_positive_int, default=1000, help="hosted documents at most"),
)  # fmt: skip


def resolve_settings(
    flags: Mapping[str, Any], environ: Mapping[str, str], toml_path: Path | None
) -> dict[str, Any]:
    """Each setting from its flag, else its environment variable, else the TOML file, else the default."""
    table: dict[str, Any] = {}
    if toml_path is not None:
        try:
            table = tomllib.loads(toml_path.read_text())
        except OSError as exc:
            raise LocalProtocolError(f"--config {toml_path}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise LocalProtocolError(f"--config {toml_path}: not valid TOML ({exc})") from None
        table = table.get("relay", table)
        known = {s.name for s in SETTINGS}
        unknown = sorted(set(table) - known)
        if unknown:
            raise LocalProtocolError(f"--config {toml_path}: unknown setting(s) {', '.join(unknown)}")
    resolved: dict[str, Any] = {}
    for setting in SETTINGS:
        env_name = ENV_PREFIX + setting.name.upper()
        if flags.get(setting.name) not in (None, [], False):
            value, source = flags[setting.name], "--" + setting.name.replace("_", "-")
        elif env_name in environ:
            value, source = environ[env_name], env_name
        elif setting.name in table:
            value, source = table[setting.name], f"{setting.name} in {toml_path}"
        else:
            resolved[setting.name] = None if setting.default is None else setting.parse(setting.default)
            continue
        try:
            resolved[setting.name] = setting.parse(value)
        except (ValueError, TypeError, LocalProtocolError) as exc:
            raise LocalProtocolError(f"{source}: {exc}") from None
    from aetherflow_node._logging import LOG_FORMATS, LOG_LEVELS

    if resolved["log_format"] not in LOG_FORMATS:
        raise LocalProtocolError(
            f"log format must be one of {', '.join(LOG_FORMATS)}, got {resolved['log_format']!r}"
        )
    if resolved["log_level"].lower() not in LOG_LEVELS:
        raise LocalProtocolError(
            f"log level must be one of {', '.join(LOG_LEVELS)}, got {resolved['log_level']!r}"
        )
    if resolved["data_dir"] is None and resolved["serve"]:
        raise LocalProtocolError("--serve needs --data-dir DIR (where the hosted documents are stored)")
    if resolved["data_dir"] is not None:
        key = resolved["data_dir"] / IDENTITY_FILE
        if resolved["identity"] is not None and resolved["identity"].resolve() != key.resolve():
            raise LocalProtocolError(
                f"--identity and --data-dir: the persistence peer and the relay share the key {key};"
                " drop --identity (or point it there)"
            )
        if resolved["serve_port"] is None:
            port = resolved["listen"][1]
            resolved["serve_port"] = port + 1 if 0 < port < 65535 else 0
        elif resolved["serve_port"] == resolved["listen"][1] != 0:
            raise LocalProtocolError(f"--serve-port {resolved['serve_port']} is the relay's own port")
    return resolved


_METAVARS: Final = {"data_dir": "DIR", "serve_port": "PORT", "quota_bytes": "BYTES", "max_documents": "N"}


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", type=Path, help="a TOML file of settings (flags and env vars override it)"
    )
    for setting in SETTINGS:
        flag = "--" + setting.name.replace("_", "-")
        env = ENV_PREFIX + setting.name.upper()
        if setting.parse is _boolean:
            parser.add_argument(flag, action="store_true", default=None, help=f"{setting.help} [{env}]")
        elif setting.name == "trust":
            parser.add_argument(flag, action="append", metavar="NODE_ID", help=f"{setting.help} [{env}]")
        elif setting.name == "serve":
            parser.add_argument(flag, action="append", metavar="DOC_ID", help=f"{setting.help} [{env}]")
        else:
            default = "" if "default" in setting.help else f" (default {setting.default})"
            metavar = _METAVARS.get(setting.name)
            parser.add_argument(flag, metavar=metavar, help=f"{setting.help}{default} [{env}]")


def _run(args: argparse.Namespace) -> int:
    flags = {s.name: getattr(args, s.name) for s in SETTINGS}
    for name in ("trust", "serve"):
        if flags[name]:
            flags[name] = list(flags[name])
    settings = resolve_settings(flags, os.environ, args.config)
    return anyio.run(_main, settings)


async def _main(settings: dict[str, Any]) -> int:
    from aetherflow_node._logging import configure_logging
    from aetherflow_relay._core import RelayConfig
    from aetherflow_relay._metrics import serve_relay_metrics
    from aetherflow_relay._shell import serve_relay
    from aetherflow_sdk.session import TokenVerifier

    configure_logging(settings["log_format"], settings["log_level"])  # the node's formats
    config = RelayConfig(
        max_clients=settings["max_clients"],
        max_pending=settings["max_pending"],
        rate=settings["rate"],
        burst=settings["burst"],
        queue_packets=settings["queue_packets"],
        max_packet_size=settings["max_packet_size"],
        require_token=settings["require_token"],
    )
    verifier = TokenVerifier(settings["trust"]) if settings["trust"] else None
    if config.require_token and verifier is None:
        raise LocalProtocolError("--require-token needs at least one --trust NODE_ID (a token issuer)")
    async with contextlib.AsyncExitStack() as stack:
        host = await _open_host(stack, settings)
        if host is not None:
            identity = host.node.identity
        elif settings["identity"]:
            identity = Identity.load_or_create(settings["identity"])
        else:
            identity = Identity.generate()
        relay = await stack.enter_async_context(
            serve_relay(settings["listen"], identity=identity, config=config, verifier=verifier, host=host)
        )
        where, port = relay.address
        # One line a supervisor or a test can read: where the relay is, and who it is.
        print(f"relay {format_node_id(relay.node_id)} listening on udp {where}:{port}", flush=True)
        if host is not None:
            served_host, served_port = host.address
            print(
                f"persistence peer serving {len(host.node.documents)} document(s) on udp"
                f" {served_host}:{served_port} (data {settings['data_dir']})",
                flush=True,
            )
        if settings["metrics"] is not None:
            metrics = await stack.enter_async_context(serve_relay_metrics(relay, *settings["metrics"]))
            print(f"metrics on http://{metrics[0]}:{metrics[1]}/metrics", flush=True)
        await _wait_for_stop()
    return 0


async def _open_host(stack: contextlib.AsyncExitStack, settings: dict[str, Any]) -> DocumentHost | None:
    """The persistence peer (``--data-dir``), opened before the relay so that every REGISTERED
    already names it."""
    if settings["data_dir"] is None:
        return None
    from aetherflow_relay._serve import ServeConfig, open_document_host

    serve_config = ServeConfig(
        allowed=frozenset(settings["serve"]),
        quota_bytes=settings["quota_bytes"],
        max_documents=settings["max_documents"],
    )
    listen = (settings["listen"][0], settings["serve_port"])
    try:
        return await stack.enter_async_context(
            open_document_host(settings["data_dir"], listen, config=serve_config)
        )
    except OSError as exc:
        raise LocalProtocolError(
            f"cannot host documents on udp {listen[0]}:{listen[1]}: {exc.strerror or exc}"
            " (choose another --serve-port)"
        ) from None


async def _wait_for_stop() -> None:
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for _ in signals:
            return


command = Subcommand(
    help="run a relay: observed addresses, hole punching, relayed fallback, hosted documents",
    add_arguments=_add_arguments,
    run=_run,
)
