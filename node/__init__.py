"""millpond.node: the broker process.

One asyncio process per node: a ``grpc.aio`` server for every service, a
:class:`~millpond.node.raft_host.RaftHost` driving all Raft groups the node
hosts (the metadata log and partition replicas) over one LMDB store, and the
state machines those groups feed.
"""
