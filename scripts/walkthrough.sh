#!/usr/bin/env bash
# A guided tour of both services with grpcurl, server reflection and JSON bodies
# (no proto files): from a bid to a delivered result. Run it against running
# services, e.g. after `make run` in another terminal:
#
#   bash scripts/walkthrough.sh
#
# Environment:
#   GRPCURL    the grpcurl binary (default: .venv/bin/grpcurl, installed by `make`)
#   BIDS       the bids service address (default 127.0.0.1:50051)
#   EXECUTION  the execution service address (default 127.0.0.1:50052)
#   JSON_TOOL  jq | python | auto (default: jq when installed, else .venv/bin/python)
#
# Every command is printed before it runs. The script stops at the first
# unexpected failure; the errors it provokes on purpose are checked by status
# code (grpcurl exits with 64 + the gRPC code) and by the ErrorInfo reason that
# grpcurl decodes from the status details.
set -euo pipefail

ROOT=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
GRPCURL=${GRPCURL:-$ROOT/.venv/bin/grpcurl}
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
BIDS=${BIDS:-127.0.0.1:50051}
EXECUTION=${EXECUTION:-127.0.0.1:50052}
JSON_TOOL=${JSON_TOOL:-auto}

BID_SVC=marketplace.bids.v1.BidService
EXE_SVC=marketplace.execution.v1.ExecutionService
HEALTH=grpc.health.v1.Health

if [[ $JSON_TOOL == auto ]]; then
  if command -v jq >/dev/null 2>&1; then JSON_TOOL=jq; else JSON_TOOL=python; fi
fi
case $JSON_TOOL in
  jq | python) ;;
  *) echo "JSON_TOOL must be jq, python or auto (got '$JSON_TOOL')" >&2; exit 2 ;;
esac

WORK=$(mktemp -d)
trap 'rm -rf -- "$WORK"' EXIT
OUT=$WORK/out.json
ERR=$WORK/err.txt
STEP=0

# ---------------------------------------------------------------- helpers

fail() {
  echo "walkthrough: FAILED: $*" >&2
  exit 1
}

step() {
  STEP=$((STEP + 1))
  printf '\n== %d. %s\n' "$STEP" "$*"
}

# Print a command the way you would type it (grpcurl for the binary, single
# quotes around JSON bodies).
show() {
  local line='$' arg
  for arg in "$@"; do
    if [[ $arg == "$GRPCURL" ]]; then
      arg=grpcurl
    elif [[ ! $arg =~ ^[A-Za-z0-9_./:=@%+,-]+$ ]]; then
      arg="'${arg//\'/\'\\\'\'}'"
    fi
    line+=" $arg"
  done
  printf '\n%s\n' "$line"
}

uuid() {
  if [[ -r /proc/sys/kernel/random/uuid ]]; then
    cat /proc/sys/kernel/random/uuid
  else
    "$PYTHON" -c 'import uuid; print(uuid.uuid4())'
  fi
}

# json_get FILE PATH: the value at a jq-style path (.a.b, .a[0].b); strings
# raw, anything else as JSON. Fails when the value is missing or null.
json_get() {
  local file=$1 path=$2
  if [[ $JSON_TOOL == jq ]]; then
    jq -er "$path" <"$file" || fail "no value at $path in: $(cat "$file")"
  else
    "$PYTHON" -c '
import json, re, sys
value = json.load(sys.stdin)
try:
    for key, index in re.findall(r"\.(\w+)|\[(\d+)\]", sys.argv[1]):
        value = value[key] if key else value[int(index)]
except (KeyError, IndexError, TypeError):
    sys.exit(1)
if value is None:
    sys.exit(1)
print(value if isinstance(value, str) else json.dumps(value))
' "$path" <"$file" || fail "no value at $path in: $(cat "$file")"
  fi
}

# bad_request_fields FILE: the fields of a google.rpc.BadRequest, comma separated.
bad_request_fields() {
  if [[ $JSON_TOOL == jq ]]; then
    jq -r '[.field_violations[].field] | join(",")' <"$1"
  else
    "$PYTHON" -c 'import json, sys; print(",".join(v["field"] for v in json.load(sys.stdin)["field_violations"]))' <"$1"
  fi
}

# expect_fields ACTUAL_CSV FIELD...: every FIELD is among the BadRequest fields.
expect_fields() {
  local csv=$1 field
  shift
  for field in "$@"; do
    [[ ",$csv," == *",$field,"* ]] || fail "BadRequest: expected a violation of '$field', got '$csv'"
  done
  echo "   ok: BadRequest fields = $csv"
}

# expect_eq WHAT ACTUAL EXPECTED
expect_eq() {
  [[ $2 == "$3" ]] || fail "$1: expected '$3', got '$2'"
  echo "   ok: $1 = $2"
}

# print_output FILE: the file, ending with exactly one newline.
print_output() {
  cat "$1"
  if [[ -s $1 && -n $(tail -c 1 "$1") ]]; then echo; fi
  return 0
}

# rpc ARGS...: run grpcurl, show its output, keep it in $OUT; any error stops the walkthrough.
rpc() {
  show "$GRPCURL" "$@"
  if ! "$GRPCURL" "$@" >"$OUT" 2>"$ERR"; then
    cat "$OUT" "$ERR" >&2
    fail "grpcurl $* exited non-zero"
  fi
  print_output "$OUT"
}

# detail TYPE: the JSON of the google.rpc.TYPE detail grpcurl printed in $ERR
# (its lines look like "  1)<TAB>{"@type":"type.googleapis.com/google.rpc.ErrorInfo",...}").
detail() {
  sed -n 's/^[[:space:]]*[0-9][0-9]*)[[:space:]]*//p' "$ERR" |
    grep -F "\"@type\":\"type.googleapis.com/google.rpc.$1\"" >"$WORK/$1.json" ||
    fail "grpcurl printed no decoded google.rpc.$1 detail"
  echo "$WORK/$1.json"
}

# rpc_error CODE_NAME CODE_NUMBER REASON ARGS...: run grpcurl expecting that error.
rpc_error() {
  local name=$1 number=$2 reason=$3 status=0
  shift 3
  show "$GRPCURL" "$@"
  "$GRPCURL" "$@" >"$OUT" 2>"$ERR" || status=$?
  print_output "$OUT"
  print_output "$ERR"
  ((status == 64 + number)) ||
    fail "expected $name (grpcurl exit $((64 + number))), got exit $status"
  grep -q "Code: $name\$" "$ERR" || fail "expected 'Code: $name' in grpcurl's output"
  echo "   ok: code = $name"
  expect_eq "ErrorInfo.reason" "$(json_get "$(detail ErrorInfo)" .reason)" "$reason"
}

# ---------------------------------------------------------------- the tour

echo "grpcurl = $GRPCURL"
echo "bids = $BIDS, execution = $EXECUTION, JSON parsed with $JSON_TOOL"
RUN=$(uuid)
JOB_ID="job-${RUN:0:8}"
AGENT_ID=agent-7
CLIENT_EMAIL=alice@example.com

step "List the services (server reflection)"
rpc -plaintext "$BIDS" list
rpc -plaintext "$EXECUTION" list

step "Describe them"
rpc -plaintext "$BIDS" describe "$BID_SVC"
rpc -plaintext "$EXECUTION" describe "$EXE_SVC"
rpc -plaintext "$BIDS" describe marketplace.bids.v1.PlaceBidRequest

step "Health: overall and per service"
for target in "$BIDS" "$EXECUTION"; do
  rpc -plaintext "$target" "$HEALTH/Check"
  expect_eq "health($target)" "$(json_get "$OUT" .status)" SERVING
done
rpc -plaintext -d "{\"service\":\"$BID_SVC\"}" "$BIDS" "$HEALTH/Check"
expect_eq "health($BID_SVC)" "$(json_get "$OUT" .status)" SERVING
rpc -plaintext -d "{\"service\":\"$EXE_SVC\"}" "$EXECUTION" "$HEALTH/Check"
expect_eq "health($EXE_SVC)" "$(json_get "$OUT" .status)" SERVING

step "A validation error: INVALID_ARGUMENT with every violated field (google.rpc.BadRequest)"
rpc_error InvalidArgument 3 INVALID_ARGUMENT -plaintext -d "{
  \"request_id\": \"not-a-uuid\", \"marketplace\": \"upwork\", \"job_id\": \"$JOB_ID\", \"agent_id\": \"$AGENT_ID\",
  \"amount\": {\"currency_code\": \"usd\", \"units\": \"-5\", \"nanos\": 500000000}, \"proposal\": \"cheap\"}" \
  "$BIDS" "$BID_SVC/PlaceBid"
FIELDS=$(bad_request_fields "$(detail BadRequest)")
expect_fields "$FIELDS" request_id amount.currency_code amount.nanos

step "PlaceBid: an agent bids on a job posted on an outside marketplace"
rpc -plaintext -d "{
  \"request_id\": \"$(uuid)\", \"marketplace\": \"upwork\", \"job_id\": \"$JOB_ID\", \"agent_id\": \"$AGENT_ID\",
  \"amount\": {\"currency_code\": \"USD\", \"units\": \"120\", \"nanos\": 500000000},
  \"proposal\": \"A haiku about gRPC, delivered today.\"}" \
  "$BIDS" "$BID_SVC/PlaceBid"
BID_ID=$(json_get "$OUT" .bid.bid_id)
expect_eq "bid.status" "$(json_get "$OUT" .bid.status)" BID_STATUS_PENDING

step "A second PENDING bid by the same agent on the same job: ALREADY_EXISTS"
rpc_error AlreadyExists 6 BID_ALREADY_ACTIVE -plaintext -d "{
  \"request_id\": \"$(uuid)\", \"marketplace\": \"upwork\", \"job_id\": \"$JOB_ID\", \"agent_id\": \"$AGENT_ID\",
  \"amount\": {\"currency_code\": \"USD\", \"units\": \"99\"}, \"proposal\": \"Cheaper!\"}" \
  "$BIDS" "$BID_SVC/PlaceBid"

step "GetBid and ListBids"
rpc -plaintext -d "{\"bid_id\": \"$BID_ID\"}" "$BIDS" "$BID_SVC/GetBid"
rpc -plaintext -d "{\"marketplace\": \"upwork\", \"job_id\": \"$JOB_ID\", \"page_size\": 10}" \
  "$BIDS" "$BID_SVC/ListBids"
expect_eq "ListBids first bid" "$(json_get "$OUT" '.bids[0].bid_id')" "$BID_ID"

step "AcceptBid with a malformed e-mail address: INVALID_ARGUMENT, nothing changes"
rpc_error InvalidArgument 3 INVALID_ARGUMENT -plaintext -d "{
  \"bid_id\": \"$BID_ID\", \"event_id\": \"$(uuid)\", \"client_email\": \"alice.example.com\",
  \"title\": \"Write a haiku\", \"description\": \"About gRPC\"}" \
  "$BIDS" "$BID_SVC/AcceptBid"
FIELDS=$(bad_request_fields "$(detail BadRequest)")
expect_fields "$FIELDS" client_email

step "AcceptBid: the client accepts; the bid becomes ACCEPTED and a task is created"
rpc -plaintext -d "{
  \"bid_id\": \"$BID_ID\", \"event_id\": \"$(uuid)\", \"client_email\": \"$CLIENT_EMAIL\",
  \"title\": \"Write a haiku\", \"description\": \"About gRPC\"}" \
  "$BIDS" "$BID_SVC/AcceptBid"
TASK_ID=$(json_get "$OUT" .task.task_id)
expect_eq "bid.status" "$(json_get "$OUT" .bid.status)" BID_STATUS_ACCEPTED
expect_eq "task.status" "$(json_get "$OUT" .task.status)" TASK_STATUS_PENDING

step "ListBidEvents: the audit trail of the bid"
rpc -plaintext -d "{\"bid_id\": \"$BID_ID\"}" "$BIDS" "$BID_SVC/ListBidEvents"
expect_eq "event.new_status" "$(json_get "$OUT" '.events[0].new_status')" BID_STATUS_ACCEPTED

step "Complete: a one-shot prompt, answered now (the offline provider needs no network)"
rpc -plaintext -d '{"prompt": "Say hello to the marketplace in one line."}' \
  "$EXECUTION" "$EXE_SVC/Complete"
json_get "$OUT" .text >/dev/null

step "SubmitExecution: run the accepted bid's task (prompt defaults to its title and description)"
rpc -plaintext -d "{\"request_id\": \"$(uuid)\", \"task_id\": \"$TASK_ID\"}" \
  "$EXECUTION" "$EXE_SVC/SubmitExecution"
EXECUTION_ID=$(json_get "$OUT" .execution.execution_id)

step "WatchExecution: stream status changes and attempts until a terminal state"
rpc -plaintext -max-time 60 -d "{\"execution_id\": \"$EXECUTION_ID\"}" \
  "$EXECUTION" "$EXE_SVC/WatchExecution"

step "GetExecution"
rpc -plaintext -d "{\"execution_id\": \"$EXECUTION_ID\"}" "$EXECUTION" "$EXE_SVC/GetExecution"
expect_eq "execution.status" "$(json_get "$OUT" .execution.status)" EXECUTION_STATUS_SUCCEEDED

step "GetTask: the execution service reported the result to the bids service"
rpc -plaintext -d "{\"task_id\": \"$TASK_ID\"}" "$BIDS" "$BID_SVC/GetTask"
expect_eq "task.status" "$(json_get "$OUT" .task.status)" TASK_STATUS_COMPLETED
RESULT=$(json_get "$OUT" .task.result)

step "CreateDeliveryToken: a one-time-shown token for the client, valid for an hour"
rpc -plaintext -d "{\"task_id\": \"$TASK_ID\", \"ttl\": \"3600s\"}" "$BIDS" "$BID_SVC/CreateDeliveryToken"
TOKEN=$(json_get "$OUT" .token)

step "GetDelivery with the token"
rpc -plaintext -d "{\"token\": \"$TOKEN\"}" "$BIDS" "$BID_SVC/GetDelivery"
expect_eq "delivery.task_id" "$(json_get "$OUT" .delivery.task_id)" "$TASK_ID"
expect_eq "delivery.result" "$(json_get "$OUT" .delivery.result)" "$RESULT"

step "GetDelivery with a wrong token: NOT_FOUND (the same answer as for an expired one)"
rpc_error NotFound 5 DELIVERY_NOT_FOUND -plaintext -d '{"token": "not-a-real-token"}' \
  "$BIDS" "$BID_SVC/GetDelivery"

printf '\nwalkthrough: OK (bid %s -> task %s -> execution %s -> delivered)\n' \
  "$BID_ID" "$TASK_ID" "$EXECUTION_ID"
