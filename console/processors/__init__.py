"""What the consumer does with records: built-in processors and loading a user's.

A spec is ``null``, ``print``, ``jsonl:PATH`` or ``package.module:function``. A user processor is
loaded only from that explicit spec: no plugin discovery, no file paths, nothing implicit.
"""

from console.processors.base import CallableProcessor, ParkRecord, Processor, RecordFailed
from console.processors.loader import load_processor

__all__ = ["CallableProcessor", "ParkRecord", "Processor", "RecordFailed", "load_processor"]
