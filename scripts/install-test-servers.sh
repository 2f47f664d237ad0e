#!/usr/bin/env bash
# Install what the server-backed store tests need on a fresh Debian/Ubuntu machine.
#
# * PostgreSQL server binaries (Debian's `postgresql` package) when no
#   /usr/lib/postgresql/*/bin/pg_ctl exists. The tests start their own private
#   cluster on 127.0.0.1 in a temporary folder, so no system cluster is created.
# * The MongoDB wire-protocol test server (nx-27017) and the drivers come from
#   `pip install -e ".[dev]"`; this script only checks that they are importable.
#
# * As root (as in CI): PostgreSQL refuses to run as root, so the tests run the server
#   as the unprivileged `postgres` account (or `nobody`), with its data in a temporary
#   folder that account owns; it needs nothing else of ours (not the checkout, not
#   .venv). This script makes sure such an account exists and can run the binaries.
#
# * Chromium (Debian's `chromium` package) for the dashboard's browser tests, when
#   /usr/bin/chromium is missing; Playwright (from ".[dev]") drives it, so no browser is
#   downloaded at test time.
#
# Idempotent and quiet; works as root or, through sudo, as a normal user.
set -euo pipefail

have_postgres() {
    compgen -G "/usr/lib/postgresql/*/bin/pg_ctl" >/dev/null
}

# apt_install PACKAGE: install a Debian package as root (directly or through sudo), quietly.
apt_install() {
    local as_root=()
    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null 2>&1; then
            as_root=(sudo)
        else
            echo "install-test-servers: need root (or sudo) to apt-get install $1" >&2
            exit 1
        fi
    fi
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "install-test-servers: no apt-get; install $1 by hand" >&2
        exit 1
    fi
    if [ "$1" = postgresql ]; then
        # Do not let the package create and start a system cluster on port 5432:
        # the tests run their own throw-away cluster.
        "${as_root[@]}" mkdir -p /etc/postgresql-common
        if [ ! -e /etc/postgresql-common/createcluster.conf ]; then
            echo "create_main_cluster = false" | "${as_root[@]}" tee /etc/postgresql-common/createcluster.conf >/dev/null
        fi
    fi
    echo "install-test-servers: installing $1 with apt-get"
    "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
        "$1" >/dev/null
}

if have_postgres; then
    echo "install-test-servers: PostgreSQL already present: $(ls -d /usr/lib/postgresql/*/bin | tr '\n' ' ')"
else
    apt_install postgresql
    have_postgres || { echo "install-test-servers: pg_ctl still missing after install" >&2; exit 1; }
    echo "install-test-servers: PostgreSQL installed: $(ls -d /usr/lib/postgresql/*/bin | tr '\n' ' ')"
fi

if [ -x /usr/bin/chromium ]; then
    echo "install-test-servers: Chromium already present: /usr/bin/chromium"
else
    apt_install chromium
    [ -x /usr/bin/chromium ] || { echo "install-test-servers: /usr/bin/chromium still missing after install" >&2; exit 1; }
    echo "install-test-servers: Chromium installed: $(/usr/bin/chromium --version 2>/dev/null || echo /usr/bin/chromium)"
fi

if [ "$(id -u)" -eq 0 ]; then
    if ! id -u postgres >/dev/null 2>&1 && ! id -u nobody >/dev/null 2>&1; then
        echo "install-test-servers: creating the system account 'postgres' to run the test server"
        useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin postgres
    fi
    server_user=postgres
    id -u postgres >/dev/null 2>&1 || server_user=nobody
    initdb_bin=$(ls /usr/lib/postgresql/*/bin/initdb | sort -V | tail -n 1)
    if command -v setpriv >/dev/null 2>&1 && ! setpriv --reuid="$server_user" --regid="$(id -g "$server_user")" --clear-groups \
            "$initdb_bin" --version >/dev/null 2>&1; then
        echo "install-test-servers: $initdb_bin cannot run as '$server_user'; the tests run the" \
             "server as that user when they run as root" >&2
        exit 1
    fi
    echo "install-test-servers: as root, the tests will run the server as '$server_user'"
fi

python_bin="${PYTHON:-python3}"
if [ -x ".venv/bin/python" ] && [ -z "${PYTHON:-}" ]; then
    python_bin=".venv/bin/python"
fi
if ! "$python_bin" -c "" >/dev/null 2>&1; then
    echo "install-test-servers: note: $python_bin cannot run as $(id -un); run the tests as the" \
         "user who made the environment"
elif ! "$python_bin" -c "import psycopg, pymongo, nx_27017, playwright" >/dev/null 2>&1; then
    echo "install-test-servers: note: run 'pip install -e \".[dev]\"' for psycopg, pymongo, nx-27017 and playwright"
fi
