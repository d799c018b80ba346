#!/usr/bin/env bash
# Try the two agent CLIs against this service on its built-in simulator (issue #11):
# starts `python genspark2api.py --demo` on a free loopback port with a throwaway API key, runs
# one non-interactive task with Codex CLI (`codex exec`, over /v1/responses) and one with Claude
# Code (`claude -p`, over /v1/messages), prints what each answered, and stops the service.
#
#   scripts/try_agents.sh [SCRATCH_DIR]
#
# Both CLIs are installed from the npm registry into SCRATCH_DIR (default: a new temp dir; reused
# when already there); nothing touches ~/.codex or ~/.claude. Needs node and npm. The answers are
# the simulator's (it echoes the question), so this proves the wire, not a model.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
scratch="${1:-$(mktemp -d -t genspark2api-agents-XXXXXX)}"
mkdir -p "$scratch"
python="${PYTHON:-python3}"
[ -x "$root/.venv/bin/python" ] && python="$root/.venv/bin/python"

port="$("$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
key="try-agents-$RANDOM$RANDOM"
log="$scratch/service.log"
API_SECRET="$key" HOST=127.0.0.1 PORT="$port" "$python" "$root/genspark2api.py" --demo >"$log" 2>&1 &
service=$!
trap 'kill "$service" 2>/dev/null; wait "$service" 2>/dev/null || true' EXIT

for _ in $(seq 1 100); do   # at most ~10 s for the service to come up
    if curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1; then break; fi
    sleep 0.1
done
curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null || { echo "the service did not start:"; cat "$log"; exit 1; }
echo "genspark2api --demo on http://127.0.0.1:$port (log: $log)"

status=0
echo; echo "=== Codex CLI (codex exec, wire_api = responses)"
if ! GENSPARK2API_BASE_URL="http://127.0.0.1:$port/v1" GENSPARK2API_KEY="$key" \
        timeout 300 "$here/agents/codex.sh" "$scratch/codex" "Reply with one short sentence: what is the capital of France?"; then
    echo "(Codex CLI failed)"; status=1
fi
echo; echo "=== Claude Code (claude -p, ANTHROPIC_BASE_URL)"
if ! GENSPARK2API_URL="http://127.0.0.1:$port" GENSPARK2API_KEY="$key" \
        timeout 300 "$here/agents/claude.sh" "$scratch/claude"; then
    echo "(Claude Code failed)"; status=1
fi
exit "$status"
