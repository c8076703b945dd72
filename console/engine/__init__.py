"""The consumer: discovery, lineage, per-shard workers, checkpoints, control. No UI here."""
