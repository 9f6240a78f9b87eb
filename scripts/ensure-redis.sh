#!/usr/bin/env bash
# Make sure a Redis server answers at the URL given (default redis://127.0.0.1:6379/0).
# If nothing answers on a loopback address, start a throw-away redis-server there (installing
# it with apt-get when it is missing). Exits non-zero if Redis still does not answer.
set -euo pipefail
URL="${1:-${REDIS_URL:-redis://127.0.0.1:6379/0}}"
rest="${URL#*://}"; rest="${rest##*@}"; hostport="${rest%%/*}"
HOST="${hostport%%:*}"; PORT="${hostport##*:}"
[[ "$PORT" == "$hostport" ]] && PORT=6379

ping() {
  if command -v redis-cli >/dev/null 2>&1; then
    redis-cli -u "$URL" ping 2>/dev/null | grep -q PONG
  else
    # Fall back to a raw RESP PING over bash's /dev/tcp.
    exec 3<>"/dev/tcp/$HOST/$PORT" 2>/dev/null || return 1
    printf 'PING\r\n' >&3
    local reply; read -r -t 2 reply <&3 || true
    exec 3>&-
    [[ "$reply" == +PONG* ]]
  fi
}

if ping; then echo "redis answers at $HOST:$PORT"; exit 0; fi
case "$HOST" in 127.0.0.1|localhost|::1) ;; *)
  echo "error: Redis at $URL does not answer and is not local; start it or set REDIS_URL" >&2
  exit 1;;
esac
if ! command -v redis-server >/dev/null 2>&1; then
  echo "redis-server not found; installing it with apt-get" >&2
  SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq redis-server >/dev/null
fi
echo "starting redis-server on $HOST:$PORT" >&2
redis-server --daemonize yes --bind "$HOST" --port "$PORT" --save "" --appendonly no \
  --dir /tmp --logfile "/tmp/powerfleet-redis-$PORT.log"
for _ in $(seq 1 50); do ping && { echo "redis answers at $HOST:$PORT"; exit 0; }; sleep 0.1; done
echo "error: started redis-server but it does not answer at $HOST:$PORT" >&2
exit 1
