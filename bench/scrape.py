"""Prometheus' part in bench/metrics.py: GET a /metrics URL every INTERVAL seconds and parse it
with prometheus_client's parser, in a process of its own, until SIGTERM; then print the number
of scrapes that succeeded.

    python -m bench.scrape URL INTERVAL
"""

from __future__ import annotations

import signal
import sys
import time
import urllib.request

from prometheus_client.parser import text_string_to_metric_families


def main() -> None:
    url, interval = sys.argv[1], float(sys.argv[2])
    done = False

    def stop(*_: object) -> None:
        nonlocal done
        done = True

    signal.signal(signal.SIGTERM, stop)
    scrapes = 0
    next_at = time.monotonic()
    while not done:
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                families = list(text_string_to_metric_families(resp.read().decode()))
            scrapes += bool(families)
            next_at += interval
        except OSError:  # not listening yet
            next_at = time.monotonic() + 0.05
        time.sleep(max(0.0, next_at - time.monotonic()))
    print(scrapes, flush=True)


if __name__ == "__main__":
    main()
