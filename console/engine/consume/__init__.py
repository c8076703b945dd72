"""Consuming a stream: the consumer's life-cycle, discovery, the scheduling decision, the
per-shard workers and where their batches come from, and checkpoints kept in batches."""
