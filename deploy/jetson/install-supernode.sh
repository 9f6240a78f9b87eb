#!/usr/bin/env bash
# One-shot installer of the powerfleet SuperNode on a Jetson (run as root, from a checkout).
#
#   sudo deploy/jetson/install-supernode.sh --superlink coordinator.lan:8000 --ca ca.crt --unit 3
#
# Options:
#   --superlink HOST:PORT  the coordinator's SuperLink (required)
#   --ca FILE              the fleet CA certificate from make-certs.sh (required)
#   --unit N               this board's unit id in the fleet (required)
#   --num-partitions N     how many data partitions the fleet's training set is split into
#                          (required: one per board, so no two boards train on the same data)
#   --partition-id P       this board's partition, 0 .. N-1 (default: the unit id)
#   --device SPEC          device spec for the ClientApp (default jetson:auto?unit=N)
#   --python EXE           Python >= 3.11 for the venv (default: python3.11, else python3)
#   --pip-args "ARGS"      extra pip arguments, e.g. an index with the JetPack torch wheel
#   --system-site-packages let the venv see the system torch (NVIDIA's JetPack wheel)
#   --runtime-port N       local runtime API port of the SuperNode (default 9094)
#   --no-venv              do not create the venv / install the package (already done)
#   --no-start             install but do not enable or start the service
# Environment: DESTDIR installs under another root (packaging, tests; implies --no-start).
#
# The service runs as the system user `powerfleet` (created here; member of `video`/`render` when
# they exist, for the GPU device nodes), not root: powerfleet-sysfs.conf goes to
# /etc/tmpfiles.d/powerfleet.conf and hands exactly the power-mode sysfs nodes to its group.
# Idempotent: reruns update the package, unit and settings; an existing node key is kept.
# At the end it prints the public key to register on the SuperLink with `flwr supernode register`.
set -euo pipefail

usage() { sed -n '2,26p' "$0" | sed 's/^# \{0,1\}//'; }
die() { echo "error: $*" >&2; exit 2; }

here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/../.." && pwd)
superlink="" ca="" unit="" device="" python="" pip_args="" site="" partition="" partitions=""
runtime_port=9094 make_venv=1 start=1
while [[ $# -gt 0 ]]; do
  case $1 in
    --superlink) superlink=${2:?}; shift 2 ;;
    --ca) ca=${2:?}; shift 2 ;;
    --unit) unit=${2:?}; shift 2 ;;
    --num-partitions) partitions=${2:?}; shift 2 ;;
    --partition-id) partition=${2:?}; shift 2 ;;
    --device) device=${2:?}; shift 2 ;;
    --python) python=${2:?}; shift 2 ;;
    --pip-args) pip_args=${2:?}; shift 2 ;;
    --system-site-packages) site=--system-site-packages; shift ;;
    --runtime-port) runtime_port=${2:?}; shift 2 ;;
    --no-venv) make_venv=0; shift ;;
    --no-start) start=0; shift ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown option '$1' (see --help)" ;;
  esac
done

[[ -n $superlink ]] || die "--superlink HOST:PORT is required"
[[ $superlink =~ ^[^:/[:space:]]+:[0-9]+$ || $superlink =~ ^\[[0-9a-fA-F:]+\]:[0-9]+$ ]] \
  || die "--superlink '$superlink' must be HOST:PORT, without a URL scheme"
[[ -n $ca && -f $ca ]] || die "--ca must name the fleet CA certificate (ca.crt from make-certs.sh)"
grep -q "BEGIN CERTIFICATE" "$ca" || die "--ca '$ca' is not a PEM certificate"
[[ $unit =~ ^[0-9]+$ ]] || die "--unit must be a non-negative integer; got '$unit'"
[[ $runtime_port =~ ^[0-9]+$ ]] || die "--runtime-port must be a number; got '$runtime_port'"
[[ $partitions =~ ^[1-9][0-9]*$ ]] || die "--num-partitions must be the number of boards sharing the data (>= 1); got '$partitions'"
partition=${partition:-$unit}
[[ $partition =~ ^[0-9]+$ ]] && (( partition < partitions )) \
  || die "--partition-id must be in 0 .. $((partitions - 1)) (--num-partitions $partitions); got '$partition'"
device=${device:-jetson:auto?unit=$unit}
[[ $device != *\"* && $device != *" "* ]] || die "--device must not contain quotes or spaces"

destdir=${DESTDIR:-}
if [[ -n $destdir ]]; then start=0; elif [[ $(id -u) -ne 0 ]]; then
  die "run as root (sudo): the installer creates the service user and writes /etc and /opt"
fi
prefix=/opt/powerfleet
etc=/etc/powerfleet
unit_dir=/etc/systemd/system
tmpfiles_conf=/etc/tmpfiles.d/powerfleet.conf
user=powerfleet group=powerfleet state=/var/lib/powerfleet
tmpfiles=$(command -v systemd-tmpfiles || echo /usr/bin/systemd-tmpfiles)

# --- the service user ------------------------------------------------------------------------
if [[ -z $destdir ]]; then
  if ! id -u "$user" >/dev/null 2>&1; then
    useradd --system --user-group --home-dir "$state" --no-create-home --shell /usr/sbin/nologin \
      --comment "powerfleet SuperNode" "$user"
  fi
  for extra in video render; do  # CUDA: /dev/nvhost-*, /dev/nvmap, /dev/nvgpu/* are root:video
    if getent group "$extra" >/dev/null; then usermod -a -G "$extra" "$user"; fi
  done
fi

# --- package -------------------------------------------------------------------------------
if [[ $make_venv == 1 ]]; then
  if [[ -z $python ]]; then python=$(command -v python3.11 || command -v python3 || true); fi
  [[ -n $python ]] || die "no python3 found; pass --python"
  "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || die "$python is older than 3.11; install python3.11 (e.g. deadsnakes or uv) and pass --python"
  mkdir -p "$destdir$prefix"
  "$python" -m venv $site "$destdir$prefix/venv"
  # shellcheck disable=SC2086 # pip_args is a word list on purpose
  "$destdir$prefix/venv/bin/pip" install --upgrade $pip_args "$src"
fi
mkdir -p "$destdir$prefix/deploy"
cp "$src/deploy/README.md" "$destdir$prefix/deploy/README.md" 2>/dev/null || true

# --- certificates and the node key -----------------------------------------------------------
install -d -m 755 "$destdir$etc" "$destdir$etc/certs"
install -d -m 750 "$destdir$etc/keys"
install -m 644 "$ca" "$destdir$etc/certs/ca.crt"
key=$destdir$etc/keys/supernode
if [[ -f $key ]]; then
  echo "keeping the existing node key $etc/keys/supernode"
else
  command -v ssh-keygen >/dev/null || die "ssh-keygen is needed for the node key (apt install openssh-client)"
  ssh-keygen -q -t ecdsa -b 384 -N "" -C "powerfleet-unit-$unit@$(hostname)" -f "$key"
fi
# Root owns the key; the service user may read it, not change it; nobody else sees it.
chmod 640 "$key"
if [[ -z $destdir ]]; then chgrp "$group" "$destdir$etc/keys" "$key"; fi

# --- settings and the unit -----------------------------------------------------------------
esc() { printf '%s' "$1" | sed -e 's/[\\|&]/\\&/g'; }  # for a sed replacement (& in specs)
subst() {
  sed -e "s|@PREFIX@|$(esc "$prefix")|g" -e "s|@ETC@|$(esc "$etc")|g" \
      -e "s|@SUPERLINK@|$(esc "$superlink")|g" -e "s|@DEVICE@|$(esc "$device")|g" \
      -e "s|@UNIT@|$unit|g" -e "s|@RUNTIME_PORT@|$runtime_port|g" \
      -e "s|@PARTITION@|$partition|g" -e "s|@PARTITIONS@|$partitions|g" \
      -e "s|@USER@|$user|g" -e "s|@GROUP@|$group|g" -e "s|@TMPFILES@|$(esc "$tmpfiles")|g" \
      -e "s|@TMPFILES_CONF@|$(esc "$tmpfiles_conf")|g" "$1"
}
umask 027
subst "$here/supernode.env.template" > "$destdir$etc/supernode.env"
mkdir -p "$destdir$unit_dir"
subst "$here/powerfleet-supernode.service" > "$destdir$unit_dir/powerfleet-supernode.service"
chmod 644 "$destdir$unit_dir/powerfleet-supernode.service"
mkdir -p "$(dirname "$destdir$tmpfiles_conf")"
subst "$here/powerfleet-sysfs.conf" > "$destdir$tmpfiles_conf"
chmod 644 "$destdir$tmpfiles_conf"
if [[ -z $destdir ]]; then "$tmpfiles" --create "$tmpfiles_conf" || true; fi  # the unit reapplies it

if [[ $start == 1 ]]; then
  systemctl daemon-reload
  systemctl enable --now powerfleet-supernode.service
  echo "started: systemctl status powerfleet-supernode; journalctl -u powerfleet-supernode -f"
else
  echo "installed under ${destdir:-/}; not started (systemctl enable --now powerfleet-supernode)"
fi
cat <<MSG

Register this board on the SuperLink (on the operator machine, with the fleet connection):
  flwr supernode register $etc/keys/supernode.pub <connection> --name jetson-unit-$unit
Public key ($etc/keys/supernode.pub):
$(cat "$key.pub")
MSG
