#!/usr/bin/env bash
# shellcheck disable=SC2317  # the step functions are called through `step NAME FUNCTION`
# The Raspberry Pi path checked on arm64 Debian bookworm under qemu-user (issue 18).
#
#   sudo make arm64-check            # or: sudo scripts/arm64-check.sh
#
# Opt-in and slow (the first run builds the root, about 7 minutes; then 15-30 minutes):
# never part of `make test` or CI. Raspberry Pi OS (64-bit) is Debian bookworm on arm64, so
# this builds (or reuses) an arm64 bookworm root with debootstrap, copies this working tree
# into it (tracked and untracked files, not the ignored ones such as .venv) and inside it:
#   1. runs systemd/install.sh --skip-pi-archive (everything but python3-picamera2 and
#      python3-lgpio, which only the Raspberry Pi archive has) and checks the user, the
#      groups, the venv (--system-site-packages), the config file and the unit, then
#      `systemd-analyze verify` on the installed unit;
#   2. installs the test extra (zbar-py built from source against libzbar-dev) in a second
#      venv and runs the parts of the suite that depend on the architecture;
#   3. runs `qrgate demo` and `qrgate bench decode --frames 50` (emulated figures).
# It ends with a report (also written to $CACHE/last-report.txt) and exits 1 if a step failed.
#
# Environment: QRGATE_ARM64_CACHE (default /var/cache/qrgate-arm64, outside the repository),
# QRGATE_ARM64_MIRROR (default: the Debian mirror this machine's apt uses),
# QRGATE_ARM64_REBUILD=1 (build the root again).
# Heavy steps run under `nice -n 19 ionice -c3` so they never starve other work on the machine.
set -euo pipefail

REPO=$(CDPATH='' cd -- "$(dirname -- "$0")/.." && pwd)
CACHE=${QRGATE_ARM64_CACHE:-/var/cache/qrgate-arm64}
ROOTFS="$CACHE/root"
STAMP="$ROOTFS/.qrgate-arm64-root"
REPORT="$CACHE/last-report.txt"
SRC_IN_ROOT=/src/qrgate
TEST_VENV=/opt/qrgate-test
# debootstrap's --include resolves no alternatives (libzbar-dev's GTK chain then fails to
# configure), so it gets the issue's short list and apt-get installs the rest inside, once.
INCLUDE=python3,python3-venv,python3-pip
PACKAGES=(python3-numpy python3-dev gcc libc6-dev libzbar-dev pkg-config mosquitto systemd passwd ca-certificates procps)
# The suite's parts that depend on the architecture (byte order, word size, wheels, C builds).
TESTS=(
    tests/test_credentials_qg1.py tests/test_credentials_cccd.py tests/test_credentials_dcc.py
    tests/test_credentials_vectors.py tests/test_cose.py
    tests/test_policy.py tests/test_dcc_policy.py
    tests/test_outbox.py tests/test_powercut.py
    tests/test_lists.py
    tests/test_decoders.py
    tests/test_scan_loop.py tests/test_end_to_end.py
    tests/test_mqtt.py
)
LOW=(nice -n 19 ionice -c3)

say() { printf '\033[1marm64-check:\033[0m %s\n' "$*"; }
die() { printf 'arm64-check: %s\n' "$*" >&2; exit 2; }

[ "$(id -u)" -eq 0 ] || die "run as root (sudo make arm64-check): debootstrap, chroot and mount need it"
command -v git >/dev/null || die "git is missing (apt-get install -y git)"

STEP_NAMES=()
STEP_RESULTS=()
STEP_SECONDS=()
FAILED=0
# step NAME COMMAND...: runs the command, records pass/FAIL and the wall time; never stops the run.
step() {
    local name=$1 start rc
    shift
    say "---- $name"
    start=$(date +%s)
    set +e
    (set -e; "$@")
    rc=$?
    set -e
    STEP_NAMES+=("$name")
    STEP_SECONDS+=($(($(date +%s) - start)))
    if [ "$rc" -eq 0 ]; then STEP_RESULTS+=(passed); else STEP_RESULTS+=("FAILED (exit $rc)"); FAILED=1; fi
    return 0
}

in_root() {
    # A clean environment: the machine's PIP_* settings (registry, CA, timeouts) pass through.
    local envs=(HOME=/root PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
                LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive PYTHONDONTWRITEBYTECODE=1)
    local var
    while IFS= read -r var; do envs+=("$var=${!var}"); done < <(compgen -e | grep '^PIP_' || true)
    "${LOW[@]}" chroot "$ROOTFS" /usr/bin/env -i "${envs[@]}" "$@"
}

host_prerequisites() {
    local want=()
    command -v debootstrap >/dev/null || want+=(debootstrap)
    [ -e /usr/bin/qemu-aarch64-static ] || want+=(qemu-user-static)
    command -v update-binfmts >/dev/null || want+=(binfmt-support)
    command -v rsync >/dev/null || want+=(rsync)
    if [ ${#want[@]} -gt 0 ]; then
        say "apt-get install ${want[*]}"
        apt-get update -q
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${want[@]}"
    fi
    if [ ! -e /proc/sys/fs/binfmt_misc/register ]; then
        say "mounting binfmt_misc"
        mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
    fi
    if [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] || ! grep -qx enabled /proc/sys/fs/binfmt_misc/qemu-aarch64; then
        update-binfmts --enable qemu-aarch64
    fi
    # the F flag (qemu-user-static's default) opens the interpreter now, so the root needs no copy
    grep -q '^flags:.*F' /proc/sys/fs/binfmt_misc/qemu-aarch64 \
        || cp /usr/bin/qemu-aarch64-static "$ROOTFS/usr/bin/" 2>/dev/null || true
}

debian_mirror() {
    if [ -n "${QRGATE_ARM64_MIRROR:-}" ]; then echo "$QRGATE_ARM64_MIRROR"; return; fi
    local uri
    # deb822 (.sources) first, then the one-line format; the first entry that serves bookworm
    uri=$(awk '/^URIs:/ {u=$2} /^Suites:/ && / bookworm( |$)/ && u ~ /\/debian\/?$/ {print u; exit}' \
        /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
    if [ -z "$uri" ]; then
        uri=$(awk '$1 == "deb" && $3 == "bookworm" && $2 ~ /\/debian\/?$/ {print $2; exit}' \
            /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null || true)
    fi
    echo "${uri:-http://deb.debian.org/debian}"
}

mounted_under() { awk -v p="$1" '$2 == p || index($2, p "/") == 1 {found=1} END {exit !found}' /proc/mounts; }

build_root() {
    local mirror new="$CACHE/root.new"
    mirror=$(debian_mirror)
    if [ -e "$STAMP" ] && [ "${QRGATE_ARM64_REBUILD:-0}" != 1 ]; then
        say "reusing the arm64 root $ROOTFS (built $(cat "$STAMP")); QRGATE_ARM64_REBUILD=1 builds it again"
    else
        ! mounted_under "$new" || die "$new still has mounts; unmount them first"
        ! mounted_under "$ROOTFS" || die "$ROOTFS still has mounts; unmount them first"
        rm -rf "$new"
        mkdir -p "$CACHE"
        say "debootstrap --arch=arm64 --variant=minbase bookworm from $mirror (about 7 minutes)"
        "${LOW[@]}" debootstrap --arch=arm64 --variant=minbase --include="$INCLUDE" bookworm "$new" "$mirror"
        cp /etc/resolv.conf "$new/etc/resolv.conf" 2>/dev/null || true
        mount -t proc proc "$new/proc"
        local rc=0
        "${LOW[@]}" chroot "$new" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive \
            apt-get install -y -q --no-install-recommends "${PACKAGES[@]}" || rc=$?
        umount "$new/proc"
        [ "$rc" -eq 0 ] || return "$rc"
        rm -rf "$ROOTFS"
        mv "$new" "$ROOTFS"
        printf 'bookworm arm64 from %s on %s\n' "$mirror" "$(date -u +%Y-%m-%dT%H:%MZ)" > "$STAMP"
    fi
    # this machine's CA bundle and pip configuration, so pip inside reaches the same registry
    local f
    for f in /etc/ssl/certs/ca-certificates.crt "${PIP_CERT:-}" "${SSL_CERT_FILE:-}" "${REQUESTS_CA_BUNDLE:-}"; do
        if [ -n "$f" ] && [ -f "$f" ]; then mkdir -p "$ROOTFS$(dirname "$f")"; cp -L "$f" "$ROOTFS$f"; fi
    done
    [ -f /etc/pip.conf ] && cp /etc/pip.conf "$ROOTFS/etc/pip.conf"
    if [ -d /etc/xdg/pip ]; then mkdir -p "$ROOTFS/etc/xdg"; rm -rf "$ROOTFS/etc/xdg/pip"; cp -r /etc/xdg/pip "$ROOTFS/etc/xdg/pip"; fi
    if [ -d /root/.config/pip ]; then mkdir -p "$ROOTFS/root/.config"; rm -rf "$ROOTFS/root/.config/pip"; cp -r /root/.config/pip "$ROOTFS/root/.config/pip"; fi
    cp /etc/resolv.conf "$ROOTFS/etc/resolv.conf" 2>/dev/null || true
    in_root /bin/true || { echo "the arm64 root does not run (binfmt_misc/qemu-aarch64?)" >&2; return 1; }
    printf 'root: %s; uname -m inside: %s; %s\n' "$(cat "$STAMP")" "$(in_root uname -m)" "$(in_root python3 --version)"
}

MOUNTED=()
mount_root() {
    local d
    for d in proc sys dev dev/pts run tmp; do mkdir -p "$ROOTFS/$d"; done
    mountpoint -q "$ROOTFS/proc" || { mount -t proc proc "$ROOTFS/proc"; MOUNTED+=("$ROOTFS/proc"); }
    mountpoint -q "$ROOTFS/sys" || { mount -t sysfs sysfs "$ROOTFS/sys"; MOUNTED+=("$ROOTFS/sys"); }
    mountpoint -q "$ROOTFS/dev" || { mount --bind /dev "$ROOTFS/dev"; MOUNTED+=("$ROOTFS/dev"); }
    mountpoint -q "$ROOTFS/dev/pts" || { mount --bind /dev/pts "$ROOTFS/dev/pts"; MOUNTED+=("$ROOTFS/dev/pts"); }
    mountpoint -q "$ROOTFS/run" || { mount -t tmpfs tmpfs "$ROOTFS/run"; MOUNTED+=("$ROOTFS/run"); }
    mountpoint -q "$ROOTFS/tmp" || { mount -t tmpfs tmpfs "$ROOTFS/tmp"; MOUNTED+=("$ROOTFS/tmp"); }
}
unmount_root() {
    local i
    for ((i = ${#MOUNTED[@]} - 1; i >= 0; i--)); do umount -l "${MOUNTED[$i]}" || true; done
    MOUNTED=()
}

copy_tree() {
    # the working tree as it is: tracked files (with uncommitted edits) and untracked ones not ignored
    rm -rf "$ROOTFS$SRC_IN_ROOT"
    mkdir -p "$ROOTFS$SRC_IN_ROOT"
    (cd "$REPO" && git ls-files -z --cached --others --exclude-standard --deduplicate \
        | tar --null --ignore-failed-read -T - -cf - 2>/dev/null) | tar -C "$ROOTFS$SRC_IN_ROOT" -xf -
    printf 'copied %s files (HEAD %s%s)\n' "$(find "$ROOTFS$SRC_IN_ROOT" -type f | wc -l)" \
        "$(git -C "$REPO" rev-parse --short HEAD)" \
        "$(git -C "$REPO" diff --quiet HEAD && echo '' || echo ' plus uncommitted changes')"
}

pi_install() {
    # a fresh install each run: no user, venv, config or unit left from the last one
    in_root sh -c 'userdel qrgate 2>/dev/null; groupdel qrgate 2>/dev/null;
        rm -rf /opt/qrgate /etc/qrgate /etc/systemd/system/qrgate.service /etc/systemd/system/multi-user.target.wants/qrgate.service; true'
    in_root apt-get update -q >/dev/null || return 1
    # python3-picamera2 brings apt's numpy on a Pi, and the venv (--system-site-packages) then
    # uses it instead of a PyPI wheel; the same here, so the venv sees the Pi's numpy (1.24).
    in_root apt-get install -y -q --no-install-recommends python3-numpy >/dev/null || return 1
    # Raspberry Pi OS has a gpio group (it owns /dev/gpiochip*); a debootstrapped Debian has
    # none. Make it as the Pi image does, so the installer takes the Pi's path for the groups.
    in_root sh -c 'getent group gpio >/dev/null || groupadd --system gpio' || return 1
    in_root sh "$SRC_IN_ROOT/systemd/install.sh" --skip-pi-archive || return 1
    # what a Pi would have after the installer, checked inside the root
    # shellcheck disable=SC2016
    in_root sh -ec '
        id qrgate
        id -nG qrgate | tr " " "\n" | grep -qx video || { echo "qrgate is not in video"; exit 1; }
        id -nG qrgate | tr " " "\n" | grep -qx gpio || { echo "qrgate is not in gpio"; exit 1; }
        grep -qx "SupplementaryGroups=gpio video" /etc/systemd/system/qrgate.service.d/groups.conf || { echo "the groups drop-in does not name gpio and video"; exit 1; }
        grep -qx "include-system-site-packages = true" /opt/qrgate/venv/pyvenv.cfg
        test "$(stat -c "%a %U:%G" /etc/qrgate/qrgate.toml)" = "640 root:qrgate"
        test "$(stat -c "%a %U:%G" /etc/qrgate)" = "750 root:qrgate"
        test -d /etc/qrgate/issuers && test -d /etc/qrgate/authority && test -d /etc/qrgate/commands
        cmp /src/qrgate/systemd/qrgate.service /etc/systemd/system/qrgate.service
        test -L /etc/systemd/system/multi-user.target.wants/qrgate.service
        /opt/qrgate/venv/bin/python -c "import numpy, zxingcpp, cryptography, gpiozero; from importlib.metadata import version as v; print(\"venv imports:\", *(p + \" \" + v(p) for p in (\"numpy\", \"zxing-cpp\", \"cryptography\", \"gpiozero\")))"
        /opt/qrgate/venv/bin/qrgate config template | /opt/qrgate/venv/bin/python -c "import sys, tomllib; tomllib.loads(sys.stdin.read()); print(\"config template: valid TOML\")"
        echo "installed: user, groups, venv (--system-site-packages), /etc/qrgate/qrgate.toml, enabled unit"'
}

verify_unit() {
    local rc=0
    in_root systemd-analyze verify /etc/systemd/system/qrgate.service > "$CACHE/verify.out" 2>&1 || rc=$?
    cat "$CACHE/verify.out"
    [ "$rc" -eq 0 ] && [ ! -s "$CACHE/verify.out" ]
}

test_venv() {
    in_root sh -ec "
        test -x $TEST_VENV/bin/python || python3 -m venv $TEST_VENV
        $TEST_VENV/bin/python -m pip install -q --upgrade pip
        $TEST_VENV/bin/python -m pip install -q -e '${SRC_IN_ROOT}[test]'
        $TEST_VENV/bin/python -c 'import zbar, zxingcpp; from importlib.metadata import version as v; print(\"zbar-py\", v(\"zbar-py\"), zbar.__file__); print(\"zxing-cpp\", v(\"zxing-cpp\"))'
        $TEST_VENV/bin/python -m pip download -q --no-deps --only-binary=:all: -d /tmp/wheel-probe zbar-py 2>/dev/null \
            && echo 'zbar-py: a wheel exists' || echo 'zbar-py: no aarch64 wheel, built from source against libzbar-dev'"
}

run_tests() {
    in_root sh -ec "cd $SRC_IN_ROOT && PATH=$TEST_VENV/bin:/usr/sbin:\$PATH \
        $TEST_VENV/bin/python -m pytest -q -p no:cacheprovider ${TESTS[*]}"
}

run_demo() {
    local rc=0
    in_root sh -ec "cd /tmp && rm -rf demo-out && $TEST_VENV/bin/qrgate demo" > "$CACHE/demo.out" 2>&1 || rc=$?
    tail -n 25 "$CACHE/demo.out"
    return "$rc"
}

run_bench() {
    local rc=0
    in_root sh -ec "cd $SRC_IN_ROOT && $TEST_VENV/bin/qrgate bench decode --frames 50" > "$CACHE/bench.out" 2>&1 || rc=$?
    cat "$CACHE/bench.out"
    return "$rc"
}

main() {
    local started
    started=$(date -u +%Y-%m-%dT%H:%MZ)
    mkdir -p "$CACHE"
    step "host: qemu-user-static, binfmt_misc, debootstrap" host_prerequisites
    step "root: arm64 bookworm (debootstrap or reuse), CA bundle and pip config" build_root
    if [ "${STEP_RESULTS[1]}" != passed ]; then report "$started"; exit 1; fi
    trap unmount_root EXIT
    mount_root
    step "copy the working tree to $SRC_IN_ROOT" copy_tree
    step "1. systemd/install.sh --skip-pi-archive and its result" pi_install
    step "1. systemd-analyze verify qrgate.service" verify_unit
    step "2. test extra + zbar-py from source ($TEST_VENV)" test_venv
    step "2. pytest: ${#TESTS[@]} architecture-relevant files" run_tests
    step "3. qrgate demo (EMULATED)" run_demo
    step "3. qrgate bench decode --frames 50 (EMULATED)" run_bench
    unmount_root
    report "$started"
    exit "$FAILED"
}

report() {
    local i
    {
        echo "qrgate arm64-check report, started $1, ended $(date -u +%Y-%m-%dT%H:%MZ)"
        echo "host $(uname -m), target Debian bookworm arm64 under qemu-user ($(cat "$STAMP" 2>/dev/null || echo 'no root'))"
        for i in "${!STEP_NAMES[@]}"; do
            printf '  %-62s %-16s %5ss\n' "${STEP_NAMES[$i]}" "${STEP_RESULTS[$i]}" "${STEP_SECONDS[$i]}"
        done
        if [ -s "$CACHE/demo.out" ]; then
            echo "EMULATED figures (qemu-user on $(uname -m); not Raspberry Pi timings):"
            grep -E 'granted, .* denied' "$CACHE/demo.out" | tail -n 1 | sed 's/^/  demo:  /'
            grep -oE '[0-9.]+ ms from frame to decision' "$CACHE/demo.out" | awk '{n++; s+=$1; if ($1>m) m=$1}
                END {if (n) printf "  demo:  %d decisions, frame to decision mean %.1f ms, max %.1f ms\n", n, s/n, m}'
        fi
        # The targets' rows and the read counts, picked by their words (the bench's tail grows).
        if [ -s "$CACHE/bench.out" ]; then
            grep -E '^\| (sample photos read|camera-like frames read|false detections|mean ms, no-code)|^(photos|synthetic): reads|^  read by' \
                "$CACHE/bench.out" | sed 's/^/  bench: /'
        fi
        echo "Not checked without a Pi: the camera (picamera2/libcamera, python3-picamera2 from the"
        echo "  Raspberry Pi archive), the pins (lgpio on /dev/gpiochip*, python3-lgpio), the hardware"
        echo "  watchdog and systemd running the unit as PID 1 (sd_notify, WatchdogSec), the SD card"
        echo "  (fsync and power cuts on real flash), real timings. Run on the Pi:"
        echo "  QRGATE_HARDWARE=1 .venv/bin/python -m pytest -m hardware tests/hardware"
        if [ "$FAILED" -eq 0 ]; then echo "RESULT: passed"; else echo "RESULT: FAILED (see the steps above)"; fi
    } | tee "$REPORT"
}

main "$@"
