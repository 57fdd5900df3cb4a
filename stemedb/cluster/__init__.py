"""Cluster mode: several nodes share one history through a NATS JetStream stream.

The stream is the commit point (replicas 3, file storage, the NATS servers'
``jetstream { sync_interval: always }``).  A node validates a write without
looking at the state (:meth:`stemedb.core.writer.Writer.submit`), publishes
it as one stream message (:mod:`.message`), and answers once JetStream has
stored it on a majority and this node has applied it.  Every node runs one
consumer (:class:`.node.ClusterNode`) that reads the stream in order and
applies each message through the writer's own write step
(:meth:`~stemedb.core.writer.Writer.apply_replicated`): the checks that need
the state (existing hash, unknown reference, duplicate epoch, stale vote) are
decided there, the same on every node, and the records go to the node's
local WAL and ``State.apply_group`` as a single node's do.

Seqs: every record is one stream message, so a record's seq is its stream
sequence, the same on every node (an assertion batch is one JetStream atomic
batch: consecutive sequences, stored whole or not at all).  The local WAL
therefore holds its own resume point: a node restarts by replaying its WAL,
then consumes the stream from ``last_seq + 1``.  Messages after that which
wrote nothing (a refused write, an assertion that already existed) are
decided again the same way, against the same state.
"""
