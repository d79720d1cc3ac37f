#!/usr/bin/env bash
# The project's test command: the whole test suite beside a throwaway PostgreSQL cluster (the tests
# of the PostgreSQL queue need one and fail without it). Arguments go to `swift test`.
#   usage: scripts/test.sh [swift test options]      e.g. scripts/test.sh --filter PostgresQueueTests
set -euo pipefail
cd "$(dirname "$0")/.."
exec scripts/with_postgres.sh swift test "$@"
