#!/usr/bin/env bash
# Codex CLI against a running genspark2api, over the Responses API (issue #11).
#
# Installs @openai/codex from npm into a scratch folder (first argument, or a new temp dir),
# writes a Codex config whose model provider is this service (`wire_api = "responses"`), runs
# one non-interactive task with `codex exec`, and prints what Codex answered.
#
#   python genspark2api.py --demo --port 7391 &
#   GENSPARK2API_BASE_URL=http://127.0.0.1:7391/v1 scripts/agents/codex.sh /tmp/codex "Say hello."
#
# Environment: GENSPARK2API_BASE_URL (default http://127.0.0.1:7055/v1), GENSPARK2API_KEY (the
# service's API_SECRET; any value for an open service), CODEX_MODEL (default claude-sonnet-4-6),
# CODEX_VERSION (npm version or tag, default latest).
set -euo pipefail

scratch="${1:-$(mktemp -d -t codex-XXXXXX)}"
task="${2:-Reply with one short sentence that says hello. Do not run any commands.}"
base="${GENSPARK2API_BASE_URL:-http://127.0.0.1:7055/v1}"
model="${CODEX_MODEL:-claude-sonnet-4-6}"
export GENSPARK2API_KEY="${GENSPARK2API_KEY:-not-needed}"

mkdir -p "$scratch"
scratch="$(cd "$scratch" && pwd)"
codex="$scratch/node_modules/.bin/codex"
if [ ! -x "$codex" ]; then
    echo "installing @openai/codex into $scratch ..." >&2
    npm install --no-audit --no-fund --loglevel=error --prefix "$scratch" "@openai/codex@${CODEX_VERSION:-latest}" >&2
fi

# A Codex home of its own, so the user's ~/.codex (and its login) is neither read nor changed.
export CODEX_HOME="$scratch/codex-home"
mkdir -p "$CODEX_HOME" "$scratch/work"
cat > "$CODEX_HOME/config.toml" <<EOF
model = "$model"
model_provider = "genspark2api"

[model_providers.genspark2api]
name = "genspark2api"
base_url = "$base"
env_key = "GENSPARK2API_KEY"
wire_api = "responses"
EOF

echo "codex $("$codex" --version | awk '{print $NF}') -> $base ($model)" >&2
"$codex" exec --skip-git-repo-check --ephemeral --sandbox read-only --color never \
    --cd "$scratch/work" --output-last-message "$scratch/answer.txt" "$task" </dev/null >&2
echo "--- Codex answered:" >&2
cat "$scratch/answer.txt"
