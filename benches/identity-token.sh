#!/usr/bin/env bash
# Forward-auth throughput with the biscuit identity token on and off, and
# with an API token instead of a session cookie: one machine, one run,
# the same wrk settings for every target, rounds interleaved.
#
#   fa-token-on    /auth/forward-auth, jwt session cookie, X-Auth-Request-Token
#                  minted once per session and reused (the default)
#   fa-token-off   the same with `tokens.identity.header: ""`
#   fa-api-token   the same as fa-token-on, identified by an API token
#                  (Authorization: Bearer <biscuit>) instead of the cookie:
#                  signature + Datalog checks on every request
#
# Usage: benches/identity-token.sh   (uses $CARGO_TARGET_DIR/release/portcullis,
#        building it if missing)
# Env:   BENCH_DURATION=10s  BENCH_CONNECTIONS=64  BENCH_THREADS=2  BENCH_ROUNDS=3
# Only loopback; every process started here is stopped on exit.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
BIN="$TARGET/release/portcullis"
[ -x "$BIN" ] || (cd "$ROOT" && cargo build --release)
DUR="${BENCH_DURATION:-10s}"; CONNS="${BENCH_CONNECTIONS:-64}"; THREADS="${BENCH_THREADS:-2}"
ROUNDS="${BENCH_ROUNDS:-3}"
WORK="$(mktemp -d)"; PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT
port() { python3 "$ROOT/benches/wrkrun.py" port; }

SECRET="bench-secret-0123456789-abcdefghijklmnop"
HASH="$(printf 'bench-password' | "$BIN" hash-password)"
printf 'users:\n  - email: bench@example.com\n    name: Bench\n    groups: [a, b, c]\n    password_hash: "%s"\n' "$HASH" > "$WORK/users.yaml"

start() { # name extra-yaml -> sets PORT
  local name=$1 extra=$2 p; p=$(port)
  cat > "$WORK/$name.yaml" <<YAML
listen: 127.0.0.1:$p
public_url: http://127.0.0.1:$p
secrets: [$SECRET]
providers:
  - type: credentials
    users_file: $WORK/users.yaml
log:
  level: warn
  requests: false
$extra
YAML
  "$BIN" serve --config "$WORK/$name.yaml" >/dev/null 2>"$WORK/$name.log" & PIDS+=($!)
  for _ in $(seq 100); do curl -fs "http://127.0.0.1:$p/healthz" >/dev/null && break; sleep 0.1; done
  PORT=$p
}

signin() { # port -> prints the session cookie (name=value)
  local p=$1 jar="$WORK/jar-$1" csrf
  csrf=$(curl -s -c "$jar" "http://127.0.0.1:$p/auth/csrf" | python3 -c 'import json,sys; print(json.load(sys.stdin)["csrfToken"])')
  curl -s -b "$jar" -c "$jar" -o /dev/null \
    --data-urlencode "csrfToken=$csrf" --data-urlencode "email=bench@example.com" \
    --data-urlencode "password=bench-password" --data-urlencode "callbackUrl=/" \
    "http://127.0.0.1:$p/auth/callback/credentials"
  awk '$6 ~ /session-token/ {print $6"="$7}' "$jar"
}

start on "tokens:
  api:
    enabled: true"; ON=$PORT
start off "tokens:
  identity:
    header: \"\""; OFF=$PORT
COOKIE_ON=$(signin "$ON"); COOKIE_OFF=$(signin "$OFF")
[ -n "$COOKIE_ON" ] && [ -n "$COOKIE_OFF" ] || { echo "sign-in failed" >&2; exit 1; }
API=$("$BIN" token mint --config "$WORK/on.yaml" --sub bench-bot --group a --ttl 1d 2>/dev/null)
FWD=(-H "X-Forwarded-Proto: https" -H "X-Forwarded-Host: app.example.com" -H "X-Forwarded-Uri: /dash" -H "X-Forwarded-Method: GET" -H "Accept: application/json")

# Sanity: the header is there (and the same twice), or absent.
t1=$(curl -s -D - -o /dev/null -H "Cookie: $COOKIE_ON" "${FWD[@]}" "http://127.0.0.1:$ON/auth/forward-auth" | grep -i '^x-auth-request-token' || true)
t2=$(curl -s -D - -o /dev/null -H "Cookie: $COOKIE_ON" "${FWD[@]}" "http://127.0.0.1:$ON/auth/forward-auth" | grep -i '^x-auth-request-token' || true)
[ -n "$t1" ] && [ "$t1" = "$t2" ] || { echo "identity token missing or not reused" >&2; exit 1; }
curl -s -D - -o /dev/null -H "Cookie: $COOKIE_OFF" "${FWD[@]}" "http://127.0.0.1:$OFF/auth/forward-auth" | grep -qi '^x-auth-request-token' && { echo "header not off" >&2; exit 1; }
code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $API" "${FWD[@]}" "http://127.0.0.1:$ON/auth/forward-auth")
[ "$code" = 200 ] || { echo "API token refused: $code" >&2; exit 1; }

measure() { # name port header... -> req/s
  local name=$1 p=$2; shift 2
  local out; out=$(wrk -t"$THREADS" -c"$CONNS" -d"$DUR" "$@" "${FWD[@]}" "http://127.0.0.1:$p/auth/forward-auth")
  if echo "$out" | grep -q 'Non-2xx'; then echo "$name: non-2xx answers" >&2; echo "$out" >&2; exit 1; fi
  echo "$out" | awk '/Requests\/sec/ {print $2}'
}
declare -A R
for r in $(seq "$ROUNDS"); do
  R[on]+="$(measure on "$ON" -H "Cookie: $COOKIE_ON") "
  R[off]+="$(measure off "$OFF" -H "Cookie: $COOKIE_OFF") "
  R[api]+="$(measure api "$ON" -H "Authorization: Bearer $API") "
done
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
on=$(echo "${R[on]}" | median); off=$(echo "${R[off]}" | median); api=$(echo "${R[api]}" | median)
echo "forward-auth req/s (wrk -t$THREADS -c$CONNS -d$DUR, median of $ROUNDS rounds; all runs: on [${R[on]% }] off [${R[off]% }] api [${R[api]% }])"
printf '| target | req/s | vs token off |\n|---|---|---|\n'
printf '| fa-token-off (no identity token) | %s | 1.00 |\n' "$off"
printf '| fa-token-on (identity token, cached per session) | %s | %.2f |\n' "$on" "$(echo "$on / $off" | bc -l)"
printf '| fa-api-token (API token verified per request) | %s | %.2f |\n' "$api" "$(echo "$api / $off" | bc -l)"
