"""Which cluster node owns one hash slot, and connections and pools that follow it.

The owner is asked of the nodes (CLUSTER SLOTS) only when the slot may have moved: a MOVED reply, or a
link to the owner that failed (refused, reset or timed out: after a failover a hung or gone master never
answers again). One thread asks at a time, with a short timeout per node and without the router's lock;
the others wait for its answer. A node whose link just failed is not asked: a hung node would cost a
full timeout to say nothing.
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from collections import Counter
from typing import Any

from redis.backoff import NoBackoff
from redis.connection import Connection, ConnectionPool, SSLConnection
from redis.exceptions import (
    AskError,
    ClusterDownError,
    ConnectionError,
    MovedError,
    RedisError,
    TimeoutError,
    TryAgainError,
)
from redis.retry import Retry
from rqscope.tasks.procstats import CountingConnectionPool

MAX_NODES = 256  # a cluster's nodes as CLUSTER SLOTS names them; more is garbage, not a cluster
PROBE_SECONDS = 0.5  # a live node answers CLUSTER SLOTS in milliseconds; a hung one must not cost more
Address = tuple[str, int]


class SlotMovedError(ConnectionError):
    """The prefix's slot moved or is moving: the refused request ran nothing; the client points at the owner."""

    def __init__(self, message: str = "", owner_changed: bool = False) -> None:
        super().__init__(message)
        self.owner_changed = owner_changed


class AskRedirect(SlotMovedError):
    """The slot is migrating and the source sent the request to `target` (ASK): it ran nothing here."""

    def __init__(self, message: str, target: Address) -> None:
        super().__init__(message)
        self.target = target


class ClusterIsDownError(ConnectionError):
    """A node answered CLUSTERDOWN: the cluster, or the slot, is not served until the cluster heals."""


class NoSlotOwnerError(ConnectionError):
    """No known node of the cluster answered with an owner for the prefix's slot."""


class SlotRouter:
    """The owner of one slot, asked of every node seen whenever the slot may have moved."""

    def __init__(self, seed: Address, slot: int, probe_kwargs: dict[str, Any], probe_class: type[Connection]):
        self.slot = slot
        self.seed = seed
        self.nodes: list[Address] = [seed]
        self.owner: Address | None = None
        self.stale = True  # ask the nodes before the next connection
        self.avoid: Address | None = None  # a node whose link just failed: not asked
        self.generation = 0  # answers found, so a thread that waited for another's answer uses it
        self.moves = 0  # times the owner changed, for tests and logs
        timeout = min(t for t in (probe_kwargs.get("socket_timeout"), PROBE_SECONDS) if t)
        connect = min(t for t in (probe_kwargs.get("socket_connect_timeout"), PROBE_SECONDS) if t)
        self.probe_kwargs = {
            **probe_kwargs,
            "socket_timeout": timeout,
            "socket_connect_timeout": connect,
            "retry": Retry(NoBackoff(), 0),
        }
        self.probe_class = probe_class
        self.pools: weakref.WeakSet[SlotPool] = weakref.WeakSet()
        self._asking = threading.Lock()
        self._pid = os.getpid()

    def __repr__(self) -> str:
        return f"<SlotRouter slot={self.slot} owner={self.owner}>"

    def _lock(self) -> threading.Lock:
        if self._pid != os.getpid():  # a forked child may have inherited the lock held by another thread
            self._asking, self._pid = threading.Lock(), os.getpid()
        return self._asking

    def address(self) -> Address:
        """The owner's address, asked of the nodes first if it may have changed."""
        owner = self.owner
        if owner is not None and not self.stale:
            return owner
        return self._refresh(None, self.generation)

    def link_failed(self, address: Address) -> None:
        """The link to `address` was refused, reset or timed out: if it is the owner, look again, without it."""
        if address == self.owner:
            self.avoid, self.stale = address, True

    def suspect(self) -> None:
        """The owner said the cluster is down: the next connection asks every node again."""
        self.stale = True

    def redirected(self, hint: Address) -> Address:
        """A node answered MOVED to `hint`: find and follow the owner."""
        seen, owner = self.generation, self.owner
        if hint == owner and not self.stale:
            return owner  # another thread followed the same move already
        return self._refresh(hint, seen)

    def _refresh(self, hint: Address | None, seen: int) -> Address:
        with self._lock():
            if self.generation != seen and self.owner is not None and not self.stale:
                return self.owner  # found while this thread waited
            owner = self._resolve(hint)
            if self.owner is not None and owner != self.owner:
                self.moves += 1
            self.owner, self.stale, self.avoid = owner, False, None
            self.generation += 1
        for pool in list(self.pools):
            pool.follow(owner)
        return owner

    def _resolve(self, hint: Address | None) -> Address:
        votes: Counter[Address] = Counter()
        claims: set[Address] = set()
        failures: dict[Address, str] = {}
        deadline = time.monotonic() + 2 * PROBE_SECONDS  # two hung nodes at most, then go with who answered
        for address in dict.fromkeys([*([hint] if hint else []), *self.nodes]):
            if address == self.avoid or time.monotonic() > deadline:
                continue
            try:
                reply = self._slots_of(address)
            except (RedisError, OSError) as exc:
                failures[address] = f"{type(exc).__name__}: {exc}"[:160]
                continue  # a node that is down or not a cluster member has no say
            owner = self._learn(address, reply)
            if owner is not None:
                votes[owner] += 1
                if owner == address:
                    claims.add(owner)
        if votes:  # most nodes' view wins; on a tie, the node that says it owns the slot, then the one MOVED named
            return max(votes, key=lambda a: (votes[a], a in claims, a == hint))
        if self.owner is not None:
            return self.owner  # nobody else answered: keep the owner, whose link may come back
        raise NoSlotOwnerError(self._no_owner(failures))

    def _no_owner(self, failures: dict[Address, str]) -> str:
        seed = f"{self.seed[0]}:{self.seed[1]}"
        if self.nodes == [self.seed]:
            why = failures.get(self.seed, "no owner in its CLUSTER SLOTS")
            return (
                f"the cluster seed {seed} did not answer with an owner of slot {self.slot} ({why}); the other "
                f"nodes are learnt from the seed, so it must be up when the process first connects"
            )
        return f"none of the {len(self.nodes)} known cluster nodes (seed {seed}) names an owner of slot {self.slot}"

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
    """A connection to the slot's owner (or, for an ASK, to one node); a redirect or a failed link tells the router."""

    subscriber = False  # taken by a PubSub: it stays on its node when the slot moves (SlotPool.subscribed)

    def __init__(self, *, router: SlotRouter, node: Address | None = None, **kwargs: Any) -> None:
        self.router = router
        self.node = node  # set for a connection to the node an ASK named
        super().__init__(**kwargs)

    def connect_check_health(self, check_health: bool = True, retry_socket_connect: bool = True) -> None:
        if self._sock:
            return
        self.host, self.port = self.node or self.router.address()
        try:
            super().connect_check_health(check_health=check_health, retry_socket_connect=retry_socket_connect)
        except (ConnectionError, TimeoutError):
            self.router.link_failed((self.host, self.port))
            raise

    def read_response(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().read_response(*args, **kwargs)
        except (AskError, TryAgainError, ClusterDownError) as exc:  # MovedError is an AskError
            if isinstance(exc, AskError) and exc.slot_id != self.router.slot:
                raise  # a key outside the prefix's slot: a caller's mistake, not a move
            # the replies still unread (the rest of a pipeline) are of a request the node refused
            self.disconnect()
            self._redirect(exc)
        except (ConnectionError, TimeoutError):
            self.router.link_failed((self.host, self.port))
            raise

    def _redirect(self, exc: Exception) -> None:
        here = (self.host, self.port)
        reply = f"{getattr(exc, 'status_code', '')} {exc}".strip()
        if isinstance(exc, ClusterDownError):
            self.router.suspect()
            raise ClusterIsDownError(f"slot {self.router.slot} on {here}: {reply}") from exc
        if isinstance(exc, MovedError):
            owner = self.router.redirected(exc.node_addr)
            raise SlotMovedError(f"slot {self.router.slot} moved ({reply}); now {owner}", owner != here) from exc
        if isinstance(exc, AskError):
            raise AskRedirect(f"slot {self.router.slot} is migrating ({reply})", exc.node_addr) from exc
        raise SlotMovedError(f"slot {self.router.slot} is migrating ({reply})") from exc  # TRYAGAIN


class SlotSSLConnection(SlotConnection, SSLConnection):
    """SlotConnection over TLS (`rediss+cluster://`)."""


class SlotPool(CountingConnectionPool):
    """A connection pool whose connections go to the slot's owner; it follows the router's moves."""

    def __init__(self, router: SlotRouter, **kwargs: Any) -> None:
        super().__init__(router=router, **kwargs)
        self.router = router
        self.scripts: dict[str, Any] = {}  # sha -> body of scripts loaded, for a node importing the slot
        self._ask_pools: dict[Address, ConnectionPool] = {}
        router.pools.add(self)

    def follow(self, owner: Address) -> None:
        """Point new connections at `owner`; idle ones close now, busy ones (but a PubSub's) when given back."""
        self.connection_kwargs.update(host=owner[0], port=owner[1])
        with self._lock:
            for connection in self._available_connections:
                if (connection.host, connection.port) != owner:
                    connection.disconnect()
            for connection in self._in_use_connections:
                if (connection.host, connection.port) != owner and not connection.subscriber:
                    connection.mark_for_reconnect()

    def subscribed(self, connection: SlotConnection) -> None:
        """`connection` serves a PubSub until it is given back: it stays on its node when the slot moves.

        Channels are not keys: every node of the cluster relays every PUBLISH. A PubSub marked for reconnect
        reconnects in whichever thread uses it next, and RQ's worker unsubscribes in its main thread while its
        pubsub thread reads: the two would read each other's replies (the handshake's among them).
        """
        with self._lock:
            connection.subscriber = True
            connection.reset_should_reconnect()  # a move followed since the PubSub took it

    def release(self, connection: Any) -> None:
        connection.subscriber = False  # back in the pool, it serves commands, which follow the slot
        super().release(connection)

    def ask_pool(self, node: Address) -> ConnectionPool:
        """A pool of connections to `node`, which an ASK named, with this pool's settings."""
        with self._lock:
            pool = self._ask_pools.get(node)
            if pool is None:
                if len(self._ask_pools) >= MAX_NODES:
                    self._ask_pools.pop(next(iter(self._ask_pools))).disconnect()
                kwargs = {**self.connection_kwargs, "node": node, "host": node[0], "port": node[1]}
                pool = self._ask_pools[node] = ConnectionPool(
                    connection_class=self.connection_class, max_connections=self.max_connections, **kwargs
                )
            return pool
