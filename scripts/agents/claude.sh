#!/usr/bin/env bash
# Run Claude Code (npm @anthropic-ai/claude-code) once, non-interactively, against this service.
#
#   scripts/agents/claude.sh [SCRATCH_DIR]
#
# Installs Claude Code into SCRATCH_DIR (default: a new temp dir; reused when it is already
# there), then runs `claude -p "$CLAUDE_TASK"` in SCRATCH_DIR/work and prints its answer.
#   GENSPARK2API_URL   the service's root URL (default http://127.0.0.1:7055; no /v1)
#   GENSPARK2API_KEY   its API_SECRET (default "demo"; any value works on an open API)
#   CLAUDE_MODEL       model name sent (default: Claude Code's own default)
#   CLAUDE_TASK        the task (default: a one-line question that needs no tools)
#   CLAUDE_CODE_VERSION npm version or tag (default latest)
# Start the service first, e.g. `python genspark2api.py --demo`.
set -euo pipefail

scratch="${1:-$(mktemp -d -t claude-code-XXXXXX)}"
url="${GENSPARK2API_URL:-http://127.0.0.1:7055}"
key="${GENSPARK2API_KEY:-demo}"
task="${CLAUDE_TASK:-Reply with one short sentence: what is the capital of France?}"
version="${CLAUDE_CODE_VERSION:-latest}"

mkdir -p "$scratch/work"
if [ ! -x "$scratch/node_modules/.bin/claude" ]; then
    echo "installing @anthropic-ai/claude-code@$version into $scratch ..." >&2
    (cd "$scratch" && npm install --silent --no-audit --no-fund "@anthropic-ai/claude-code@$version" >&2)
fi
echo "claude $("$scratch/node_modules/.bin/claude" --version 2>/dev/null || echo '?') -> $url" >&2

model_args=()
if [ -n "${CLAUDE_MODEL:-}" ]; then
    model_args=(--model "$CLAUDE_MODEL")
fi

# A private HOME: no login, settings or history of the user's own Claude Code is read or written.
# No telemetry, error reporting, update checks or other traffic to Anthropic: only our service.
cd "$scratch/work"
HOME="$scratch/home" \
ANTHROPIC_BASE_URL="$url" \
ANTHROPIC_API_KEY="$key" \
DISABLE_TELEMETRY=1 \
DISABLE_ERROR_REPORTING=1 \
DISABLE_AUTOUPDATER=1 \
CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1 \
    timeout "${CLAUDE_TIMEOUT:-300}" "$scratch/node_modules/.bin/claude" -p "$task" \
        --max-turns "${CLAUDE_MAX_TURNS:-3}" "${model_args[@]}"
