#!/bin/sh
# Fills the {{PLACEHOLDERS}} of a deploy/ snippet, then starts the server.
# The nginx and Caddy recipes use it as their container's entrypoint, so
# that the container runs the very file the test suite checks
# (deploy/nginx/portcullis.conf, deploy/caddy/Caddyfile: tests/it/edge.rs),
# mounted read-only, never a copy of it.
#
#   fill-placeholders.sh TEMPLATE OUTPUT COMMAND [ARGS...]
#
# Replaces {{LISTEN}}, {{PORTCULLIS}} and {{UPSTREAM}} in TEMPLATE with the
# environment variables of the same names, writes OUTPUT, then execs
# COMMAND. Refuses to start when a variable is missing or a placeholder is
# left. POSIX sh: runs in the Alpine images' busybox as well as dash/bash.
set -eu

if [ $# -lt 3 ]; then
  echo "usage: $0 TEMPLATE OUTPUT COMMAND [ARGS...]" >&2
  exit 64
fi
template=$1
output=$2
shift 2

for name in LISTEN PORTCULLIS UPSTREAM; do
  eval "value=\${$name-}"
  if [ -z "$value" ]; then
    echo "$0: set $name (it fills {{$name}} in $template)" >&2
    exit 64
  fi
  # The value goes into a sed replacement delimited by |.
  case $value in
    *'|'* | *'&'* | *'\'*)
      echo "$0: $name=$value: | & and \\ are not allowed" >&2
      exit 64
      ;;
  esac
done

sed -e "s|{{LISTEN}}|$LISTEN|g" \
    -e "s|{{PORTCULLIS}}|$PORTCULLIS|g" \
    -e "s|{{UPSTREAM}}|$UPSTREAM|g" \
    "$template" >"$output.tmp"
if grep -n '{{[A-Z_]*}}' "$output.tmp" >&2; then
  echo "$0: placeholders left in $template (above); set them" >&2
  rm -f "$output.tmp"
  exit 65
fi
mv -f "$output.tmp" "$output"
echo "$0: $template -> $output (LISTEN=$LISTEN PORTCULLIS=$PORTCULLIS UPSTREAM=$UPSTREAM)"

exec "$@"
