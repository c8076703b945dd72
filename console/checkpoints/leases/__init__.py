"""Leases in the Kinesis Client Library's own DynamoDB table, so several processes (and the KCL
itself, one after the other) share a stream's shards.

:mod:`items` maps lease items to our values and back (pure), :mod:`taker` is the KCL 2.x
balancing (pure), :mod:`table` the conditional writes of the protocol, :mod:`companion` the table
of our own beside it (history, commands, pauses, worker heartbeats), :mod:`store` the
:class:`~console.checkpoints.base.CheckpointStore` the engine talks to. ../shared/LEASES.md has the
format and the protocol.
"""
