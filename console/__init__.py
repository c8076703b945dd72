"""shard-console: the consumer of a sharded stream and its operator console, in one process."""

__version__ = "0.1.0"
