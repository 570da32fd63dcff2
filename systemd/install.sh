#!/bin/sh
# Install qrgate as a systemd service. Safe to run again: every step checks before it acts,
# an existing /etc/qrgate/qrgate.toml is never overwritten, and the venv is upgraded in place.
#
#   sudo systemd/install.sh            # from a source checkout (or: sudo make install)
#   sudo systemd/install.sh --start    # also start the service now
#   sudo systemd/install.sh --skip-pi-archive   # plain Debian arm64: without python3-picamera2
#                                      # and python3-lgpio, which only the Raspberry Pi archive has
#
# Environment (for packaging and tests): ROOT (install below this directory instead of /),
# QRGATE_USER (default qrgate), QRGATE_PYTHON (default python3), QRGATE_SKIP_APT=1,
# QRGATE_SKIP_USER=1, QRGATE_SKIP_PIP=1, QRGATE_SKIP_SYSTEMCTL=1.
set -eu

SRC_DIR=$(CDPATH= cd -- "$(dirname -- "$0")/.." && pwd)
ROOT=${ROOT:-}
USER_NAME=${QRGATE_USER:-qrgate}
PYTHON=${QRGATE_PYTHON:-python3}
PREFIX="$ROOT/opt/qrgate"
VENV="$PREFIX/venv"
ETC="$ROOT/etc/qrgate"
UNIT_DIR="$ROOT/etc/systemd/system"
START=no
SKIP_PI_ARCHIVE=no
for arg in "$@"; do
    case "$arg" in
        --start) START=yes ;;
        --skip-pi-archive) SKIP_PI_ARCHIVE=yes ;;
        -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
        *) echo "install.sh: unknown option $arg (try --help)" >&2; exit 2 ;;
    esac
done

say() { printf 'qrgate install: %s\n' "$*"; }

if [ -z "$ROOT" ] && [ "$(id -u)" -ne 0 ]; then
    echo "install.sh: run as root (sudo $0)" >&2
    exit 1
fi

# 1. apt packages that must not come from PyPI (CONVENTIONS.md section 1 and 3).
#    python3-picamera2 and python3-lgpio come from the Raspberry Pi archive
#    (archive.raspberrypi.com, configured on Raspberry Pi OS), not from Debian. One counts as
#    missing when `apt-cache policy` shows no candidate version for it. A missing one is skipped
#    with a note saying so, except on an arm machine (a Pi) without --skip-pi-archive: there it
#    stops the install, since a gate without them has no camera and no pins.
pi_archive_missing=""
if [ "${QRGATE_SKIP_APT:-0}" != 1 ] && command -v apt-get >/dev/null 2>&1; then
    want="python3-venv"
    for pkg in python3-lgpio python3-picamera2; do
        candidate=$(apt-cache policy "$pkg" 2>/dev/null | sed -n 's/^ *Candidate: *//p')
        if [ -n "$candidate" ] && [ "$candidate" != "(none)" ]; then
            want="$want $pkg"
        else
            pi_archive_missing="$pi_archive_missing $pkg"
        fi
    done
    if [ -n "$pi_archive_missing" ]; then
        case "$(uname -m)" in
            aarch64|arm*) on_arm=yes ;;
            *) on_arm=no ;;
        esac
        if [ "$on_arm" = yes ] && [ "$SKIP_PI_ARCHIVE" != yes ]; then
            echo "install.sh:$pi_archive_missing: no apt candidate (apt-cache policy); these come from the" >&2
            echo "  Raspberry Pi archive, which Raspberry Pi OS has. Use Raspberry Pi OS (64-bit), or run" >&2
            echo "  with --skip-pi-archive to install without the camera and the pins (plain Debian arm64)." >&2
            exit 1
        fi
        for pkg in $pi_archive_missing; do
            say "skipping $pkg: no apt candidate (apt-cache policy), it comes from the Raspberry Pi archive"
        done
        say "without them this install has no camera (picamera2) and no lgpio pins; replay sources and mock pins work"
    fi
    missing=""
    for pkg in $want; do
        dpkg -s "$pkg" >/dev/null 2>&1 || missing="$missing $pkg"
    done
    if [ -n "$missing" ]; then
        say "apt-get install$missing"
        apt-get install -y --no-install-recommends $missing
    fi
fi

# 2. The service user, in the gpio and video groups where they exist. Raspberry Pi OS has a gpio
#    group (owning /dev/gpiochip*); plain Debian has none. The unit names no group: the drop-in
#    written below lists only the groups this system has, so the service starts on both.
if [ "${QRGATE_SKIP_USER:-0}" != 1 ]; then
    if ! id "$USER_NAME" >/dev/null 2>&1; then
        say "creating system user $USER_NAME"
        useradd --system --user-group --home-dir /var/lib/qrgate --no-create-home \
            --shell /usr/sbin/nologin "$USER_NAME"
    fi
    for group in gpio video; do
        if getent group "$group" >/dev/null 2>&1 && ! id -nG "$USER_NAME" | tr ' ' '\n' | grep -qx "$group"; then
            say "adding $USER_NAME to group $group"
            usermod -a -G "$group" "$USER_NAME"
        fi
    done
fi

# 3. The venv, with the system site packages (picamera2, libcamera and lgpio come from apt).
mkdir -p "$PREFIX"
if [ ! -x "$VENV/bin/python" ]; then
    say "creating $VENV (--system-site-packages)"
    "$PYTHON" -m venv --system-site-packages "$VENV"
fi
if [ "${QRGATE_SKIP_PIP:-0}" != 1 ]; then
    say "installing qrgate from $SRC_DIR into $VENV"
    "$VENV/bin/python" -m pip install --quiet --upgrade "$SRC_DIR"
fi
cp "$SRC_DIR/README.md" "$PREFIX/README.md"

# 4. The config, from the commented template; never overwritten.
mkdir -p "$ETC/issuers" "$ETC/authority" "$ETC/commands"
if [ ! -e "$ETC/qrgate.toml" ]; then
    say "writing $ETC/qrgate.toml from the commented template (edit it, then start the service)"
    if [ -x "$VENV/bin/qrgate" ]; then
        "$VENV/bin/qrgate" config template > "$ETC/qrgate.toml.new"
    else
        (cd "$SRC_DIR" && "$PYTHON" -c 'from firmware.core.config import render_template; print(render_template())') \
            > "$ETC/qrgate.toml.new"
    fi
    chmod 0640 "$ETC/qrgate.toml.new"
    mv "$ETC/qrgate.toml.new" "$ETC/qrgate.toml"
else
    say "keeping the existing $ETC/qrgate.toml"
fi
if [ "${QRGATE_SKIP_USER:-0}" != 1 ]; then
    chown -R "root:$USER_NAME" "$ETC"
    chmod 0750 "$ETC"
fi

# 5. The unit, enabled (started only with --start).
mkdir -p "$UNIT_DIR"
if ! cmp -s "$SRC_DIR/systemd/qrgate.service" "$UNIT_DIR/qrgate.service"; then
    say "installing $UNIT_DIR/qrgate.service"
    install -m 0644 "$SRC_DIR/systemd/qrgate.service" "$UNIT_DIR/qrgate.service"
fi
# The unit's supplementary groups: those of gpio and video that exist here, as the user above.
GROUPS_FOUND=""
for group in gpio video; do
    if getent group "$group" >/dev/null 2>&1; then
        GROUPS_FOUND="${GROUPS_FOUND:+$GROUPS_FOUND }$group"
    fi
done
mkdir -p "$UNIT_DIR/qrgate.service.d"
{
    echo "# Written by install.sh: the groups of gpio and video that exist on this system."
    echo "[Service]"
    if [ -n "$GROUPS_FOUND" ]; then
        echo "SupplementaryGroups=$GROUPS_FOUND"
    fi
} > "$UNIT_DIR/qrgate.service.d/groups.conf.new"
if ! cmp -s "$UNIT_DIR/qrgate.service.d/groups.conf.new" "$UNIT_DIR/qrgate.service.d/groups.conf"; then
    say "installing $UNIT_DIR/qrgate.service.d/groups.conf (SupplementaryGroups: ${GROUPS_FOUND:-none})"
    chmod 0644 "$UNIT_DIR/qrgate.service.d/groups.conf.new"
    mv "$UNIT_DIR/qrgate.service.d/groups.conf.new" "$UNIT_DIR/qrgate.service.d/groups.conf"
else
    rm -f "$UNIT_DIR/qrgate.service.d/groups.conf.new"
fi
if [ "${QRGATE_SKIP_SYSTEMCTL:-0}" != 1 ] && [ -z "$ROOT" ]; then
    # `enable` works offline; reload and restart need systemd running as PID 1, which a chroot
    # or an image build (and the arm64 check) does not have: /run/systemd/system tells (sd_booted).
    if [ -d /run/systemd/system ]; then systemctl daemon-reload; fi
    systemctl enable qrgate.service
    if [ "$START" = yes ]; then
        if [ -d /run/systemd/system ]; then
            systemctl restart qrgate.service
        else
            say "not started: systemd is not running here (a chroot or an image build)"
        fi
    fi
fi

say "done. Next: edit $ETC/qrgate.toml, add the safe-boot lines with"
say "  $VENV/bin/qrgate config boot-fragment --config /etc/qrgate/qrgate.toml | sudo tee -a /boot/firmware/config.txt"
say "then reboot, or: sudo systemctl start qrgate && qrgate status"
