#!/bin/sh
# One backup of the database $TASKHOST_TARGET_ID, run by the Command plugin of
# examples/backups.yaml. The task's data arrives on stdin; the "dump" is that data.
# Exit 0: done; exit 75: try again later (retryable); any other exit: failed.
set -eu
db=$TASKHOST_TARGET_ID
out=out/backups
mkdir -p "$out"
data=$(cat)

# A flaky backup fails on its first attempt with 75 (EX_TEMPFAIL), the retryable status.
case $data in
*'"flaky":true'*)
    if [ "$TASKHOST_ATTEMPT" = 1 ]; then
        echo "$db: lock timeout, try again" >&2
        exit 75
    fi ;;
esac

# Prove that one database's backups never overlap: a second backup of $db running now would
# find the lock taken and fail (exit 1, not retried).
if ! mkdir "$out/.lock-$db" 2>/dev/null; then
    echo "$db: another backup is running" >&2
    exit 1
fi
trap 'rmdir "$out/.lock-$db"' EXIT
sleep 0.05
file="$out/$db-$TASKHOST_SEQUENCE.sql"
{
    echo "-- backup of $db, task ${TASKHOST_TASK_ID:-?}, sequence $TASKHOST_SEQUENCE, attempt $TASKHOST_ATTEMPT"
    echo "-- $data"
} >"$file"
echo "$file"
