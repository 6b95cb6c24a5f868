#!/usr/bin/env bash
# Smoke test of the binary we ship: the output of deploy/docker/build.sh,
# the very script the Dockerfile's builder stage runs (tests/run builds it
# just before). Also checks the Dockerfile's shape and the image size
# estimate: no Docker engine runs where the tests do, so the image itself
# is never built here.
#
#   tests/deploy/smoke.sh [BINARY]      default: <target dir>/dist/portcullis
#
# Prints one line per check and closes with "N passed, M failed"; exits
# non-zero when any check failed.
set -uo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"

bin="${1:-${CARGO_TARGET_DIR:-$root/target}/dist/portcullis}"
dockerfile=deploy/docker/Dockerfile

# The image budget. The runtime base, gcr.io/distroless/static-debian12, is
# about 2 MB (CA certificates, tzdata, passwd); to it the Dockerfile adds
# the glibc and libgcc_s files the binary links, measured below from this
# Debian 12 machine (the builder's release). The base cannot be pulled
# here (no engine); `docker image ls` tells after a build.
STATIC_BASE_MB=2.1
IMAGE_BUDGET_MB=${IMAGE_BUDGET_MB:-25}
GRACE_S=5 # limits.shutdown_grace for the run below

passed=0
failed=0
ok() {
  passed=$((passed + 1))
  printf 'ok   %s\n' "$*"
}
fail() {
  failed=$((failed + 1))
  printf 'FAIL %s\n' "$*"
}
check() { # check DESCRIPTION COMMAND...: ok when COMMAND succeeds
  local what=$1
  shift
  if "$@"; then ok "$what"; else fail "$what"; fi
}

work=$(mktemp -d)
pid=
cleanup() {
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null; fi
  rm -rf "$work"
}
trap cleanup EXIT

finish() {
  printf '\n%d passed, %d failed\n' "$passed" "$failed"
  [ "$failed" -eq 0 ]
  exit
}

# ---- the binary ------------------------------------------------------------
if [ ! -x "$bin" ]; then
  fail "binary $bin exists (run deploy/docker/build.sh)"
  finish
fi
ok "binary $bin exists"

version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
check "--version says $version" bash -c '[ "$("$1" --version)" = "portcullis $2" ]' _ "$bin" "$version"

# What the distroless cc base provides: glibc (libc, libm, the loader) and
# libgcc_s. Anything else (libssl, ...) would be missing at run time.
needed=$(readelf -d "$bin" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | tr '\n' ' ')
unexpected=$(for lib in $needed; do
  case $lib in
    libc.so.6 | libm.so.6 | libgcc_s.so.1 | ld-linux-*.so.* | libdl.so.2 | libpthread.so.0 | librt.so.1) ;;
    *) printf '%s ' "$lib" ;;
  esac
done)
check "links only glibc and libgcc_s (${needed% })" test -z "$unexpected"
[ -z "$unexpected" ] || echo "     unexpected: $unexpected"

# The runtime base is Debian 12: glibc 2.36. A binary asking for newer
# symbols would not start there.
glibc=$(objdump -T "$bin" | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -V | tail -1)
check "needs glibc $glibc <= 2.36 (Debian 12)" bash -c '[ "$(printf "%s\n" "$1" 2.36 | sort -V | tail -1)" = 2.36 ]' _ "$glibc"

check "stripped (no symbol table)" bash -c '! readelf -S "$1" | grep -q "\.symtab"' _ "$bin"

# ---- the image: Dockerfile shape and size ------------------------------------
# Instructions with their continuation lines joined, comments dropped.
instructions=$(sed -e '/^[[:space:]]*#/d' "$dockerfile" | sed -e ':a' -e '/\\$/N; s/\\\n[[:space:]]*/ /; ta' | sed -e '/^[[:space:]]*$/d')
builder=$(printf '%s\n' "$instructions" | awk '/^FROM /{stage++} stage==1')
runtime=$(printf '%s\n' "$instructions" | awk '/^FROM /{stage++} stage==2')
stages=$(printf '%s\n' "$instructions" | grep -c '^FROM ')
check "Dockerfile has two stages (builder, runtime)" test "$stages" -eq 2

rust_image=$(printf '%s\n' "$builder" | sed -n 's/^FROM \(rust:[^ ]*\) AS builder$/\1/p')
check "builder is rust:<version>-bookworm AS builder ($rust_image)" \
  bash -c '[[ "$1" =~ ^rust:[0-9]+\.[0-9]+\.[0-9]+-bookworm$ ]]' _ "$rust_image"
docker_rust=${rust_image#rust:}
docker_rust=${docker_rust%-bookworm}
msrv=$(sed -n 's/^rust-version = "\(.*\)"/\1/p' Cargo.toml)
check "builder's Rust $docker_rust >= rust-version $msrv" \
  bash -c '[ "$(printf "%s\n" "$1" "$2" | sort -V | tail -1)" = "$1" ]' _ "$docker_rust" "$msrv"
local_rust=$(rustc --version 2>/dev/null | awk '{print $2}')
if [ "$local_rust" != "$docker_rust" ]; then
  echo "     note: the tests ran with rustc $local_rust, the image builds with $docker_rust: update $dockerfile"
fi

# The builder runs THE build script and nothing else.
runs=$(printf '%s\n' "$builder" | grep '^RUN ' || true)
run_count=$(printf '%s\n' "$runs" | grep -c '^RUN ' || true)
run_cmd=$(printf '%s\n' "$runs" | sed -e 's/^RUN //' -e 's/--mount=[^ ]*//g' -e 's/  */ /g' -e 's/^ //' -e 's/ $//')
check "builder has one RUN: deploy/docker/build.sh /out ($run_cmd)" \
  test "$run_count" -eq 1 -a "$run_cmd" = "deploy/docker/build.sh /out"
check "builder copies the source (COPY . .)" bash -c 'grep -qx "COPY \. \." <<<"$1"' _ "$builder"

check "runtime is gcr.io/distroless/static-debian12:nonroot" \
  bash -c 'grep -qx "FROM gcr.io/distroless/static-debian12:nonroot" <<<"$1"' _ "$runtime"
check "runtime copies the built binary to /portcullis" \
  bash -c 'grep -qx "COPY --from=builder /out/portcullis /portcullis" <<<"$1"' _ "$runtime"
for lib in $needed; do
  case $lib in
    ld-linux-*) check "runtime copies the loader $lib" bash -c 'grep -q "^COPY --from=builder /lib64/$2 " <<<"$1"' _ "$runtime" "$lib" ;;
    *) check "runtime copies $lib" bash -c 'grep "^COPY --from=builder " <<<"$1" | grep -q "/lib/x86_64-linux-gnu/$2 "' _ "$runtime" "$lib" ;;
  esac
done
check "runtime runs as nonroot (USER 65532)" bash -c 'grep -Eqx "USER (65532(:65532)?|nonroot(:nonroot)?)" <<<"$1"' _ "$runtime"
check "EXPOSE 4180" bash -c 'grep -qx "EXPOSE 4180" <<<"$1"' _ "$runtime"
check 'ENTRYPOINT ["/portcullis"], CMD ["serve"]' \
  bash -c 'grep -qx "ENTRYPOINT \[\"/portcullis\"\]" <<<"$1" && grep -qx "CMD \[\"serve\"\]" <<<"$1"' _ "$runtime"
check "no HEALTHCHECK (probes belong to the orchestrator)" bash -c '! grep -q "^HEALTHCHECK" <<<"$1"' _ "$instructions"
check "no ENV in the image (it would override the config file)" bash -c '! grep -q "^ENV " <<<"$1"' _ "$runtime"
check ".dockerignore keeps target/ out of the build context" grep -qx 'target' .dockerignore

bytes=$(wc -c <"$bin")
libbytes=0
for f in /lib/x86_64-linux-gnu/libc.so.6 /lib/x86_64-linux-gnu/libm.so.6 /lib/x86_64-linux-gnu/libgcc_s.so.1 /lib64/ld-linux-x86-64.so.2; do
  libbytes=$((libbytes + $(stat -L -c %s "$f")))
done
# Two decimals, compared as is: "under 25 MB" must not pass on a rounding.
estimate=$(awk -v b="$bytes" -v l="$libbytes" -v base="$STATIC_BASE_MB" 'BEGIN { printf "%.2f", (b + l) / 1e6 + base }')
printf '     binary %.1f MB + glibc/libgcc %.1f MB + distroless static ~%s MB = image ~%s MB (budget %s MB)\n' \
  "$(awk -v b="$bytes" 'BEGIN { print b / 1e6 }')" "$(awk -v b="$libbytes" 'BEGIN { print b / 1e6 }')" "$STATIC_BASE_MB" "$estimate" "$IMAGE_BUDGET_MB"
check "image estimate ~$estimate MB < budget $IMAGE_BUDGET_MB MB" \
  awk -v e="$estimate" -v b="$IMAGE_BUDGET_MB" 'BEGIN { exit !(e < b) }'

# ---- every compose recipe's config passes `check` ---------------------------
for cfg in deploy/compose/*/portcullis.yaml; do
  check "portcullis check $cfg" bash -c \
    'env $(env | sed -n "s/^\(PORTCULLIS_[^=]*\)=.*/-u \1/p") "$1" check --config "$2" >"$3/check.out" 2>&1 || { cat "$3/check.out"; false; }' \
    _ "$bin" "$cfg" "$work"
done

# ---- the demo, served -----------------------------------------------------------
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
base="http://127.0.0.1:$port"
# No config: the embedded demo. Only these variables (a developer's own
# PORTCULLIS_* must not leak in).
env $(env | sed -n 's/^\(PORTCULLIS_[^=]*\)=.*/-u \1/p') \
  PORTCULLIS_LISTEN="127.0.0.1:$port" \
  PORTCULLIS_PUBLIC_URL="$base" \
  PORTCULLIS_LIMITS__SHUTDOWN_GRACE="${GRACE_S}s" \
  "$bin" serve >"$work/serve.log" 2>&1 &
pid=$!

wait_for() { # wait_for PATH SECONDS: until it answers 200
  local deadline=$((SECONDS + $2))
  while [ $SECONDS -lt $deadline ]; do
    [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$base$1")" = 200 ] && return 0
    kill -0 "$pid" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}
check "/healthz answers 200 within 10 s" wait_for /healthz 10
check "/readyz answers 200 within 10 s" wait_for /readyz 10

curl -s -o /dev/null -D "$work/root.h" -H 'Accept: text/html' --max-time 5 "$base/"
check "GET / (browser) redirects to the sign-in page" \
  grep -Eqi '^location: (http://127\.0\.0\.1:[0-9]+)?/auth/signin\?callbackUrl=' "$work/root.h"
code=$(curl -s -o /dev/null -w '%{http_code}' -H 'Accept: application/json' --max-time 5 "$base/")
check "GET / (API client) answers 401 ($code)" test "$code" = 401

# Sign in as the demo user it printed, through the real form.
email=$(sed -n 's/.*e-mail: *\([^ ]*\).*/\1/p' "$work/serve.log" | head -1)
password=$(sed -n 's/.*password: *\([^ ]*\).*/\1/p' "$work/serve.log" | head -1)
jar="$work/cookies"
page=$(curl -s -c "$jar" -b "$jar" --max-time 5 "$base/auth/signin?callbackUrl=%2F")
csrf=$(printf '%s' "$page" | sed -n 's/.*name="csrfToken" value="\([^"]*\)".*/\1/p' | head -1)
action=$(printf '%s' "$page" | sed -n 's/.*<form method="post" action="\([^"]*\)".*/\1/p' | head -1)
check "sign-in page has a form and a CSRF token" test -n "$csrf" -a -n "$action" -a -n "$email"
curl -s -o /dev/null -c "$jar" -b "$jar" --max-time 10 \
  --data-urlencode "csrfToken=$csrf" --data-urlencode "callbackUrl=/" \
  --data-urlencode "email=$email" --data-urlencode "password=$password" \
  "$base$action"
body=$(curl -s -b "$jar" --max-time 5 "$base/")
check "signed in, the app sees X-Auth-Request-Email: $email" \
  bash -c 'grep -qi "x-auth-request-email: $2" <<<"$1"' _ "$body" "$email"

# SIGTERM: drains and exits 0 within limits.shutdown_grace.
kill -TERM "$pid"
deadline=$((SECONDS + GRACE_S + 2))
while kill -0 "$pid" 2>/dev/null && [ $SECONDS -lt $deadline ]; do sleep 0.1; done
if kill -0 "$pid" 2>/dev/null; then
  fail "SIGTERM: still running after ${GRACE_S}s grace + 2 s"
else
  wait "$pid"
  rc=$?
  check "SIGTERM: exits 0 within the grace period (exit $rc)" test "$rc" -eq 0
fi
pid=
if [ "$failed" -gt 0 ]; then
  echo "---- portcullis log ----"
  cat "$work/serve.log"
fi

finish
