#!/usr/bin/env bash
# Make the coordinator's secrets: the Redis password and the SuperExec shared secret.
#
#   deploy/coordinator/make-secrets.sh [DIR]      (default: secrets/ next to this script)
#
# Each is 32 random bytes written as 64 hex digits: URL-safe, so it needs no quoting in a Redis
# URL, a config file or a shell. Files are mode 600 in a mode-700 directory. Existing secrets
# are kept (a rerun is safe); FORCE=1 replaces them (then `docker compose up -d` restarts the
# stack). Compose hands them to the containers as secret files, never as environment variables.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here/secrets}
command -v openssl >/dev/null || { echo "error: openssl is not installed" >&2; exit 2; }
umask 077
mkdir -p "$out"
chmod 700 "$out"
for name in redis.password superexec.secret; do
  if [[ -s $out/$name && ${FORCE:-0} != 1 ]]; then
    echo "keeping $out/$name (FORCE=1 replaces it)"
    continue
  fi
  openssl rand -hex 32 | tr -d '\n' > "$out/$name.tmp"
  mv "$out/$name.tmp" "$out/$name"
  chmod 600 "$out/$name"
  echo "wrote $out/$name"
done
