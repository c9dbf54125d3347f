#!/usr/bin/env bash
# The sumsvc API with curl, step by step: the commands of README.md ("The API"), run
# against a running service. Each step prints its command, then the answer.
#
#   cargo run -- dev &              # or any running sumsvc
#   examples/curl.sh [BASE_URL]     # default http://127.0.0.1:8000
set -euo pipefail
base=${1:-http://127.0.0.1:8000}

# Prints a command as it would be typed, runs it, and ends its answer with a newline.
run() {
  printf '\n$'
  for arg in "$@"; do
    if [[ $arg =~ ^[[:alnum:]_./:=@%+-]+$ ]]; then printf ' %s' "$arg"; else printf " '%s'" "$arg"; fi
  done
  printf '\n'
  "$@"
  printf '\n'
}

echo "# Sum and wait for the answer: exact, 0.3 and not 0.30000000000000004."
run curl -sS "$base/sync/sum" -H 'content-type: application/json' -d '{"args": [0.1, 0.2]}'

echo
echo "# Wait at most 2 seconds; past that the answer is 202 with a session to poll"
echo "# (-i shows the status and the headers: Preference-Applied, or Location on a 202)."
run curl -sSi "$base/sync/sum" -H 'content-type: application/json' -H 'Prefer: wait=2' \
  -d '{"args": [1, 2]}'

echo
echo "# Submit, then poll with the session id until the status is no longer pending."
submitted=$(run curl -sS "$base/async/post_task" -H 'content-type: application/json' \
  -d '{"args": [1, 2.5]}')
echo "$submitted"
session_id=$(printf '%s' "$submitted" | sed -nE 's/.*"session_id":([0-9]+).*/\1/p')
for _ in $(seq 100); do
  answer=$(run curl -sS "$base/async/get_task_result?session_id=$session_id")
  case $answer in
  *'"status":"pending"'*) sleep 0.1 ;;
  *) break ;;
  esac
done
echo "$answer"

echo
echo "# Or wait for the result: Prefer: wait=N answers the moment the task ends."
run curl -sSi "$base/async/tasks/$session_id" -H 'Prefer: wait=5'

echo
echo "# Results as server-sent events, one per session as its task ends, then end."
run curl -sSN "$base/async/events?session_id=$session_id"

echo
echo "# Cancel a task not computed yet; one done already answers 409 with its result."
run curl -sS -X DELETE "$base/async/tasks/$session_id"

echo
echo "# Errors are problem details (RFC 9457); detail says what is wrong and what to do."
run curl -sS "$base/sync/sum" -H 'content-type: application/json' -d '{"args": [1, "two"]}'
run curl -sS "$base/async/get_task_result?session_id=0"

echo
echo "# Liveness, readiness (each dependency and the workers), the OpenAPI document."
run curl -sS "$base/healthz"
run curl -sS "$base/readyz"
run curl -sS -o /dev/null -w '%{http_code} %{content_type}\n' "$base/openapi.json"
