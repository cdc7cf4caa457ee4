# Shared by scripts/test and scripts/demo: install what the project needs, or say exactly what is
# missing. Sourced, not run. Everything goes into the checkout (.venv/, .tools/) except Debian
# packages, which need root (or say the apt-get line to run).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="$ROOT/.tools"
VENV="$ROOT/.venv"
TOXIPROXY_VERSION="v2.12.0"

say() { printf '[setup] %s\n' "$*" >&2; }
die() { printf '[setup] MISSING: %s\n' "$*" >&2; exit 3; }

apt_install() {
  # apt_install PKG... : installs Debian packages when root, otherwise says how.
  local missing=()
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" != 0 ]; then
    die "Debian packages ${missing[*]}: run 'sudo apt-get update && sudo apt-get install -y ${missing[*]}'"
  fi
  say "installing Debian packages: ${missing[*]}"
  if [ ! -f "$TOOLS/.apt-updated" ]; then
    mkdir -p "$TOOLS"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null && touch "$TOOLS/.apt-updated"
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
    || die "apt-get install ${missing[*]} failed"
}

ensure_venv() {
  local py=""
  for cand in python3.13 python3.12 python3.11 python3; do
    if command -v "$cand" >/dev/null 2>&1 && "$cand" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      py="$cand"; break
    fi
  done
  [ -n "$py" ] || die "Python >= 3.11 (Debian: apt-get install python3 python3-venv)"
  if [ ! -x "$VENV/bin/python" ]; then
    say "creating virtualenv $VENV"
    "$py" -m venv "$VENV" || die "python venv module (Debian: apt-get install python3-venv)"
  fi
  local stamp="$VENV/.installed"
  if [ ! -f "$stamp" ] || [ "$ROOT/pyproject.toml" -nt "$stamp" ]; then
    say "installing resilience and its extras into $VENV"
    "$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null
    "$VENV/bin/python" -m pip install -q -e "$ROOT[test,dev,all,bench]" || die "pip install failed (see above)"
    touch "$stamp"
  fi
}

ensure_memcached() {
  if ! command -v memcached >/dev/null 2>&1 && [ ! -x /usr/bin/memcached ]; then
    apt_install memcached
  fi
  RESILIENCE_MEMCACHED="$(command -v memcached || echo /usr/bin/memcached)"
  export RESILIENCE_MEMCACHED
}

ensure_toxiproxy() {
  local bin="$TOOLS/bin/toxiproxy-server"
  if [ ! -x "$bin" ]; then
    local go_bin
    go_bin="$(command -v go || true)"
    [ -n "$go_bin" ] || { [ -x /usr/local/go/bin/go ] && go_bin=/usr/local/go/bin/go; }
    [ -n "$go_bin" ] || die "Go >= 1.23 to build the Toxiproxy server (https://go.dev/doc/install), or put a toxiproxy-server binary at $bin"
    say "building the Toxiproxy server $TOXIPROXY_VERSION with $go_bin"
    mkdir -p "$TOOLS/bin"
    GOBIN="$TOOLS/bin" "$go_bin" install "github.com/Shopify/toxiproxy/v2/cmd/server@$TOXIPROXY_VERSION" \
      || die "go install github.com/Shopify/toxiproxy/v2/cmd/server@$TOXIPROXY_VERSION failed"
    mv "$TOOLS/bin/server" "$bin"
  fi
  RESILIENCE_TOXIPROXY="$bin"
  export RESILIENCE_TOXIPROXY
}

ensure_browser_and_prometheus() {
  # The dashboard tests drive a real headless Chromium; the alert tests run a real Prometheus.
  apt_install chromium chromium-driver prometheus
}

ensure_grafana_check() {
  # No Grafana server can be installed by this script (Debian does not package it, and its Go
  # module is AGPL, kept out of this project): generated dashboards are checked instead against
  # Grafana's published dashboard schema, by a small Go program over grafana-foundation-sdk.
  local src="$ROOT/tests/integration/web/grafana_check"
  local bin="$TOOLS/bin/grafana-dashboard-check"
  if [ ! -x "$bin" ] || [ "$src/main.go" -nt "$bin" ] || [ "$src/go.sum" -nt "$bin" ]; then
    local go_bin
    go_bin="$(command -v go || true)"
    [ -n "$go_bin" ] || { [ -x /usr/local/go/bin/go ] && go_bin=/usr/local/go/bin/go; }
    [ -n "$go_bin" ] || die "Go >= 1.23 to build the Grafana dashboard checker (https://go.dev/doc/install)"
    say "building the Grafana dashboard schema checker with $go_bin"
    mkdir -p "$TOOLS/bin"
    (cd "$src" && "$go_bin" build -buildvcs=false -o "$bin" .) \
      || die "go build of $src failed"
  fi
  RESILIENCE_GRAFANA_CHECK="$bin"
  export RESILIENCE_GRAFANA_CHECK
}

ensure_etcd() {
  # The fleet-wide flag tests run real etcd members (Debian etcd-server, binary etcd) on loopback.
  if ! command -v etcd >/dev/null 2>&1 && [ ! -x /usr/bin/etcd ]; then
    apt_install etcd-server
  fi
  RESILIENCE_ETCD="$(command -v etcd || echo /usr/bin/etcd)"
  export RESILIENCE_ETCD
}

ensure_all() {
  ensure_venv
  ensure_memcached
  ensure_toxiproxy
  ensure_browser_and_prometheus
  ensure_grafana_check
  ensure_etcd
}
