#!/usr/bin/env bash
# Runs a command beside a throwaway PostgreSQL cluster, for the tests of the PostgreSQL queue.
#
# Installs PostgreSQL from the system's packages when it is missing (Debian: `postgresql`), creates
# a cluster in a temporary folder (owned by the `postgres` system user when run as root: PostgreSQL
# refuses to run as root), starts it with fsync on, listening on 127.0.0.1 on a free port and on a
# unix socket in that folder, creates the database `taskhost_test`, exports
# TASKHOST_TEST_DATABASE_URL=postgres://postgres:<password>@127.0.0.1:<port>/taskhost_test and runs
# the command. On exit (the command's end, an error or Ctrl-C) the cluster is stopped and removed,
# and the command's exit status is returned.
#   usage: scripts/with_postgres.sh CMD [ARGS...]      e.g. scripts/with_postgres.sh swift test
#   KEEP=1 keeps the folder (with the server's log, `postgres.log`) and prints where it is.
# When TASKHOST_TEST_DATABASE_URL is already set, the command runs against that database instead.
set -euo pipefail

if [ $# -eq 0 ]; then
    echo "usage: $0 CMD [ARGS...]" >&2
    exit 2
fi
if [ -n "${TASKHOST_TEST_DATABASE_URL:-}" ]; then
    echo "== with_postgres: TASKHOST_TEST_DATABASE_URL is set already; using that database" >&2
    exec "$@"
fi

bindir() {
    local dir
    dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
    if [ -n "$dir" ] && [ -x "$dir/initdb" ]; then echo "$dir"; fi
}

pgbin=$(bindir)
if [ -z "$pgbin" ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "with_postgres: PostgreSQL is not installed; run as root or install it: apt-get install -y postgresql" >&2
        exit 1
    fi
    echo "== with_postgres: installing PostgreSQL (apt-get install postgresql)" >&2
    apt-get update -qq
    # The package's own cluster is not wanted: only the binaries are used.
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >&2
    pgbin=$(bindir)
    if [ -z "$pgbin" ]; then
        echo "with_postgres: installed postgresql, but found no /usr/lib/postgresql/*/bin/initdb" >&2
        exit 1
    fi
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/taskhost-pg.XXXXXX")
chmod 755 "$work"
as_pg=()
if [ "$(id -u)" -eq 0 ]; then
    chown postgres: "$work"
    as_pg=(runuser -u postgres --)
fi

started=0
cleanup() {
    local status=$?
    if [ "$started" = 1 ]; then
        "${as_pg[@]}" "$pgbin/pg_ctl" -D "$work/data" -m fast -w stop >/dev/null 2>&1 || true
    fi
    if [ "${KEEP:-0}" = 1 ]; then
        echo "== with_postgres: kept $work" >&2
    else
        rm -rf "$work"
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

password=$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')
printf '%s\n' "$password" >"$work/pwfile"
chmod 644 "$work/pwfile"
# --no-sync only skips initdb's own flush of the new files; the server runs with fsync on.
"${as_pg[@]}" "$pgbin/initdb" -D "$work/data" -U postgres --pwfile="$work/pwfile" --auth-local=trust \
    --auth-host=scram-sha-256 --no-sync -E UTF8 --locale=C >"$work/initdb.log" 2>&1 || {
    cat "$work/initdb.log" >&2
    exit 1
}
rm -f "$work/pwfile"

# A free port: a random one nobody answers on; a start that still loses the race is tried again.
for try in 1 2 3 4 5 6 7 8; do
    port=$((20000 + RANDOM % 30000))
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then continue; fi
    if "${as_pg[@]}" "$pgbin/pg_ctl" -D "$work/data" -l "$work/postgres.log" -w -t 60 start \
        -o "-c listen_addresses=127.0.0.1 -p $port -k $work -c fsync=on -c max_connections=200" >/dev/null; then
        started=1
        break
    fi
    if ! grep -q "Address already in use" "$work/postgres.log" 2>/dev/null; then
        cat "$work/postgres.log" >&2 || true
        exit 1
    fi
done
if [ "$started" != 1 ]; then
    echo "with_postgres: found no free port to listen on" >&2
    exit 1
fi

"${as_pg[@]}" "$pgbin/createdb" -h "$work" -p "$port" -U postgres taskhost_test
export TASKHOST_TEST_DATABASE_URL="postgres://postgres:$password@127.0.0.1:$port/taskhost_test"
echo "== with_postgres: PostgreSQL $("$pgbin/postgres" --version | awk '{print $3}') on 127.0.0.1:$port (socket in $work)" >&2

set +e
"$@"
status=$?
set -e
exit "$status"
