#!/bin/sh
# Start the coordinator's Redis with ACL users, the password coming from a secret file.
#
#   start-redis.sh [redis-server options ...]
#
# Reads the password from $REDIS_PASSWORD_FILE (default /run/secrets/redis_password, a compose
# secret; CR and LF are dropped, as the ServerApp does), writes the config template
# $REDIS_CONF_TEMPLATE (default /usr/local/etc/redis/redis.conf.in) with @PASSWORD_SHA256@
# replaced by the password's SHA-256 to $REDIS_CONF (default /tmp/redis.conf, mode 600), and
# execs redis-server on it: through the image's docker-entrypoint.sh when present (it drops
# root for the redis user), else directly. The password never appears in argv or the environment.
set -eu
secret=${REDIS_PASSWORD_FILE:-/run/secrets/redis_password}
template=${REDIS_CONF_TEMPLATE:-/usr/local/etc/redis/redis.conf.in}
conf=${REDIS_CONF:-/tmp/redis.conf}

if [ ! -r "$secret" ]; then
  echo "error: the Redis password file $secret is missing or unreadable (make-secrets.sh makes it)" >&2
  exit 2
fi
password=$(tr -d '\r\n' < "$secret")
if [ -z "$password" ]; then
  echo "error: the Redis password file $secret is empty" >&2
  exit 2
fi
hash=$(printf '%s' "$password" | sha256sum | cut -d ' ' -f 1)
unset password
umask 077
sed "s/@PASSWORD_SHA256@/$hash/" "$template" > "$conf"
if [ "$(id -u)" = 0 ] && command -v docker-entrypoint.sh >/dev/null 2>&1; then
  chown redis "$conf"
  exec docker-entrypoint.sh redis-server "$conf" "$@"
fi
exec redis-server "$conf" "$@"
