#!/usr/bin/env bash
# The walkthrough (docs/walkthrough.md) with marketctl instead of grpcurl: from a
# bid to a delivered result, with the errors a person meets on the way. Run it
# against running services, e.g. after `make run` in another terminal:
#
#   bash scripts/walkthrough_marketctl.sh
#
# Environment:
#   MARKETCTL            the marketctl binary (default: .venv/bin/marketctl)
#   PYTHON               reads ids out of --json answers (default: .venv/bin/python)
#   MARKETCTL_BIDS       the bids service (default 127.0.0.1:50051)
#   MARKETCTL_EXECUTION  the execution service (default 127.0.0.1:50052)
#
# Every command is printed before it runs; the script stops at the first
# unexpected answer. Provoked errors are checked by marketctl's exit code
# (docs/marketctl.md) and the ErrorInfo reason it prints on stderr.
set -euo pipefail

ROOT=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
MARKETCTL=${MARKETCTL:-$ROOT/.venv/bin/marketctl}
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
WORK=$(mktemp -d)
trap 'rm -rf -- "$WORK"' EXIT
ERR=$WORK/err.txt

fail() { echo "walkthrough: FAILED: $*" >&2; exit 1; }
show() { printf '\n$ marketctl'; printf ' %q' "$@"; printf '\n'; }

# marketctl ARGS...: run it, echo its output, fail on a non-zero exit.
mc() {
  show "$@"
  "$MARKETCTL" "$@" 2>"$ERR" || { cat "$ERR" >&2; fail "marketctl $1 $2 exited $?"; }
  cat "$ERR" >&2
}

# expect CODE REASON ARGS...: marketctl must exit CODE and name REASON on stderr.
expect() {
  local want=$1 reason=$2 got=0
  shift 2
  show "$@"
  "$MARKETCTL" "$@" 2>"$ERR" || got=$?
  cat "$ERR"
  [[ $got == "$want" ]] || fail "exit $got, wanted $want"
  grep -q -- "$reason" "$ERR" || fail "no $reason on stderr"
  echo "ok: exit $got, $reason"
}

# field JSON PATH: one value out of a --json answer (PATH like bid.bid_id).
field() {
  "$PYTHON" -c 'import json,sys
v = json.loads(sys.argv[1])
for k in sys.argv[2].split("."): v = v[k]
print(v)' "$1" "$2"
}

echo "== bids"
mc bids place --marketplace upwork --job-id job-42 --agent-id agent-7 \
  --amount 120.50 --currency USD --proposal "A haiku about gRPC, delivered today."
R=$("$MARKETCTL" --json bids place --marketplace upwork --job-id job-43 --agent-id agent-7 \
  --amount 99 --currency USD --proposal "A haiku about gRPC")
BID=$(field "$R" bid.bid_id)
echo "BID=$BID"
mc bids get "$BID"
mc bids list --agent-id agent-7 --status pending

echo "== errors: exit code by kind, reason and every bad field on stderr"
expect 5 BID_ALREADY_ACTIVE bids place --marketplace upwork --job-id job-43 \
  --agent-id agent-7 --amount 80 --currency USD --proposal "Cheaper!"
expect 3 "field amount" bids place --marketplace upwork --job-id job-44 \
  --agent-id "" --amount -1 --currency USD
expect 4 BID_NOT_FOUND bids get 00000000-0000-4000-8000-000000000000

echo "== accept: the bid becomes a task"
R=$("$MARKETCTL" --json bids accept "$BID" --client-email alice@example.com \
  --title "Write a haiku" --description "About gRPC")
TASK=$(field "$R" task.task_id)
echo "TASK=$TASK"
mc bids events "$BID"
mc tasks get "$TASK"

echo "== a one-shot completion"
mc complete --prompt "Say hello"

echo "== execution: submit, watch live until it ends, read it"
R=$("$MARKETCTL" --json executions submit --task-id "$TASK" --prompt "Write a haiku About gRPC")
EXE=$(field "$R" execution.execution_id)
echo "EXE=$EXE"
mc executions watch "$EXE"
mc executions get "$EXE"
mc tasks events "$TASK"
R=$("$MARKETCTL" --json tasks get "$TASK")
[[ $(field "$R" task.status) == TASK_STATUS_COMPLETED ]] || fail "task not completed"
echo "ok: task.status = TASK_STATUS_COMPLETED"

echo "== delivery"
R=$("$MARKETCTL" --json deliveries token "$TASK" --ttl 1h)
TOKEN=$(field "$R" token)
R=$("$MARKETCTL" --json deliveries get "$TOKEN")
echo "ok: delivery.result = $(field "$R" delivery.result)"
expect 4 DELIVERY_NOT_FOUND deliveries get not-a-real-token
mc deliveries revoke "$TOKEN"
expect 4 DELIVERY_NOT_FOUND deliveries get "$TOKEN"

echo
echo "walkthrough: OK"
