#!/usr/bin/env bash
# Set up, start the servers the tests need on 127.0.0.1, and run the test suite.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -m "not slow"`.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
bash scripts/setup.sh

# Prometheus and Pushgateway (Debian packages) for the metrics tests, helm for the chart tests.
if ! command -v prometheus >/dev/null 2>&1 || ! command -v prometheus-pushgateway >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "test: installing prometheus and prometheus-pushgateway"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus prometheus-pushgateway >/dev/null
  else
    echo "test: prometheus or prometheus-pushgateway missing and cannot apt-get install; their tests will skip (or fail under CI=true)" >&2
  fi
fi
if [ -f scripts/install-helm.sh ]; then
  bash scripts/install-helm.sh || echo "test: helm install failed; chart tests will skip (or fail under CI=true)" >&2
fi
export PATH="$root/.tools/bin:$PATH"

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { .venv/bin/python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_ready() {  # url, name
  for _ in $(seq 1 100); do
    if .venv/bin/python -c "import urllib.request,sys; urllib.request.urlopen(sys.argv[1], timeout=1)" "$1" 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "test: $2 did not become ready at $1; see $work/$2.log" >&2
  cat "$work/$2.log" >&2 || true
  return 1
}

if command -v prometheus-pushgateway >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1; then
  gateway_port=$(free_port)
  prometheus-pushgateway --web.listen-address="127.0.0.1:$gateway_port" >"$work/pushgateway.log" 2>&1 &
  pids+=($!)
  wait_ready "http://127.0.0.1:$gateway_port/-/ready" pushgateway

  prometheus_port=$(free_port)
  cat >"$work/prometheus.yml" <<YAML
global:
  scrape_interval: 1s
scrape_configs:
  - job_name: pushgateway
    honor_labels: true
    static_configs:
      - targets: ["127.0.0.1:$gateway_port"]
YAML
  prometheus --config.file="$work/prometheus.yml" --web.listen-address="127.0.0.1:$prometheus_port" \
    --storage.tsdb.path="$work/tsdb" >"$work/prometheus.log" 2>&1 &
  pids+=($!)
  wait_ready "http://127.0.0.1:$prometheus_port/-/ready" prometheus
  export LAKEGUARD_TEST_PUSHGATEWAY="http://127.0.0.1:$gateway_port"
  export LAKEGUARD_TEST_PROMETHEUS="http://127.0.0.1:$prometheus_port"
  echo "test: pushgateway on $LAKEGUARD_TEST_PUSHGATEWAY, prometheus on $LAKEGUARD_TEST_PROMETHEUS"
fi

.venv/bin/python -m pytest "$@"
