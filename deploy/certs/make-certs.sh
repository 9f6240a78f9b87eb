#!/usr/bin/env bash
# Make the fleet's certificate authority and the SuperLink's TLS certificate with openssl.
#
#   deploy/certs/make-certs.sh OUT_DIR [SAN ...]
#   e.g. deploy/certs/make-certs.sh deploy/coordinator/certs DNS:coordinator.lan IP:192.168.1.10
#
# OUT_DIR gets ca.key (keep it offline), ca.crt (copy to every board), superlink.key and
# superlink.crt (mounted into the SuperLink). The SuperLink certificate always names
# DNS:superlink (the compose service the ServerApp container dials), DNS:localhost and
# IP:127.0.0.1, plus every SAN given: list each name or address the boards use to reach the
# coordinator. An existing CA is reused (rerun to rotate the server certificate without
# touching the boards); FORCE=1 replaces it, after which every board needs the new ca.crt.
# Environment: KEY_BITS (RSA size, default 3072), CA_DAYS (3650), CERT_DAYS (825).
set -euo pipefail

usage() { sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; }
if [[ $# -lt 1 || $1 == -h || $1 == --help ]]; then usage; exit 2; fi
command -v openssl >/dev/null || { echo "error: openssl is not installed" >&2; exit 2; }

out=$1; shift
key_bits=${KEY_BITS:-3072}
ca_days=${CA_DAYS:-3650}
cert_days=${CERT_DAYS:-825}
sans=("DNS:superlink" "DNS:localhost" "IP:127.0.0.1")
for san in "$@"; do
  if [[ ! $san =~ ^(DNS|IP):[A-Za-z0-9.:*-]+$ ]]; then
    echo "error: SAN '$san' must look like DNS:name or IP:address" >&2; exit 2
  fi
  sans+=("$san")
done

mkdir -p "$out"
umask 077
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

if [[ -f $out/ca.key && -f $out/ca.crt && ${FORCE:-0} != 1 ]]; then
  echo "reusing the CA in $out (FORCE=1 makes a new one)" >&2
else
  openssl req -x509 -new -newkey "rsa:$key_bits" -nodes -sha256 -days "$ca_days" \
    -keyout "$out/ca.key" -out "$out/ca.crt" -subj "/O=powerfleet/CN=powerfleet fleet CA" \
    -addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
fi

san_line=$(IFS=,; echo "${sans[*]}")
cat > "$work/ext.cnf" <<CNF
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=$san_line
CNF
openssl req -new -newkey "rsa:$key_bits" -nodes -sha256 -keyout "$out/superlink.key" \
  -out "$work/superlink.csr" -subj "/O=powerfleet/CN=powerfleet SuperLink" 2>/dev/null
openssl x509 -req -sha256 -days "$cert_days" -in "$work/superlink.csr" -CA "$out/ca.crt" \
  -CAkey "$out/ca.key" -CAcreateserial -CAserial "$work/ca.srl" -out "$out/superlink.crt" \
  -extfile "$work/ext.cnf" 2>/dev/null
chmod 644 "$out/ca.crt" "$out/superlink.crt"
chmod 600 "$out/ca.key" "$out/superlink.key"
openssl verify -CAfile "$out/ca.crt" "$out/superlink.crt" >/dev/null

echo "CA:        $out/ca.crt (copy to every board; keep $out/ca.key offline)"
echo "SuperLink: $out/superlink.crt + superlink.key for $san_line"
