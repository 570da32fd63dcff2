#!/usr/bin/env bash
# Installs the system programs a qrgate target needs, through apt-get, when they are
# missing and we are root; otherwise prints the exact command to run and fails.
# Usage: scripts/ensure-system-deps.sh demo|test
set -euo pipefail
want=${1:-demo}

need_pkgs=()
have() { command -v "$1" >/dev/null 2>&1; }

python3 -c 'import venv, ensurepip' 2>/dev/null || need_pkgs+=(python3-venv)
# zbar-py ships as source only: it needs a C compiler and the Python headers.
have cc || need_pkgs+=(build-essential)
python3 -c 'import sysconfig, os, sys; sys.exit(0 if os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")) else 1)' \
  || need_pkgs+=(python3-dev)
if [ "$want" = test ]; then
  have mosquitto || [ -x /usr/sbin/mosquitto ] || need_pkgs+=(mosquitto)
  have mosquitto_sub || need_pkgs+=(mosquitto-clients)
  # scan history: the web page test drives Chromium; the PostgreSQL tests start a private
  # cluster with initdb/pg_ctl when no server is reachable (QRGATE_TEST_PG_URL or 127.0.0.1:5432)
  have chromium || [ -x /usr/bin/chromium ] || need_pkgs+=(chromium)
  compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || need_pkgs+=(postgresql)
fi
# Venue posters print Vietnamese text with DejaVu Sans (`qrgate provision venue`).
[ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || need_pkgs+=(fonts-dejavu-core)

[ ${#need_pkgs[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -eq 0 ] && have apt-get; then
  echo "installing with apt-get: ${need_pkgs[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >&2
  apt-get install -y -q --no-install-recommends "${need_pkgs[@]}" >&2
  exit 0
fi
echo "missing system packages: ${need_pkgs[*]}" >&2
echo "install them with:  sudo apt-get install -y ${need_pkgs[*]}" >&2
exit 1
