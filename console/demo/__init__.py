"""The demo: an embedded AWS endpoint on loopback (Kinesis, DynamoDB and its streams) and a
producer that writes to it and reshards it. Only ``shard-console demo`` (and the tests) use it:
nothing in the engine, the sources or the stores knows it exists."""

from console.demo.producer import Demo, DemoOptions
from console.demo.server import EmbeddedEndpoint

__all__ = ["Demo", "DemoOptions", "EmbeddedEndpoint"]
