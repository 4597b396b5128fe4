#!/usr/bin/env bash
# Installs Prometheus (the server and promtool) into .tools/prometheus without a system
# install: Debian's `prometheus` package is downloaded, not installed, and unpacked with
# `dpkg -x`: nothing is installed system-wide and no service is started.
# The binaries end up at .tools/prometheus/usr/bin/{prometheus,promtool}.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
dest="${PROMETHEUS_TOOLS_DIR:-$root/.tools/prometheus}"
bin="$dest/usr/bin"

if [[ -x "$bin/promtool" && -x "$bin/prometheus" ]]; then
    exit 0
fi

for tool in apt-get dpkg; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "install.sh: '$tool' is not available; Prometheus is installed from Debian's" \
            "'prometheus' package. On another system, put the prometheus and promtool" \
            "binaries (2.x) in $bin yourself." >&2
        exit 1
    fi
done

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# `apt-get download` writes into the current directory and needs no root (as root it warns
# that the download is "unsandboxed": harmless here). The package lists may be missing on a
# fresh image; then they are fetched once (that needs root) and the download is retried.
if ! (cd "$work" && apt-get download prometheus); then
    if [[ $EUID -ne 0 ]]; then
        echo "install.sh: 'apt-get download prometheus' failed; if the package lists are" \
            "missing, run 'sudo apt-get update' once and try again." >&2
        exit 1
    fi
    echo "install.sh: download failed, refreshing the package lists and retrying" >&2
    apt-get update
    (cd "$work" && apt-get download prometheus)
fi

debs=("$work"/prometheus_*.deb)
if [[ ! -f "${debs[0]}" ]]; then
    echo "install.sh: apt-get download produced no prometheus_*.deb" >&2
    exit 1
fi

mkdir -p "$dest"
dpkg -x "${debs[0]}" "$dest"

for tool in prometheus promtool; do
    if [[ ! -x "$bin/$tool" ]]; then
        echo "install.sh: $bin/$tool is missing after unpacking ${debs[0]##*/}" >&2
        exit 1
    fi
done
echo "install.sh: prometheus and promtool unpacked into $bin"
