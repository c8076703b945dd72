"""Who may read which shard of the stream: one strategy, chosen at wiring (console.cli.wiring).

:mod:`base` says what a strategy decides; :mod:`lock` is SQLite's whole-stream lock (one
process reads the stream); :mod:`leases` is a fleet's worker in a KCL lease table, with
:mod:`taker` (the KCL 2.x balancing, pure), :mod:`shard_sync` (leases for new shards),
:mod:`joining` (the checks before joining) and :mod:`fleet_view` (the fleet in the snapshot).
"""
