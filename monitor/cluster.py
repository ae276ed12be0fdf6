"""Redis Cluster for one RQ installation: a plain client to the node that owns its prefix's hash slot.

RQ needs a client with a `connection_pool`, which redis-py's RedisCluster has not. Every key of an
installation whose prefix has a hash tag (`{rq}`) lives in one slot, so one node serves them all: the
client here talks to that node. When the slot moves (MOVED, ASK, TRYAGAIN, CLUSTERDOWN or a dropped link)
it asks every node it knows who owns the slot now and points its pool there.

A redirected command, script or MULTI/EXEC ran nothing, so the client sends it again to the owner, for up
to `follow_seconds` while a migration is under way: a forked RQ work horse whose first command meets the
move would otherwise fail a job it never ran. Redis answers MOVED/ASK/TRYAGAIN to a command it queues
without queueing it and flags the transaction, so EXEC aborts it (EXECABORT); a slot that moves between
the queueing and EXEC makes Redis check EXEC against every queued key and discard the whole transaction.
What cannot be sent again raises SlotMovedError, a ConnectionError, so that every outage path (a down
snapshot for one poll, a worker's outage wait) handles it as a dropped link and the next attempt goes to
the new owner: a pipeline without MULTI that writes (during a migration, the commands around the one
redirected may have run), a transaction under WATCH (redis-py makes that a WatchError, which callers
retry whole), a move that outlasts `follow_seconds`, and a dropped link (the request may have run).
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from collections import Counter
from typing import Any
from urllib.parse import urlsplit

from redis import Redis
from redis.backoff import NoBackoff
from redis.client import Pipeline
from redis.commands import READ_COMMANDS
from redis.connection import Connection, SSLConnection, parse_url
from redis.crc import key_slot
from redis.exceptions import AskError, ClusterDownError, ConnectionError, RedisError, TimeoutError, TryAgainError
from redis.retry import Retry
from rqscope.monitor.errors import SettingsError
from rqscope.tasks.procstats import CountingConnectionPool

CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")
MAX_NODES = 256  # a cluster's nodes as CLUSTER SLOTS names them; more is garbage, not a cluster
# connection settings a probe of CLUSTER SLOTS shares with the client (no client name: it would cost a round trip)
PROBE_KEYS = ("username", "password", "credential_provider", "socket_timeout", "socket_connect_timeout", "protocol")
FOLLOW_SECONDS = 2.0  # how long a redirected request is sent again while its slot migrates
REPLAYABLE = READ_COMMANDS | {"INFO", "PING"}  # a pipeline of these alone may run twice
Address = tuple[str, int]


class SlotMovedError(ConnectionError):
    """The prefix's slot moved or is moving: the redirected request ran nothing; the client points at the owner."""

    def __init__(self, message: str = "", owner_changed: bool = False) -> None:
        super().__init__(message)
        self.owner_changed = owner_changed


class NoSlotOwnerError(ConnectionError):
    """No known node of the cluster answered with an owner for the prefix's slot."""


def prefix_slot(prefix: str) -> int | None:
    """The hash slot of every key under `prefix`, or None when the prefix has no hash tag `{...}`."""
    start = prefix.find("{")
    end = prefix.find("}", start + 1)
    if start < 0 or end <= start + 1:
        return None  # without a tag each key hashes whole, so RQ's keys spread over every slot
    return key_slot(prefix.encode())


def parse_cluster_url(url: str) -> dict[str, Any]:
    """Connection keyword arguments of a seed URL (`redis+cluster://` or `rediss+cluster://`); ValueError if bad."""
    parts = urlsplit(url)
    if parts.scheme not in CLUSTER_SCHEMES:
        raise ValueError(f"must start with {' or '.join(s + '://' for s in CLUSTER_SCHEMES)}")
    if not parts.hostname:
        raise ValueError("needs a seed node, e.g. redis+cluster://10.0.0.5:7000")
    try:
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        raise ValueError("has a port that is not a number from 0 to 65535") from None
    plain = parts._replace(scheme=parts.scheme.removesuffix("+cluster"), fragment="").geturl()
    kwargs = parse_url(plain)  # redis-py's own reading, query options included, as Redis.from_url takes them
    if kwargs.pop("db", 0) != 0:
        raise ValueError("names a database other than 0; a cluster has only database 0")
    kwargs.setdefault("port", 6379)
    kwargs["connection_class"] = SlotSSLConnection if parts.scheme == "rediss+cluster" else SlotConnection
    return kwargs


def check_cluster_url(variable: str, url: str) -> str:
    """The URL if it is a valid seed URL; else SettingsError, one line naming the variable."""
    try:
        parse_cluster_url(url)
    except ValueError as exc:
        password = urlsplit(url).password
        shown = url.replace(password, "***") if password else url
        raise SettingsError(f"{variable}={shown[:200]!r} {exc}") from None
    return url


def check_cluster(variable: str, instance: Any) -> str:
    """The instance's seed URL, checked; its prefix must have a hash tag, or RQ's keys spread over every node."""
    url = check_cluster_url(variable, instance.url or "")
    if prefix_slot(instance.prefix) is None:
        raise SettingsError(
            f"{variable}: instance {instance.name!r} is a Redis Cluster, so its RQ key prefix needs a "
            f"hash tag, e.g. RQ_KEY_PREFIX={{rq}}; {instance.prefix!r} has none"
        )
    return url


def cluster_client(
    seed_url: str,
    prefix: str,
    *,
    max_connections: int = 50,
    follow_seconds: float = FOLLOW_SECONDS,
    **redis_kwargs: Any,
) -> Redis:
    """A Redis client to the node owning `prefix`'s slot, following the slot when it moves."""
    slot = prefix_slot(prefix)
    if slot is None:
        raise ValueError(f"prefix {prefix!r} has no hash tag {{...}}, so its keys spread over the cluster's slots")
    # the URL's options win, as in Redis.from_url
    kwargs = {"max_connections": max_connections, **redis_kwargs, **parse_cluster_url(seed_url)}
    ssl = issubclass(kwargs["connection_class"], SSLConnection)
    probe = {k: v for k, v in kwargs.items() if k in PROBE_KEYS or (ssl and k.startswith("ssl_"))}
    router = SlotRouter((kwargs["host"], int(kwargs["port"])), slot, probe, SSLConnection if ssl else Connection)
    client = SlotClient(connection_pool=SlotPool(router, **kwargs))
    client.follow_seconds = follow_seconds
    return client


def follow(call: Any, budget: float) -> Any:
    """`call()`, made again while it meets a moving slot (each redirected attempt ran nothing), for `budget` s."""
    deadline = time.monotonic() + budget
    attempt = 0
    while True:
        try:
            return call()
        except SlotMovedError as exc:
            if time.monotonic() >= deadline:
                raise
            if not exc.owner_changed:  # ASK, TRYAGAIN, CLUSTERDOWN: the migration is not over yet
                time.sleep(min(0.01 * 2**attempt, 0.2))
            attempt += 1


class SlotClient(Redis):
    """A Redis client whose commands, scripts and transactions follow a moving slot."""

    follow_seconds = FOLLOW_SECONDS

    def execute_command(self, *args: Any, **options: Any) -> Any:
        return follow(lambda: Redis.execute_command(self, *args, **options), self.follow_seconds)

    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> SlotPipeline:
        pipe = SlotPipeline(self.connection_pool, self.response_callbacks, transaction, shard_hint)
        pipe.follow_seconds = self.follow_seconds
        return pipe


class SlotPipeline(Pipeline):
    """A pipeline sent again on a redirect when that is safe: a transaction not under WATCH, or only reads."""

    follow_seconds = FOLLOW_SECONDS

    def execute(self, raise_on_error: bool = True) -> list[Any]:
        stack, scripts = list(self.command_stack), set(self.scripts)
        # Pipeline.transaction is a flag set in __init__, which the stubs take for Redis.transaction()
        atomic = self.explicit_transaction or self.transaction  # type: ignore[truthy-function]
        if self.watching or not (atomic or all(str(args[0]).upper() in REPLAYABLE for args, _ in stack)):
            return super().execute(raise_on_error)

        def attempt() -> list[Any]:
            self.command_stack, self.scripts = list(stack), set(scripts)  # execute() emptied them
            return Pipeline.execute(self, raise_on_error)

        return follow(attempt, self.follow_seconds)  # type: ignore[no-any-return]

    def immediate_execute_command(self, *args: Any, **options: Any) -> Any:
        if self.watching:  # the WATCH is lost with the link: redis-py raises WatchError for the caller to retry
            return super().immediate_execute_command(*args, **options)
        return follow(lambda: Pipeline.immediate_execute_command(self, *args, **options), self.follow_seconds)


class SlotRouter:
    """Which node owns one slot: asked of every node seen, again whenever the slot may have moved."""

    def __init__(self, seed: Address, slot: int, probe_kwargs: dict[str, Any], probe_class: type[Connection]):
        self.slot = slot
        self.nodes: list[Address] = [seed]
        self.owner: Address | None = None
        self.moves = 0  # times the owner changed, for tests and logs
        self.probe_kwargs = {**probe_kwargs, "retry": Retry(NoBackoff(), 0)}
        self.probe_class = probe_class
        self.pools: weakref.WeakSet[SlotPool] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._pid = os.getpid()

    def __repr__(self) -> str:
        return f"<SlotRouter slot={self.slot} owner={self.owner}>"

    def _locked(self) -> threading.Lock:
        if self._pid != os.getpid():  # a forked child may have inherited the lock held by another thread
            self._lock, self._pid = threading.Lock(), os.getpid()
        return self._lock

    def address(self) -> Address:
        """The owner's address, found first if it is not known."""
        with self._locked():
            if self.owner is None:
                self._resolve(None)
            assert self.owner is not None
            return self.owner

    def suspect(self) -> None:
        """The link to the owner failed: the next connection asks the cluster again."""
        with self._locked():
            self.owner = None

    def redirected(self, hint: Address | None) -> Address:
        """A node said the slot is elsewhere (`hint`, if it named a node): find and follow the owner."""
        with self._locked():
            if hint is None or hint != self.owner:  # another thread may have followed the same move already
                self._resolve(hint)
            assert self.owner is not None
            return self.owner

    def _resolve(self, hint: Address | None) -> None:
        votes: Counter[Address] = Counter()
        claims: set[Address] = set()
        for address in dict.fromkeys([*([hint] if hint else []), *self.nodes]):
            try:
                reply = self._slots_of(address)
            except (RedisError, OSError):
                continue  # a node that is down or not a cluster member has no say
            owner = self._learn(address, reply)
            if owner is not None:
                votes[owner] += 1
                if owner == address:
                    claims.add(owner)
        previous, self.owner = self.owner, None
        if not votes:
            raise NoSlotOwnerError(
                f"no node of the cluster ({len(self.nodes)} known) names an owner of slot {self.slot}"
            )
        # most nodes' view wins; on a tie, the node that says it owns the slot, then the one the redirect named
        self.owner = max(votes, key=lambda a: (votes[a], a in claims, a == hint))
        if previous is not None and previous != self.owner:
            self.moves += 1
        for pool in list(self.pools):
            pool.follow(self.owner)

    def _slots_of(self, address: Address) -> Any:
        probe = self.probe_class(host=address[0], port=address[1], **self.probe_kwargs)
        try:
            probe.connect()
            probe.send_command("CLUSTER", "SLOTS")
            return probe.read_response()
        finally:
            probe.disconnect()

    def _learn(self, answered: Address, reply: Any) -> Address | None:
        """Add every node of a CLUSTER SLOTS reply to those known; the owner of this slot in it, if any."""
        owner = None
        for entry in reply if isinstance(reply, list) else ():
            try:
                start, end, *nodes = entry
                addresses = [_node_address(node, answered[0]) for node in nodes]
            except (TypeError, ValueError, IndexError, UnicodeDecodeError):
                continue
            for address in addresses:
                if address not in self.nodes and len(self.nodes) < MAX_NODES:
                    self.nodes.append(address)
            if addresses and int(start) <= self.slot <= int(end):
                owner = addresses[0]
        return owner


def _node_address(node: Any, answered_host: str) -> Address:
    host = node[0].decode() if isinstance(node[0], bytes) else str(node[0])
    port = int(node[1])
    if not 0 < port < 65536:
        raise ValueError(port)
    return (host if host and host != "?" else answered_host), port  # an empty host: the node that answered


class SlotConnection(Connection):
    """A connection to the slot's current owner; a redirect or a dropped link makes it look again."""

    def __init__(self, *, router: SlotRouter, **kwargs: Any) -> None:
        self.router = router
        super().__init__(**kwargs)

    def connect_check_health(self, check_health: bool = True, retry_socket_connect: bool = True) -> None:
        if self._sock:
            return
        self.host, self.port = self.router.address()
        try:
            super().connect_check_health(check_health=check_health, retry_socket_connect=retry_socket_connect)
        except (ConnectionError, TimeoutError):
            self.router.suspect()
            raise

    def read_response(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().read_response(*args, **kwargs)
        except (AskError, TryAgainError, ClusterDownError) as exc:  # MovedError is an AskError
            if isinstance(exc, AskError) and exc.slot_id != self.router.slot:
                raise  # a key outside the prefix's slot: a caller's mistake, not a move
            # the replies still unread (the rest of a pipeline) belong to a node that no longer serves us
            self.disconnect()
            owner = self.router.redirected(getattr(exc, "node_addr", None))
            raise SlotMovedError(
                f"slot {self.router.slot} moved ({getattr(exc, 'status_code', '')} {exc}); now {owner}",
                owner_changed=owner != (self.host, self.port),
            ) from exc
        except (ConnectionError, TimeoutError):
            self.router.suspect()
            raise


class SlotSSLConnection(SlotConnection, SSLConnection):
    """SlotConnection over TLS (`rediss+cluster://`)."""


class SlotPool(CountingConnectionPool):
    """A connection pool whose connections go to the slot's owner; it follows the router's moves."""

    def __init__(self, router: SlotRouter, **kwargs: Any) -> None:
        super().__init__(router=router, **kwargs)
        self.router = router
        router.pools.add(self)

    def follow(self, owner: Address) -> None:
        """Point new connections at `owner`; idle ones close now, busy ones when they are given back."""
        self.connection_kwargs.update(host=owner[0], port=owner[1])
        with self._lock:
            for connection in self._available_connections:
                if (connection.host, connection.port) != owner:
                    connection.disconnect()
            for connection in self._in_use_connections:
                if (connection.host, connection.port) != owner:
                    connection.mark_for_reconnect()
