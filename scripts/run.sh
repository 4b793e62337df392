#!/usr/bin/env bash
# `make run`: migrate, start every service in the foreground, load demo data, and
# print a curl line to try the session API. Ctrl-C stops everything it started.
#
# Runs after `make bootstrap` (uv, .venv, Postgres/Redis/RabbitMQ answering).
# Every address comes from the BILLFOLD_* settings, so exporting e.g.
# BILLFOLD_SESSION_API_PORT=9080 or BILLFOLD_DATABASE_URL=... before `make run`
# moves the services and this script's checks together.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# Humans read these logs: console format unless the caller chose otherwise
# (auto would pick JSON as soon as the output is piped, e.g. into tee).
export BILLFOLD_LOG_FORMAT=${BILLFOLD_LOG_FORMAT:-console}
ready_timeout=${BILLFOLD_RUN_READY_TIMEOUT:-60}

log() { echo "run: $*" >&2; }

# The Makefile exports UV ("uv" or "python3 -m uv"). Ask it for the venv's Python
# once, then run everything from that venv directly: signals reach the services
# themselves rather than a `uv run` wrapper, and nothing re-syncs behind our back.
read -r -a uv <<<"${UV:-uv}"
py=$("${uv[@]}" run --no-sync python -c 'import sys; print(sys.executable)')
billfold=$(dirname "$py")/billfold
if [[ ! -x $billfold ]]; then
  log "no billfold CLI in $(dirname "$py"); run 'make bootstrap' first"
  exit 1
fi

# Default port of each service; the setting is BILLFOLD_<NAME>_PORT
# (session-api -> BILLFOLD_SESSION_API_PORT).
declare -A default_port=([session-api]=8080 [portal-web]=8081 [billing-sync]=8082 [notifier]=8083)

# Where to reach a service from here: 0.0.0.0 / :: listen everywhere, loopback included.
probe_host=${BILLFOLD_HOST:-127.0.0.1}
[[ $probe_host == 0.0.0.0 || $probe_host == :: ]] && probe_host=127.0.0.1

port_of() {
  local var="BILLFOLD_${1//-/_}_PORT"
  var=${var^^}
  echo "${!var:-${default_port[$1]:-}}"
}

http_ok() {
  if command -v curl >/dev/null; then
    curl -fsS -o /dev/null --max-time 2 "$1" 2>/dev/null
  else
    "$py" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)' "$1" 2>/dev/null
  fi
}

# --- stop everything we started, whatever way this script ends --------------------
own_group=()
command -v setsid >/dev/null && own_group=(setsid)
pids=()
names=()
ports=()
cleanup() {
  local status=$?
  trap - EXIT INT TERM
  if ((${#pids[@]})); then
    log "stopping ${names[*]}"
    # Each service leads its own process group (setsid below): signal the group so
    # anything a service spawned goes too.
    local pid
    for pid in "${pids[@]}"; do
      kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    done
    # Grace period for in-flight requests, then force.
    (
      sleep 10
      for pid in "${pids[@]}"; do
        kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
      done
    ) &
    local killer=$!
    wait "${pids[@]}" 2>/dev/null || true
    kill "$killer" 2>/dev/null || true
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- 0. local secrets ------------------------------------------------------------
# billing-sync encrypts each site's Stripe secrets with BILLFOLD_BILLING_SECRETS_KEY and
# has no default key (a default would be a key everybody knows). For a local run, make
# one once and keep it in .run/ (git-ignored), so what an earlier run stored still
# decrypts. Deployments set their own.
if [[ -z ${BILLFOLD_BILLING_SECRETS_KEY:-} ]]; then
  key_file=.run/billing-secrets.key
  if [[ ! -s $key_file ]]; then
    mkdir -p .run
    (umask 077 && "$py" -c 'import base64, os; print(base64.b64encode(os.urandom(32)).decode())' >"$key_file")
    log "generated a local BILLFOLD_BILLING_SECRETS_KEY in $key_file"
  fi
  BILLFOLD_BILLING_SECRETS_KEY=$(<"$key_file")
  export BILLFOLD_BILLING_SECRETS_KEY
fi

# --- 1. schema ------------------------------------------------------------------
log "applying migrations"
"$billfold" migrate

# --- 2. development notifier keys and SMTP sink ---------------------------------------
# The notifier's key pair is made on first run and kept under var/ (never a key in the
# repository); variables already set in the environment win.
var_dir=${BILLFOLD_RUN_VAR_DIR:-var}
mkdir -p "$var_dir"
keys_file="$var_dir/notifier-keys.env"
if [[ ! -s $keys_file ]]; then
  (umask 077 && "$billfold" notifier keygen >"$keys_file.tmp") && mv "$keys_file.tmp" "$keys_file"
  log "created a development notifier key pair in $keys_file"
fi
while IFS= read -r line; do
  key=${line%%=*}
  # Not IFS='=' splitting: that would eat the base64 padding at the end of the value.
  [[ $key == BILLFOLD_NOTIFIER_* && -z ${!key:-} ]] && export "$key=${line#*=}"
done <"$keys_file"

# Mail goes to a local SMTP sink (each message an .eml under $var_dir/mail, and a line
# with recipient, subject and link) unless BILLFOLD_SMTP_URL points somewhere else.
export BILLFOLD_SMTP_URL=${BILLFOLD_SMTP_URL:-smtp://127.0.0.1:1025}
sink_pid=()
if [[ $BILLFOLD_SMTP_URL =~ ^smtp://(127\.0\.0\.1|localhost):([0-9]+)/?$ ]]; then
  sink_port=${BASH_REMATCH[2]}
  log "starting smtp-sink on 127.0.0.1:$sink_port (mail in $var_dir/mail)"
  "${own_group[@]}" "$py" -m billfold_testing.smtp_sink --port "$sink_port" --dir "$var_dir/mail" \
    > >(trap '' INT TERM; exec sed -u "s/^/[smtp-sink] /") 2>&1 &
  pids+=("$!")
  sink_pid=("$!")
  names+=("smtp-sink")
  ports+=("")
fi

# --- 3. Stripe -------------------------------------------------------------------
# With no Stripe key and no API base, billing-sync talks to the fake Stripe
# (billfold_testing.stripe_fake), started here on 127.0.0.1:12111. With
# BILLFOLD_STRIPE_API_KEY set to a test-mode key and no base, it is real Stripe.
stripe_fake_port=""
if [[ -z ${BILLFOLD_STRIPE_API_BASE:-} && -z ${BILLFOLD_STRIPE_API_KEY:-} ]]; then
  stripe_fake_port=${BILLFOLD_RUN_STRIPE_FAKE_PORT:-12111}
  export BILLFOLD_STRIPE_API_BASE="http://127.0.0.1:$stripe_fake_port"
  log "starting the fake Stripe on $BILLFOLD_STRIPE_API_BASE (not Stripe; state lives in memory)"
  "${own_group[@]}" "$py" -m billfold_testing.stripe_fake --port "$stripe_fake_port" \
    > >(trap '' INT TERM; exec sed -u "s/^/[stripe-fake] /") 2>&1 &
  pids+=("$!")
  names+=("stripe-fake")
  ports+=("")
  deadline=$((SECONDS + ready_timeout))
  until http_ok "$BILLFOLD_STRIPE_API_BASE/_fake/health"; do
    if ! kill -0 "${pids[-1]}" 2>/dev/null || ((SECONDS >= deadline)); then
      log "the fake Stripe did not start on port $stripe_fake_port (in use? set BILLFOLD_RUN_STRIPE_FAKE_PORT)"
      exit 1
    fi
    sleep 0.2
  done
fi
# The fake takes any test-mode key.
[[ -n ${BILLFOLD_STRIPE_API_BASE:-} && -z ${BILLFOLD_STRIPE_API_KEY:-} ]] &&
  export BILLFOLD_STRIPE_API_KEY=sk_test_billfold_local_demo

# --- 4. services ------------------------------------------------------------------
# A service is any services/<name>/src/<module>/__main__.py (`python -m <module>`).
for main in services/*/src/*/__main__.py; do
  [[ -e $main ]] || continue
  name=${main#services/}
  name=${name%%/*}
  module=$(basename "$(dirname "$main")")
  port=$(port_of "$name")
  log "starting $name (python -m $module${port:+, port $port})"
  # setsid: the service gets its own session and process group, so the terminal's
  # Ctrl-C reaches only this script, which then stops the services in order
  # (without setsid, e.g. on macOS, Ctrl-C reaches them directly; same result).
  # The sed prefix names each log line; it ignores INT so that Ctrl-C does not cut
  # the pipe while services are still logging their shutdown.
  "${own_group[@]}" "$py" -m "$module" > >(trap '' INT TERM; exec sed -u "s/^/[$name] /") 2>&1 &
  pids+=("$!")
  names+=("$name")
  ports+=("$port")
done
if ((${#pids[@]} == ${#sink_pid[@]} + (stripe_fake_port != "" ? 1 : 0))); then
  log "no service to start yet (no services/*/src/*/__main__.py)"
  exit 1
fi

# --- 5. wait until every service says its dependencies answer ----------------------
for i in "${!pids[@]}"; do
  name=${names[$i]} pid=${pids[$i]} port=${ports[$i]}
  [[ $name == smtp-sink || $name == stripe-fake ]] && continue  # no /readyz (fake: waited above)
  if [[ -z $port ]]; then
    log "$name: no known port (set BILLFOLD_${name//-/_}_PORT); not waiting for it"
    continue
  fi
  url="http://$probe_host:$port/readyz"
  deadline=$((SECONDS + ready_timeout))
  until http_ok "$url"; do
    if ! kill -0 "$pid" 2>/dev/null; then
      log "$name exited before it was ready; its log is above"
      exit 1
    fi
    if ((SECONDS >= deadline)); then
      log "$name not ready at $url after ${ready_timeout}s"
      exit 1
    fi
    sleep 0.5
  done
  log "$name ready at http://$probe_host:$port"
done

# --- 6. demo data and a curl line to paste -------------------------------------------
# session-api makes the demo site and an API key; billing-sync (the only holder of Stripe
# keys) registers its webhook endpoint with Stripe and creates the demo customers there,
# then waits until its mirror shows them; a portal link is then asked for through
# session-api's API, as a tenant would.
api_url="http://$probe_host:$(port_of session-api)"
# Where Stripe delivers webhooks: billing-sync itself for the fake; real Stripe needs a
# public address (BILLFOLD_RUN_WEBHOOK_URL, e.g. a tunnel), else the mirror is filled by
# `billfold sync` (listing) instead.
webhook_url=${BILLFOLD_RUN_WEBHOOK_URL:-}
[[ -z $webhook_url && -n $stripe_fake_port ]] && webhook_url="http://$probe_host:$(port_of billing-sync)"

json_field() { "$py" -c 'import json, sys; print(json.loads(sys.argv[1])[sys.argv[2]])' "$1" "$2"; }

run_demo() {
  local site_json site stripe_json
  site_json=$("$billfold" demo) || return 1
  site=$(json_field "$site_json" site) || return 1
  if [[ -n $webhook_url ]]; then
    "$billfold" stripe webhook-register --site "$site" --url "$webhook_url" >/dev/null || return 1
  else
    "$billfold" stripe configure --site "$site" >/dev/null || return 1
  fi
  # Repair what an earlier run left: a restarted fake Stripe has forgotten everything.
  "$billfold" sync --site "$site" >&2 2>/dev/null || return 1
  if [[ -n $webhook_url ]]; then
    stripe_json=$("$billfold" stripe demo --site "$site" --wait "$ready_timeout") || return 1
  else
    stripe_json=$("$billfold" stripe demo --site "$site" --wait 0) || return 1
    "$billfold" sync --site "$site" >&2 || return 1
  fi
  "$py" - "$site_json" "$stripe_json" "$api_url" <<'PY'
import json
import sys
import urllib.parse
import urllib.request

site, stripe_demo, api_url = json.loads(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3]
auth = {"Authorization": f"Bearer {site['api_key']}"}


def call(method: str, path: str, body: dict[str, object] | None = None) -> dict[str, object]:
    request = urllib.request.Request(
        api_url + path,
        data=None if body is None else json.dumps(body).encode(),
        headers={**auth, "Content-Type": "application/json"},
        method=method,
    )
    with urllib.request.urlopen(request, timeout=10) as resp:
        return json.loads(resp.read())


customers = []
for person in stripe_demo["customers"]:
    found = call("GET", "/v1/customers/" + urllib.parse.quote(person["external_id"], safe=""))
    customers.append({k: found[k] for k in ("id", "external_id", "email", "name")})
link = call("POST", "/v1/portal_sessions", {"customer": customers[0]["id"]})
print(json.dumps({**site, "customers": customers, "portal_url": link["url"]}))
PY
}

if demo_json=$(run_demo); then
  "$py" - "$demo_json" "$api_url" <<'PY'
import json
import shlex
import sys

raw, api_url = sys.argv[1], sys.argv[2]
demo = json.loads(raw)
print(json.dumps(demo, indent=2))
first = demo["customers"][0]["id"]
print()
print("Try it (paste into another terminal):")
print(f"  export API_KEY={shlex.quote(str(demo['api_key']))}")
print(
    f'  curl -s -X POST {api_url}/v1/portal_sessions -u "$API_KEY:" '
    f"-d customer={shlex.quote(str(first))}"
)
print(f"Portal ({demo['customers'][0]['name']}): {demo['portal_url']}")
print()
print("The drop-in modal on another origin (examples/dropin/README.md):")
print("  python3 -m http.server 8090 --bind 127.0.0.1 --directory examples/dropin")
print("  then open http://localhost:8090/ and press Billing")
print()
PY
else
  log "the demo failed (see above); the services keep running"
fi

# --- 7. foreground until Ctrl-C or until a service dies ----------------------------
log "running ${names[*]}; Ctrl-C stops them"
status=0
wait -n "${pids[@]}" || status=$?
log "a service exited (status $status); stopping the others"
exit 1
