#!/usr/bin/env bash
# Benchmark of the alert relay: webhook notifications per second delivered to a fast fake robot on loopback
# (rate limit lifted); prints each round and the median. Not a test: nothing is asserted about speed.
# Knobs (environment): ROUNDS, NOTIFICATIONS (per round), CONCURRENCY, ALERTS (per notification).
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo bench -p nodesleuth-relay --bench throughput
