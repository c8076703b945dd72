"""Operator changes (rewind, skip, pause, resume, replay, undo): planned without I/O, previewed,
and applied over the transport the consumer's ownership, or the store, calls for."""
