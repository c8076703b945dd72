"""Every benchmark, one command: ``python -m bench`` writes bench/RESULTS.md.

Each benchmark runs in its own process (as an operator would run it alone), prints its runs
and medians, and ends with RESULT lines; this collects them into one table, with the machine's
facts, the commands, and each benchmark's full output below it. Ratios are measured within one
run (the contenders alternate), because this machine is noisy.

    python -m bench [--quick] [--only P1,P4]

``--quick`` shrinks every workload (for checking the harness, not for figures).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from bench.report import parse

ROOT = Path(__file__).resolve().parent.parent

# (id, module, full arguments, quick arguments)
SUITE = [
    ("P1", "bench.drain", ["--runs", "3"], ["--runs", "1", "--records", "20000"]),
    ("P1-1024B", "bench.drain", ["--runs", "3", "--size", "1024"], ["--runs", "1", "--records", "20000", "--size", "1024"]),
    ("P1k", "bench.drain", ["--runs", "3", "--kpl"], ["--runs", "1", "--records", "20000", "--kpl"]),
    ("P2", "bench.command_latency", ["--commands", "10"], ["--commands", "4"]),
    ("P3", "bench.ui", ["--runs", "3"], ["--runs", "1", "--seconds", "3", "--records", "20000"]),
    ("P4", "bench.lineage", ["--runs", "7"], ["--runs", "3"]),
    ("P5", "bench.flush", ["--runs", "15"], ["--runs", "3"]),
    ("P6", "bench.memory", ["--runs", "3"], ["--runs", "1", "--records", "100000", "--records-many", "20000"]),
    ("P7", "bench.demo_timing", ["--runs", "5"], ["--runs", "2"]),
    ("P8", "bench.fleet", ["--trials", "5"], ["--trials", "1", "--window", "10", "--failover", "3", "--part", "rate,failover"]),
    ("P9", "bench.attach", ["--runs", "3"], ["--runs", "1", "--shards", "200", "--seconds", "12"]),
    ("P10", "bench.metrics", ["--runs", "5"], ["--runs", "1", "--records", "50000", "--render-runs", "5"]),
    ("P11", "bench.tail", ["--runs", "3"], ["--runs", "1", "--records", "20000"]),
    ("P12", "bench.latency", ["--runs", "2"], ["--runs", "1", "--seconds", "5"]),
    ("P14", "bench.poison", ["--runs", "3"], ["--runs", "1", "--records", "20000", "--every", "5000"]),
]  # fmt: skip


def machine() -> list[str]:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = "?"
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f"{kb / 1024 / 1024:.0f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    ).stdout.strip()
    return [
        f"- when: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, commit {commit or '?'}",
        f"- machine: {os.cpu_count()} cores ({cpu}), {mem} RAM, {platform.platform()}",
        f"- Python {platform.python_version()}",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", default="", help="comma-separated ids: P1,P3,...")
    parser.add_argument("--out", default=str(ROOT / "bench" / "RESULTS.md"))
    args = parser.parse_args()
    only = {p.strip() for p in args.only.split(",") if p.strip()}
    rows: list[tuple[str, ...]] = []
    sections: list[str] = []
    started = time.monotonic()
    for pid, module, full, quick in SUITE:
        if only and pid not in only:
            continue
        argv = [sys.executable, "-m", module, *(quick if args.quick else full)]
        command = f"python -m {module} {' '.join(quick if args.quick else full)}"
        print(f"== {pid}: {command}", flush=True)
        t0 = time.monotonic()
        proc = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, check=False)
        took = time.monotonic() - t0
        print(proc.stdout, end="", flush=True)
        found = [r for r in map(parse, proc.stdout.splitlines()) if r is not None]
        if proc.returncode != 0 or not found:
            found = [(pid, f"`{command}` failed (exit {proc.returncode})", "-", "-", "NO")]
            print(proc.stderr[-3000:], file=sys.stderr)
        rows.extend(found)
        output = "\n".join(line for line in proc.stdout.splitlines() if parse(line) is None)
        sections.append(f"### {pid}: `{command}` ({took:.0f} s)\n\n```\n{output.strip()}\n```\n")
    lines = [
        "# Benchmark results",
        "",
        "Written by `python -m bench`"
        + (" --quick (small workloads)" if args.quick else "")
        + f" in {time.monotonic() - started:.0f} s. Figures are medians of the runs shown below"
        " each; ratios are measured within one run, contenders alternating.",
        "",
        *machine(),
        "",
        "| | what | figure | target | met |",
        "|---|---|---|---|---|",
        *(f"| {p} | {w} | {f} | {t} | {m} |" for p, w, f, t, m in rows),
        "",
        "## Runs",
        "",
        *sections,
    ]
    Path(args.out).write_text("\n".join(lines))
    print(f"wrote {args.out}")
    missed = [r for r in rows if r[4] != "yes"]
    if missed:
        print("targets missed: " + "; ".join(f"{r[0]} {r[1]}" for r in missed))


if __name__ == "__main__":
    main()
