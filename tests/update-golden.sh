#!/usr/bin/env bash
# Regenerates the golden /metrics files from the fixture trees. Review the diff before committing: a golden file
# changes only when the exporter's output is meant to change.
#
#   python3 tests/fixtures/make_tcp_fixture.py      # only when a fixture tree itself changed;
#   python3 tests/fixtures/make_ipvs_fixture.py     # each script rewrites its own tree
#   python3 tests/fixtures/make_memory_fixture.py
#   python3 tests/fixtures/make_node_fixture.py --small
#   tests/update-golden.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
UPDATE_GOLDEN=1 cargo test -p nodesleuth --test golden --test memory_golden -- golden_metrics all_collectors_on_one_node_match_golden
git status --short -- tests/fixtures
