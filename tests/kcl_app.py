"""The record processor of the real KCL application the interop test runs (amazon_kclpy, under
the KCL's MultiLangDaemon). Each batch appends one line per record to $KCL_LOG, in
tests/fleet_app.py's format with worker "kcl", then checkpoints the batch's last record: the
KCL's checkpoint is then exactly what the log says it processed."""

from __future__ import annotations

import os
import time
from typing import Any

from amazon_kclpy import kcl
from amazon_kclpy.v3 import processor


class Processor(processor.RecordProcessorBase):  # type: ignore[misc]
    def __init__(self) -> None:
        self.shard = "?"
        self.out = open(os.environ["KCL_LOG"], "a", buffering=1)  # noqa: SIM115

    def initialize(self, initialize_input: Any) -> None:
        self.shard = initialize_input.shard_id

    def process_records(self, process_records_input: Any) -> None:
        start = time.time()
        records = process_records_input.records
        lines = [
            f"kcl\t{self.shard}\t{r.sequence_number}\t{r.binary_data.decode()}\t{start:.3f}\t"
            f"{time.time():.3f}\n"
            for r in records
        ]
        self.out.write("".join(lines))
        self.out.flush()
        if records:
            last = records[-1]
            process_records_input.checkpointer.checkpoint(
                last.sequence_number, last.sub_sequence_number
            )

    def lease_lost(self, lease_lost_input: Any) -> None:
        pass

    def shard_ended(self, shard_ended_input: Any) -> None:
        shard_ended_input.checkpointer.checkpoint()

    def shutdown_requested(self, shutdown_requested_input: Any) -> None:
        pass


if __name__ == "__main__":
    kcl.KCLProcess(Processor()).run()
