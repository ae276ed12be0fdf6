"""Redis Cluster for one RQ installation: a plain client to the node that owns its prefix's hash slot.

RQ needs a client with a `connection_pool`, which redis-py's RedisCluster has not. Every key of an
installation whose prefix has a hash tag (`{rq}`) lives in one slot, so one node serves them all: the
client here talks to that node (SlotRouter finds it, monitor.cluster_router).

While the slot migrates, the source answers ASK for keys already moved (and for new keys): the command,
or the whole MULTI/EXEC (all its keys share the slot), is sent once more, with ASKING first, to the node
the ASK names, as redis-py's cluster client does. A transaction whose keys are split between the two
nodes gets TRYAGAIN; it, and a command refused by MOVED, is sent again (after the router found the new
owner) for up to the follow budget: a forked RQ work horse whose first command meets the move would
otherwise fail a job it never ran. A refused command, script or transaction ran nothing: Redis checks a
queued command's keys when it queues it and flags the transaction (EXEC aborts), and checks EXEC against
every queued key again.

What cannot be sent again raises SlotMovedError, a ConnectionError, so that every outage path (a down
snapshot for one poll, a worker's outage wait) handles it as a dropped link: a pipeline without MULTI
that writes (the commands around the redirected one may have run), a transaction under WATCH (redis-py
makes that a WatchError, which callers retry whole), a move that outlasts the budget, and a dropped link
(the request may have run). CLUSTERDOWN raises ClusterIsDownError at once: waiting would not end it.

A WATCH is sent only on the pipeline's own connection, which later sends its EXEC: a WATCH refused by
MOVED or TRYAGAIN is sent again there, but one that meets ASK raises SlotMigratingError, a WatchError
(what RQ retries whole), since the importing node would hold the WATCH on another connection, guarding
nothing of the EXEC and left armed in a pool. A PubSub's connection stays on its node when the slot
moves: channels are not keys, every node relays them, and reconnecting it under the thread that reads it
would mix their replies.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, cast

from redis import Redis
from redis.backoff import NoBackoff
from redis.client import Pipeline, PubSub
from redis.commands import READ_COMMANDS
from redis.connection import Connection, SSLConnection
from redis.exceptions import NoScriptError, ResponseError
from redis.retry import Retry
from rqscope.monitor.cluster_router import (
    Address,
    AskRedirect,
    ClusterIsDownError,
    NoSlotOwnerError,
    SlotConnection,
    SlotMovedError,
    SlotPool,
    SlotRouter,
    SlotSSLConnection,
)
from rqscope.monitor.cluster_url import (
    CLUSTER_SCHEMES,
    check_cluster,
    check_cluster_url,
    mask_url,
    parse_cluster_url,
    prefix_slot,
    split_url,
)
from rqscope.tasks.errors import SlotMigratingError

__all__ = [
    "CLUSTER_SCHEMES",
    "AskRedirect",
    "ClusterIsDownError",
    "NoSlotOwnerError",
    "SlotMovedError",
    "check_cluster",
    "check_cluster_url",
    "cluster_client",
    "mask_url",
    "parse_cluster_url",
    "prefix_slot",
    "split_url",
]

# connection settings a probe of CLUSTER SLOTS shares with the client (no client name: it would cost a round trip)
PROBE_KEYS = ("username", "password", "credential_provider", "socket_timeout", "socket_connect_timeout", "protocol")
# how long a refused request is sent again while its slot migrates: `redis-cli --cluster reshard` moves a
# busy slot's keys in seconds, and multi-key transactions (every RQ enqueue) get TRYAGAIN until it is done
FOLLOW_SECONDS = 10.0
REPLAYABLE = READ_COMMANDS | {"INFO", "PING"}  # a pipeline of these alone may run twice
# a WATCH that meets ASK waits this long before its WatchError: callers retry at once, and every try meets
# ASK (and reconnects) until the migration ends
ASKED_WATCH_PAUSE = 0.05


def cluster_client(
    seed_url: str,
    prefix: str,
    *,
    max_connections: int = 50,
    follow_seconds: float | None = None,
    **redis_kwargs: Any,
) -> Redis:
    """A Redis client to the node owning `prefix`'s slot, following the slot when it moves.

    `follow_seconds` (default: FOLLOW_SECONDS, but no longer than the socket timeout) bounds how long a
    refused request is sent again.
    """
    slot = prefix_slot(prefix)
    if slot is None:
        raise ValueError(f"prefix {prefix!r} has no hash tag {{...}}, so its keys spread over the cluster's slots")
    # the URL's options win, as in Redis.from_url
    kwargs = {"max_connections": max_connections, **redis_kwargs, **parse_cluster_url(seed_url)}
    # redis-py's retries would send a write pipeline again after a dropped link or a redirect, though some
    # of its commands may have run; the client here sends again only what it knows ran nothing
    kwargs["retry"] = Retry(NoBackoff(), 0)
    ssl = issubclass(kwargs.get("connection_class", Connection), SSLConnection)
    kwargs["connection_class"] = SlotSSLConnection if ssl else SlotConnection
    probe = {k: v for k, v in kwargs.items() if k in PROBE_KEYS or (ssl and k.startswith("ssl_"))}
    router = SlotRouter((kwargs["host"], int(kwargs["port"])), slot, probe, SSLConnection if ssl else Connection)
    client = SlotClient(connection_pool=SlotPool(router, **kwargs))
    client.follow_seconds = follow_seconds
    return client


def follow_budget(pool: Any, follow_seconds: float | None) -> float:
    """Seconds to keep sending a refused request: as set, else FOLLOW_SECONDS capped by the socket timeout.

    A caller's socket timeout says how long it accepts to wait for one reply (RQ's worker raises it to
    its connection timeout); waiting longer for a slot to settle would break that promise.
    """
    if follow_seconds is not None:
        return follow_seconds
    timeout = pool.connection_kwargs.get("socket_timeout")
    return FOLLOW_SECONDS if timeout is None else min(FOLLOW_SECONDS, float(timeout))


def follow(call: Callable[[], Any], ask: Callable[[Address], Any], budget: float) -> Any:
    """`call()`; on ASK `ask(node)` once; both again while the slot moves (a refused try ran nothing)."""
    deadline = time.monotonic() + budget
    attempt = 0
    while True:
        try:
            try:
                return call()
            except AskRedirect as exc:
                return ask(exc.target)
        except SlotMovedError as exc:
            left = deadline - time.monotonic()
            if left <= 0:
                raise
            if not exc.owner_changed:  # ASK, TRYAGAIN: the migration is not over yet
                time.sleep(min(0.01 * 2**attempt, 0.2, left))
            attempt += 1


def send_asking(client: Redis, target: Address, args: tuple[Any, ...], options: dict[str, Any]) -> Any:
    """Send ASKING and the command to the node importing the slot, on a connection to that node, once."""
    slot_pool = cast(SlotPool, client.connection_pool)  # a SlotClient's or SlotPipeline's
    pool = slot_pool.ask_pool(target)
    connection = pool.get_connection()
    try:
        connection.send_packed_command(connection.pack_commands([("ASKING",), args]))
        connection.read_response()
        try:
            return client.parse_response(connection, args[0], **dict(options))
        except NoScriptError:  # the script was loaded on the source only
            body = slot_pool.scripts.get(str(args[1])) if len(args) > 1 else None
            if str(args[0]).upper() != "EVALSHA" or body is None:
                raise
        connection.send_command("SCRIPT", "LOAD", body)
        connection.read_response()
        connection.send_packed_command(connection.pack_commands([("ASKING",), args]))
        connection.read_response()
        return client.parse_response(connection, args[0], **dict(options))
    except BaseException:
        connection.disconnect()  # a reply may be left unread; ASK replies are rare enough to reconnect
        raise
    finally:
        pool.release(connection)


class SlotClient(Redis):
    """A Redis client whose commands, scripts and transactions follow a moving slot."""

    follow_seconds: float | None = None
    connection_pool: SlotPool

    def execute_command(self, *args: Any, **options: Any) -> Any:
        budget = follow_budget(self.connection_pool, self.follow_seconds)
        call = lambda: Redis.execute_command(self, *args, **options)  # noqa: E731
        return follow(call, lambda target: send_asking(self, target, args, options), budget)

    def script_load(self, script: Any) -> Any:
        """Load the script on the owner, and remember it, for a node importing the slot that lacks it."""
        sha = super().script_load(script)
        self.connection_pool.scripts[str(sha)] = script
        return sha

    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> SlotPipeline:
        pipe = SlotPipeline(self.connection_pool, self.response_callbacks, transaction, shard_hint)
        pipe.follow_seconds = self.follow_seconds
        return pipe

    def pubsub(self, **kwargs: Any) -> SlotPubSub:
        dispatcher = getattr(self, "_event_dispatcher", None)  # redis-py 5 has none
        if dispatcher is not None:
            kwargs.setdefault("event_dispatcher", dispatcher)
        return SlotPubSub(self.connection_pool, **kwargs)


class SlotPubSub(PubSub):
    """A PubSub whose connection the pool leaves on its node when the slot moves (see SlotPool.subscribed)."""

    connection_pool: SlotPool

    def execute_command(self, *args: Any) -> None:
        super().execute_command(*args)
        connection = self.connection
        if connection is not None and not connection.subscriber:
            self.connection_pool.subscribed(connection)


class SlotPipeline(Pipeline):
    """A pipeline sent again on a redirect when that is safe: a transaction not under WATCH, or only reads."""

    follow_seconds: float | None = None
    connection_pool: SlotPool

    def execute(self, raise_on_error: bool = True) -> list[Any]:
        stack, scripts = list(self.command_stack), set(self.scripts)
        # Pipeline.transaction is a flag set in __init__, which the stubs take for Redis.transaction()
        atomic = self.explicit_transaction or self.transaction  # type: ignore[truthy-function]
        if self.watching or not (atomic or all(str(args[0]).upper() in REPLAYABLE for args, _ in stack)):
            return super().execute(raise_on_error)

        def attempt() -> list[Any]:
            self.command_stack, self.scripts = list(stack), set(scripts)  # execute() emptied them
            return Pipeline.execute(self, raise_on_error)

        def ask(target: Address) -> list[Any]:
            if atomic:
                return self._asking_transaction(target, stack, scripts, raise_on_error)
            return self._one_by_one(stack, raise_on_error)

        return follow(attempt, ask, follow_budget(self.connection_pool, self.follow_seconds))  # type: ignore[no-any-return]

    def _asking_transaction(
        self, target: Address, stack: list[Any], scripts: set[Any], raise_on_error: bool
    ) -> list[Any]:
        """The whole MULTI/EXEC again on the importing node, after ASKING (which holds until EXEC)."""
        pool = self.connection_pool.ask_pool(target)
        connection = pool.get_connection()
        try:
            for script in scripts:  # the pipeline loaded them on the source only
                connection.send_command("SCRIPT", "LOAD", script.script)
                connection.read_response()
            connection.send_command("ASKING")
            connection.read_response()
            return self._execute_transaction(connection, stack, raise_on_error)  # type: ignore[no-any-return]
        except BaseException:
            connection.disconnect()  # a reply may be left unread
            raise
        finally:
            pool.release(connection)

    def _one_by_one(self, stack: list[Any], raise_on_error: bool) -> list[Any]:
        """Reads of a pipeline met an ASK: each follows its own key (some moved, some not yet)."""
        client = SlotClient(connection_pool=self.connection_pool)
        client.response_callbacks, client.follow_seconds = self.response_callbacks, self.follow_seconds
        replies: list[Any] = []
        for args, options in stack:
            try:
                replies.append(client.execute_command(*args, **options))
            except ResponseError as exc:
                if raise_on_error:
                    raise
                replies.append(exc)
        return replies

    def immediate_execute_command(self, *args: Any, **options: Any) -> Any:
        if self.watching:  # the WATCH is lost with the link: redis-py raises WatchError for the caller to retry
            return super().immediate_execute_command(*args, **options)
        budget = follow_budget(self.connection_pool, self.follow_seconds)
        # a refused first WATCH ran nothing, and is sent again on this pipeline's connection (to the owner)
        call = lambda: Pipeline.immediate_execute_command(self, *args, **options)  # noqa: E731
        return follow(call, lambda target: self._asked(target, args, options), budget)

    def _asked(self, target: Address, args: tuple[Any, ...], options: dict[str, Any]) -> Any:
        """An ASK for a command sent before the transaction: sent to `target`, unless it is the WATCH."""
        if str(args[0]).upper() != "WATCH":
            return send_asking(self, target, args, options)
        # on the importing node the WATCH would be held by another connection than the one sending EXEC
        self.reset()  # gives back this pipeline's connection, closed by the ASK: nothing is watched anywhere
        time.sleep(ASKED_WATCH_PAUSE)
        raise SlotMigratingError(f"slot {self.connection_pool.router.slot} is migrating: WATCH met ASK; try again")
