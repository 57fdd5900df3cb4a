"""A cluster node: publish this node's writes, apply the stream in order.

One asyncio loop in a thread (``stemedb-cluster``) holds the NATS
connection.  Request threads call :meth:`ClusterNode.replicate` (installed as
the writer's ``replicate``): it publishes the validated write (one message
per record, a batch as one JetStream atomic batch, :mod:`.message`) with its
message id, waits for JetStream's acknowledgement (stored on a majority of
the stream's replicas), then waits until this node has applied that stream
sequence and answers with what the apply decided.  One consumer task reads
the stream from the next unapplied sequence (an ephemeral pull consumer,
recreated after any error) and hands each fetched run of messages to one
applier thread, which applies them strictly in stream order through
``Writer.apply_replicated``, the messages of an atomic batch together as one
group.  A record's seq is the stream sequence of its message.

Without a NATS quorum a publish fails or times out: the write answers 503
(``degraded``) and nothing is acknowledged.  Reads go on from the local
state.  The consumer retries by itself, so writes resume when the quorum is
back.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import threading
import time
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

import orjson

from ..errors import StemeError
from ..timeutil import now_us
from . import bootstrap, message
from .errors import ClusterMismatch, ClusterUnavailable, NotCaughtUp
from .stream import ClusterSettings, restored_point

if TYPE_CHECKING:       # nats is an extra (stemedb[cluster]), imported where used
    from nats.aio.client import Client
    from nats.js import JetStreamContext
    from nats.js.api import StreamInfo

log = logging.getLogger("stemedb.cluster")

# Seconds for JetStream's acknowledgement of one message; a batch adds a
# second per 2,000 messages.  Short, because a publish sent to a NATS server
# that has just died waits it out before the client's reconnect can carry
# the retry to a live one: the write is then 503 (its outcome unknown, a
# retry safe), and the next one goes through once a stream leader is
# elected (measured: bench.cluster's RTO).
PUBLISH_TIMEOUT = 2.0
APPLY_TIMEOUT = 30.0      # seconds a write waits for this node to apply what the stream stored
FETCH_BATCH = 1024
OUTCOMES_KEPT = 65_536    # outcomes of applied messages, for duplicate acks
BATCH_ID = "Nats-Batch-Id"
BATCH_SEQ = "Nats-Batch-Sequence"
BATCH_COMMIT = "Nats-Batch-Commit"
MSG_ID = "Nats-Msg-Id"


class ClusterNode:
    def __init__(self, store, settings: ClusterSettings, *, start_timeout: float = 10.0):
        self.store = store
        self.settings = settings
        self.start_timeout = start_timeout
        self.applied = store.last_seq                 # the WAL is the resume point
        self.stream_seq = self.applied
        self.resumed_from = self.applied + 1          # the first stream seq this run consumes
        self.messages_applied = 0                     # stream messages this run applied
        self.fault: str | None = None
        self.connected = False
        self._cv = threading.Condition()
        self._outcomes: OrderedDict[int, tuple[bool, object]] = OrderedDict()
        self._batch_ids: OrderedDict[str, int] = OrderedDict()  # batch message id -> seq
        # the atomic batch being gathered: (batch id, [(seq, args, at_us)]), or
        # (batch id, None) while skipping one applied before a restart
        self._group: tuple[str, list | None] | None = None
        self._stopping = False
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True,
                                        name="stemedb-cluster")
        self._applier = concurrent.futures.ThreadPoolExecutor(1, "stemedb-apply")
        self._ready = threading.Event()
        self._start_error: BaseException | None = None
        self.nc: Client | None = None
        self.js: JetStreamContext | None = None         # set once connected, never unset
        self._task: concurrent.futures.Future[None] | None = None

    # ------------------------------------------------------------ life
    def start(self) -> "ClusterNode":
        """Connect, check the data directory against the stream, start consuming.

        Raises ClusterMismatch when the local log is not this stream's
        history.  When NATS cannot be reached within ``start_timeout`` the
        node starts anyway: reads answer, writes are 503 until it connects.
        """
        self._thread.start()
        self._task = asyncio.run_coroutine_threadsafe(self._main(), self._loop)
        self._ready.wait(self.start_timeout)
        if self._start_error is not None:
            self.stop()
            raise self._start_error
        if not self._ready.is_set():
            log.warning("cluster: NATS not reachable at %s yet; reads answer, writes wait for it",
                        ",".join(self.settings.urls))
        self.store.writer.replicate = self.replicate
        self.store.cluster = self
        return self

    def stop(self) -> None:
        """Stop consuming and disconnect (the store stays open)."""
        if self._stopping:
            return
        self._stopping = True
        if self._thread.is_alive():
            fut = asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop)
            try:
                fut.result(10)
            except Exception:  # noqa: BLE001 - shutting down anyway
                pass
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        self._applier.shutdown(wait=True)
        with self._cv:
            self._cv.notify_all()

    async def _shutdown(self) -> None:
        task = getattr(self, "_main_task", None)
        if task is not None and not task.done():
            task.cancel()
            try:
                await task
            except BaseException:  # noqa: BLE001 - cancelled, or it had failed
                pass
        if self.nc is not None:
            try:
                await self.nc.close()
            except Exception:  # noqa: BLE001
                pass

    async def _main(self) -> None:
        import nats
        self._main_task = asyncio.current_task()
        cs = self.settings
        while not self._stopping:
            try:
                self.nc = await nats.connect(
                    servers=cs.urls, name=f"stemedb-{cs.node_id}", connect_timeout=2,
                    reconnect_time_wait=0.5, max_reconnect_attempts=-1,
                    allow_reconnect=True, disconnected_cb=self._on_disconnect,
                    reconnected_cb=self._on_reconnect, error_cb=self._on_error)
                break
            except Exception as exc:  # noqa: BLE001 - retried until NATS answers
                log.warning("cluster: cannot connect to NATS (%s); retrying", exc)
                await asyncio.sleep(1.0)
        if self._stopping:
            return
        assert self.nc is not None      # the loop above ends connected, or stopping
        self.js = self.nc.jetstream(timeout=PUBLISH_TIMEOUT)
        self.connected = True
        while not self._stopping:
            try:
                await self._check_identity()
                break
            except ClusterMismatch as exc:
                self._start_error = exc
                self.fault = exc.message
                self._ready.set()
                return
            except Exception as exc:  # noqa: BLE001 - no quorum yet: retry
                log.warning("cluster: stream %s not available (%s); retrying", cs.stream, exc)
                await asyncio.sleep(1.0)
        self._ready.set()
        log.info("cluster: node %s consuming stream %s from seq %d", cs.node_id, cs.stream,
                 self.applied + 1)
        await self._consume()

    async def _on_disconnect(self):
        self.connected = False
        log.warning("cluster: disconnected from NATS")

    async def _on_reconnect(self):
        self.connected = True
        log.info("cluster: reconnected to NATS")

    async def _on_error(self, exc):
        log.debug("cluster: NATS client error: %s", exc)

    def _jetstream(self) -> JetStreamContext:
        """The JetStream context: the callers run only after _main connected."""
        assert self.js is not None, "JetStream is used before NATS connected"
        return self.js

    # ------------------------------------------------------------ identity
    def _identity_path(self) -> str:
        return os.path.join(self.store.path, "cluster.json")

    async def _check_identity(self) -> None:
        """The data directory belongs to this stream, and is not ahead of it."""
        cs = self.settings
        info = await self._jetstream().stream_info(cs.stream)
        created = info.created.isoformat() if info.created else ""
        last = info.state.last_seq
        self.stream_seq = last
        path = self._identity_path()
        ident = self._read_identity()
        boot = bootstrap.marker(self.store.path)
        if ident is None:
            if self.store.last_seq > 0 and boot is None:
                raise ClusterMismatch(
                    f"{self.store.path} holds a log (last seq {self.store.last_seq}) that did "
                    f"not come from stream {cs.stream}: a cluster node starts from an empty "
                    f"data directory (or its own earlier one); move this one aside")
            if boot is not None:
                # installed from the S3 archive (bootstrap.py): this stream's
                # history only if the stream has its seqs and its last assertion
                self._check_archive(boot, last)
                await self._check_last_message(info)
            ident = {"stream": cs.stream, "stream_created": created, "node_id": cs.node_id}
            if boot is not None:
                ident["bootstrapped_from"] = boot
            self.store.fs.write_atomic(path, orjson.dumps(ident, option=orjson.OPT_INDENT_2))
            if boot is not None:
                bootstrap.clear_marker(self.store.path)
        elif ident.get("stream") != cs.stream or ident.get("stream_created") != created:
            raise ClusterMismatch(
                f"{self.store.path} was built from stream {ident.get('stream')} created "
                f"{ident.get('stream_created')}, but STEMEDB_CLUSTER_STREAM is {cs.stream} "
                f"created {created}: the log is another history; start this node from an "
                f"empty data directory")
        if self.applied > last:
            raise ClusterMismatch(
                f"{self.store.path} holds records up to stream seq {self.applied} but stream "
                f"{cs.stream} ends at {last}: the local log is ahead of the stream (a seq "
                f"conflict); start this node from an empty data directory")
        if self.applied > 0:
            await self._check_last_message(info)

    def _check_restored(self, info: StreamInfo) -> None:
        cs = self.settings
        point = restored_point(info)
        first = info.state.first_seq
        if point is None:
            raise ClusterMismatch(
                f"{self.store.path}: stream {cs.stream} starts at seq {first}, after this "
                f"node's records: the local log is another history; start this node from an "
                f"empty data directory")
        root, log_id, last_archived = point
        boot = bootstrap.marker(self.store.path) or (self._read_identity() or {}).get(
            "bootstrapped_from") or {}
        other = boot.get("log_id") != log_id
        if self.applied < last_archived or other:
            raise ClusterMismatch(
                f"{self.store.path}: stream {cs.stream} was restored from the archive "
                f"{root or '(the prefix)'} and continues it after seq {last_archived}; this "
                f"node holds seqs up to {self.applied}"
                f"{' from another archive' if other else ''}: start it from an "
                f"empty data directory with STEMEDB_ARCHIVE_S3 naming that archive")

    def _read_identity(self) -> dict[str, Any] | None:
        try:
            with open(self._identity_path(), "rb") as f:
                doc: dict[str, Any] = orjson.loads(f.read())
                return doc
        except FileNotFoundError:
            return None

    def _check_archive(self, boot: dict[str, Any], last: int) -> None:
        cs = self.settings
        if self.applied > last:
            raise ClusterMismatch(
                f"{self.store.path} was installed from the archive {boot.get('root')}, which "
                f"holds records up to seq {self.applied}, but stream {cs.stream} ends at "
                f"{last}: the archive "
                f"is not this stream's history (another cluster, or STEMEDB_CLUSTER_STREAM / "
                f"STEMEDB_ARCHIVE_S3 point at different clusters). Point STEMEDB_ARCHIVE_S3 "
                f"at this cluster's archive, or unset it to replay the stream, and start "
                f"from an empty data directory")

    async def _check_last_message(self, info: StreamInfo) -> None:
        """The local log's last assertion is in the stream message of its seq,
        or, below the first seq of a stream restored from the S3 archive
        (``stemedb cluster init --from-archive``), this node holds the whole
        archived history the stream continues."""
        st = self.store.state
        with self.store.reader.lock:
            n = st.cols.n
            if not n:
                return
            s = int(st.cols.seq[n - 1])
            h = st.cols.hash_of(n - 1)
        if s < info.state.first_seq:
            self._check_restored(info)
            return
        from nats.js.errors import NotFoundError
        try:
            msg = await self._jetstream().get_msg(self.settings.stream, s)
        except NotFoundError:
            raise ClusterMismatch(
                f"{self.store.path}: stream {self.settings.stream} has no message at seq {s}, "
                f"where the local log's last assertion comes from: the local log is another "
                f"history; start this node from an empty data directory") from None
        assert msg.subject is not None and msg.data is not None     # a stored message has both
        kind = msg.subject.rsplit(".", 1)[-1]
        ok = False
        if kind == "assert":
            (recs, _b), _at = message.decode(kind, msg.data)
            ok = any(r.hash == h for r in recs)
        if not ok:
            raise ClusterMismatch(
                f"{self.store.path}: the record at seq {s} is not what "
                f"stream {self.settings.stream} holds at seq {s}: the local log "
                f"is another history; start this node from an empty data directory")

    # ------------------------------------------------------------ consuming
    async def _consume(self) -> None:
        from nats.errors import TimeoutError as NatsTimeout
        from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
        cs = self.settings
        sub = None
        last_info = 0.0
        while not self._stopping and self.fault is None:
            try:
                if sub is None:
                    self._group = None        # a batch is gathered again from its start
                    cfg = ConsumerConfig(
                        deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
                        opt_start_seq=self.applied + 1, ack_policy=AckPolicy.NONE,
                        inactive_threshold=30.0, mem_storage=True, num_replicas=1,
                        max_waiting=1)
                    sub = await self._jetstream().pull_subscribe(
                        f"{cs.stream}.>", stream=cs.stream, config=cfg)
                try:
                    msgs = await sub.fetch(FETCH_BATCH, timeout=0.5)
                except NatsTimeout:
                    msgs = []
                if msgs:
                    md = msgs[-1].metadata
                    self.stream_seq = max(self.stream_seq,
                                          md.sequence.stream + (md.num_pending or 0))
                    await self._loop.run_in_executor(self._applier, self._apply, msgs)
                elif time.monotonic() - last_info > 1.0:
                    info = await self._jetstream().stream_info(cs.stream)
                    self.stream_seq = max(self.stream_seq, info.state.last_seq)
                    last_info = time.monotonic()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - recreate the consumer and go on
                if self._stopping:
                    return
                log.warning("cluster: consumer interrupted (%s: %s); resuming from seq %d",
                            type(exc).__name__, exc, self.applied + 1)
                if sub is not None:
                    try:
                        await sub.unsubscribe()
                    except Exception:  # noqa: BLE001
                        pass
                sub = None
                await asyncio.sleep(0.5)

    def _apply(self, msgs) -> None:
        """Apply fetched messages in stream order (the applier thread).

        A message outside an atomic batch is applied alone.  The messages of
        an atomic batch are gathered (across fetches) until its commit
        message and applied as one group, item ``i`` at seq ``first + i``.
        A consumer that resumes inside a batch (its first message has batch
        sequence k > 1) resumes after a restart whose log ends inside that
        batch's seqs: the group was applied whole (a local group commit is
        atomic), so its remaining messages are passed over.
        """
        for m in msgs:
            s = m.metadata.sequence.stream
            gathered = len(self._group[1] or ()) if self._group is not None else 0
            if s <= self.applied + gathered:
                continue
            if s != self.applied + gathered + 1:
                self._set_fault(f"stream {self.settings.stream} skips from seq "
                                f"{self.applied + gathered} to {s}: messages are missing, "
                                f"this node cannot apply past the gap")
                return
            kind = m.subject.rsplit(".", 1)[-1]
            hdr = m.headers or {}
            bid = hdr.get(BATCH_ID)
            try:
                args, at = message.decode(kind, m.data)
            except ValueError as exc:
                self._set_fault(f"stream seq {s}: {exc}")
                return
            if bid is None:
                if self._group is not None:
                    self._set_fault(f"stream seq {s} interrupts atomic batch {self._group[0]}")
                    return
                if not self._apply_one(s, s, kind, args, at):
                    return
                continue
            bseq = int(hdr.get(BATCH_SEQ, "0"))
            if self._group is None:
                if bseq > 1 and s - (bseq - 1) <= self.applied:
                    self._group = (bid, None)         # applied before a restart: pass over
                elif bseq == 1:
                    self._group = (bid, [])
                else:
                    self._set_fault(f"stream seq {s} is item {bseq} of atomic batch {bid} "
                                    f"whose start this node never saw")
                    return
            gid, items = self._group
            if gid != bid or (items is not None and bseq != len(items) + 1):
                self._set_fault(f"stream seq {s} (batch {bid}, item {bseq}) breaks atomic "
                                f"batch {gid}")
                return
            if items is None:
                with self._cv:
                    self.applied = s
                    self._cv.notify_all()
            else:
                items.append((args, at))
            if not hdr.get(BATCH_COMMIT):
                continue
            self._group = None
            if MSG_ID in hdr:
                self._batch_ids[hdr[MSG_ID]] = s
                while len(self._batch_ids) > OUTCOMES_KEPT:
                    self._batch_ids.popitem(last=False)
            if items is None:
                continue
            recs = [r for (rs, _b), _at in items for r in rs]
            (_first, batch), at0 = items[0]
            if not self._apply_one(s - len(items) + 1, s, "assert", (recs, batch), at0):
                return

    def _apply_one(self, first: int, s: int, kind: str, args: tuple, at: int) -> bool:
        """Apply one write (stream seqs ``first``..``s``); False when it stopped the node."""
        try:
            out = (True, self.store.writer.apply_replicated(kind, args, first, at))
        except StemeError as exc:
            if exc.status >= 500:
                self._set_fault(f"applying stream seq {s} failed: {exc.message}")
                return False
            out = (False, exc)       # refused the same way on every node
        except Exception as exc:  # noqa: BLE001 - never skip a message silently
            log.exception("cluster: applying stream seq %d failed", s)
            self._set_fault(f"applying stream seq {s} failed: {exc!r}")
            return False
        with self._cv:
            self.applied = s
            self.messages_applied += s - first + 1
            self._outcomes[s] = out
            while len(self._outcomes) > OUTCOMES_KEPT:
                self._outcomes.popitem(last=False)
            self._cv.notify_all()
        return True

    def _set_fault(self, reason: str) -> None:
        log.error("cluster: %s; this node stops applying (reads answer what it has)", reason)
        with self._cv:
            self.fault = reason
            self._cv.notify_all()

    # ------------------------------------------------------------ writing
    def replicate(self, kind: str, args: tuple):
        """Publish a validated write; return (or raise) what this node's apply decided."""
        if self.fault:
            raise ClusterUnavailable(f"this node stopped applying the stream: {self.fault}")
        if self._stopping:
            from ..errors import StoreClosed
            raise StoreClosed("the store is closing")
        payloads, msg_id = message.encode(kind, args, now_us())
        subject = f"{self.settings.stream}.{kind}"
        if self.js is None:
            raise ClusterUnavailable(
                "this node has no NATS connection yet: nothing was written; retry shortly")
        timeout = PUBLISH_TIMEOUT + len(payloads) / 2000
        coro = (self._publish(subject, payloads[0], msg_id) if len(payloads) == 1
                else self._publish_batch(subject, payloads, msg_id, timeout))
        fut = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            seq, duplicate = fut.result(timeout + 1.0)
        except ClusterUnavailable:
            raise
        except Exception as exc:  # noqa: BLE001 - any failure: not acknowledged
            fut.cancel()
            raise ClusterUnavailable(
                f"the stream did not acknowledge the write ({type(exc).__name__}: {exc}); "
                f"without a NATS quorum writes stop. It may or may not be stored: retrying "
                f"the same write is safe (the stream keeps one copy)") from None
        if seq is None:            # a batch the stream already holds: find where
            seq = self._batch_seq(msg_id)
        ok, value = self._outcome(seq, kind, args)
        if not ok:
            raise value
        if duplicate and kind == "assert":
            # the stream already held this write (a retry): as on a single
            # node, a retried assertion answers exists, with the stored seq
            from ..core.writer import PutResult
            value = [PutResult(r.hash, r.seq, False) for r in value]
        return value

    async def _publish(self, subject: str, payload: bytes, msg_id: str):
        ack = await self._jetstream().publish(subject, payload, timeout=PUBLISH_TIMEOUT,
                                              headers={MSG_ID: msg_id})
        return ack.seq, bool(ack.duplicate)

    async def _publish_batch(self, subject: str, payloads: list[bytes], msg_id: str,
                             timeout: float):
        """One JetStream atomic batch: every message, the last one committing.

        ``(last seq, False)`` once stored; ``(None, True)`` when the stream
        already holds this batch (its id is in the duplicate window).
        Anything else raises: the stream stored none of it.
        """
        nc = self.nc
        assert nc is not None       # js is set only once connected
        bid = os.urandom(16).hex()
        last = len(payloads)
        for k, p in enumerate(payloads[:-1], 1):
            await nc.publish(subject, p, headers={BATCH_ID: bid, BATCH_SEQ: str(k)})
        reply = await nc.request(subject, payloads[-1], timeout=timeout, headers={
            BATCH_ID: bid, BATCH_SEQ: str(last), BATCH_COMMIT: "1", MSG_ID: msg_id})
        ack = orjson.loads(reply.data)
        err = ack.get("error")
        if err:
            if err.get("err_code") == message.DUPLICATE_IN_BATCH:
                return None, True
            raise ClusterUnavailable(f"the stream refused the batch ({err.get('description')}); "
                                     f"nothing of it was stored: retrying is safe")
        if ack.get("count") != last:
            raise ClusterUnavailable(f"the stream acknowledged {ack.get('count')} of the "
                                     f"batch's {last} messages")
        return int(ack["seq"]), False

    def _batch_seq(self, msg_id: str) -> int | None:
        """The stream seq of an applied batch's commit message, once this node
        has caught up with the stream (None when it is older than this run)."""
        info = asyncio.run_coroutine_threadsafe(
            self._jetstream().stream_info(self.settings.stream), self._loop).result(
                PUBLISH_TIMEOUT + 1.0)
        self._wait_applied(info.state.last_seq, "a retried batch")
        with self._cv:
            return self._batch_ids.get(msg_id)

    def _wait_applied(self, s: int, what: str) -> None:
        deadline = time.monotonic() + APPLY_TIMEOUT
        with self._cv:
            while self.applied < s:
                left = deadline - time.monotonic()
                if left <= 0 or self.fault or self._stopping:
                    raise ClusterUnavailable(
                        f"the stream stored {what} at stream seq {s}, but this node has "
                        f"not applied it ({self.fault or 'still catching up'}); it will be "
                        f"applied: read with min_seq={s} to see it")
                self._cv.wait(min(left, 1.0))

    def _outcome(self, s: int | None, kind: str, args: tuple) -> tuple[bool, Any]:
        out = None
        if s is not None:
            self._wait_applied(s, "this write")
            with self._cv:
                out = self._outcomes.get(s)
        if out is not None:
            return out
        if kind == "assert":      # a duplicate of a write applied long ago
            from ..core.writer import PutResult
            res = []
            for r in args[0]:
                with self.store.reader.lock:
                    o = self.store.state.ordinal(r.hash)
                    if o is None:
                        break
                    res.append(PutResult(r.hash.hex(), int(self.store.state.cols.seq[o]), False))
            else:
                return True, res
        raise ClusterUnavailable(f"the stream already held this write (stream seq {s}); "
                                 f"its answer is no longer known")

    # ------------------------------------------------------------ reading
    def wait_for(self, min_seq: int, timeout_ms: int | None = None) -> None:
        """Return once this node has applied seq ``min_seq`` (a record's seq
        is its stream sequence), else NotCaughtUp after the wait."""
        target = min_seq
        if self.applied >= target:
            return
        wait = (self.settings.read_wait_ms if timeout_ms is None else timeout_ms) / 1000.0
        deadline = time.monotonic() + wait
        with self._cv:
            while self.applied < target:
                left = deadline - time.monotonic()
                if left <= 0 or self._stopping:
                    raise NotCaughtUp(
                        f"this node has applied up to seq {self.applied}, not yet min_seq "
                        f"{min_seq}; retry, or ask another node", field="min_seq")
                self._cv.wait(min(left, 0.5))

    def status(self) -> dict:
        applied, stream = self.applied, max(self.stream_seq, self.applied)
        doc = {"node_id": self.settings.node_id, "applied_seq": applied,
               "stream_seq": stream, "lag": stream - applied,
               "connected": self.connected}
        if self.fault:
            doc["fault"] = self.fault
        return doc


def start_node(store, settings: ClusterSettings | None = None) -> ClusterNode:
    """Run ``store`` as a cluster node (settings from the environment by default)."""
    settings = settings or ClusterSettings.from_env()
    if settings is None:
        raise ValueError("STEMEDB_CLUSTER_NATS is not set")
    return ClusterNode(store, settings).start()


class ClusterCollector:
    """``stemedb_cluster_lag`` (stream messages this node has not applied yet)
    and ``stemedb_cluster_applied_seq``, read at scrape time; nothing on a
    single node."""

    def __init__(self, handle):
        self.handle = handle

    def describe(self):
        return []

    def collect(self):
        from prometheus_client.core import GaugeMetricFamily
        store = self.handle.peek()
        node = getattr(store, "cluster", None)
        if node is None:
            return
        st = node.status()
        for name, doc, key in (
                ("stemedb_cluster_lag", "Stream messages this node has not applied yet",
                 "lag"),
                ("stemedb_cluster_applied_seq", "The last stream seq this node applied",
                 "applied_seq"),
                ("stemedb_cluster_stream_seq", "The stream's last seq as this node last saw it",
                 "stream_seq")):
            g = GaugeMetricFamily(name, doc, labels=["node_id"])
            g.add_metric([st["node_id"]], float(st[key]))
            yield g
