#!/usr/bin/env bash
# The whole loop on one machine, no cluster: the Kubernetes API emulator the tests use, the three reference
# components, a local Prometheus scraping them every second, the operator, the example profiles and a run.
#
#   scripts/local-loop.sh start     start everything (PIDs and logs in $DWCP_LOCAL_DIR, default /tmp/dwcp-local)
#   scripts/local-loop.sh status    what is running
#   scripts/local-loop.sh stop      stop everything it started
#
# Everything listens on 127.0.0.1 only. Ports ($DWCP_LOCAL_PORT_BASE, default 9100): the emulator +1, the
# components' /metrics +1..+3, the operator's /metrics +9 and liveness +8; Prometheus on $DWCP_LOCAL_PROMETHEUS_PORT
# (default 9090). Set DWCP_LOCAL_RUN=0 to start everything but the run.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DIR=${DWCP_LOCAL_DIR:-/tmp/dwcp-local}
BASE=${DWCP_LOCAL_PORT_BASE:-9100}
PROM_PORT=${DWCP_LOCAL_PROMETHEUS_PORT:-9090}
NS=dwcp
export PATH="$ROOT/.venv/bin:$ROOT/.tools/bin:$PATH" KUBECONFIG="$DIR/kubeconfig"
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}

started() { # NAME LOGFILE CMD...: start CMD in the background, remember its PID
  local name=$1 log=$2
  shift 2
  "$@" >"$log" 2>&1 &
  echo $! >"$DIR/$name.pid"
  echo "started $name (pid $!, log $log)"
}

alive() { [ -f "$DIR/$1.pid" ] && kill -0 "$(cat "$DIR/$1.pid")" 2>/dev/null; }

wait_until() { # SECONDS WHAT CMD...: until CMD succeeds; at once an error if a process started so far exited
  local deadline=$((SECONDS + $1)) what=$2 name
  shift 2
  until "$@" >/dev/null 2>&1; do
    for name in "${NAMES[@]}"; do
      if [ -f "$DIR/$name.pid" ] && ! alive "$name"; then # a port taken, say
        echo "local-loop: $name exited; the end of $DIR/$name.log:" >&2
        tail -n 15 "$DIR/$name.log" >&2 # the error, and what a dying interpreter logs after it (unclosed sessions)
        return 1
      fi
    done
    if [ $SECONDS -ge $deadline ]; then
      echo "local-loop: timed out waiting for $what (logs in $DIR)" >&2
      return 1
    fi
    sleep 0.5
  done
}

NAMES=(emulator hde pba acp prometheus operator)

start() {
  for name in "${NAMES[@]}"; do
    if alive "$name"; then
      echo "local-loop: $name is already running (pid $(cat "$DIR/$name.pid")); run '$0 stop' first" >&2
      exit 1
    fi
  done
  for name in "${NAMES[@]}"; do rm -f "$DIR/$name.pid"; done # a crashed run's: wait_until reads them
  command -v prometheus >/dev/null || { echo "local-loop: no prometheus (apt-get install prometheus)" >&2; exit 1; }
  command -v kubectl >/dev/null || { echo "local-loop: no kubectl (scripts/setup-dev.sh)" >&2; exit 1; }
  mkdir -p "$DIR"
  # 1. An in-memory Kubernetes API with the CRDs, and the components' ConfigMaps (the built-in defaults).
  started emulator "$DIR/emulator.log" "$PYTHON" -m tests.kube.emulator --port $((BASE + 1)) --crds crds/ \
    --kubeconfig "$KUBECONFIG"
  wait_until 30 "the emulator" kubectl get namespaces
  kubectl create namespace $NS
  kubectl apply -n $NS -f examples/components/hde.yaml -f examples/components/pba.yaml -f examples/components/acp.yaml
  # 2. The components: each follows its ConfigMap through the API and serves /metrics on 127.0.0.1.
  local rates=(100 40 25) i=0
  for name in hde pba acp; do
    started "$name" "$DIR/$name.log" dwcp-autotuner component "$name" -n $NS --quick --rate "${rates[$i]}" \
      --metrics-port $((BASE + 1 + i + 1)) --metrics-address 127.0.0.1
    i=$((i + 1))
  done
  # 3. Prometheus scraping them every second.
  cat >"$DIR/prometheus.yml" <<EOF
global: {scrape_interval: 1s, scrape_timeout: 1s}
scrape_configs:
  - job_name: dwcp
    static_configs: [{targets: [127.0.0.1:$((BASE + 2)), 127.0.0.1:$((BASE + 3)), 127.0.0.1:$((BASE + 4))]}]
  - job_name: dwcp-autotuner
    static_configs: [{targets: [127.0.0.1:$((BASE + 9))]}]
EOF
  started prometheus "$DIR/prometheus.log" prometheus --config.file="$DIR/prometheus.yml" \
    --storage.tsdb.path="$DIR/tsdb" --web.listen-address=127.0.0.1:$PROM_PORT --log.level=warn
  # 4. The operator (twins cached in $DIR/cache). --min-sample-seconds 1: Prometheus scrapes every second here;
  #    the default 60 suits a 30 s scrape.
  started operator "$DIR/operator.log" dwcp-autotuner operator -n $NS --tick-seconds 0.5 --min-sample-seconds 1 \
    --prometheus-url http://127.0.0.1:$PROM_PORT --metrics-port $((BASE + 9)) --metrics-address 127.0.0.1 \
    --liveness http://127.0.0.1:$((BASE + 8))/healthz --cache-dir "$DIR/cache"
  wait_until 60 "Prometheus" "$PYTHON" -c "import urllib.request as u; u.urlopen('http://127.0.0.1:$PROM_PORT/-/ready')"
  kubectl apply -n $NS -f examples/hde-profile.yaml -f examples/pba-profile.yaml -f examples/acp-profile.yaml
  if [ "${DWCP_LOCAL_RUN:-1}" != 0 ]; then
    wait_until 180 "the profiles to be Ready" kubectl wait -n $NS --for=condition=Ready parameterprofiles --all --timeout=5s
    kubectl apply -n $NS -f - <<'RUN'
apiVersion: autotune.dwcp.io/v1alpha1
kind: OptimizationRun
metadata: {name: tune}
spec:
  profiles: [hde, pba, acp]
  agent: {episodes: 30, stepsPerEpisode: 50, seed: 7}
  budget: {maxProposals: 3}
  rollout: {analysisIntervalSeconds: 10, minSamples: 3}
RUN
  fi
  echo
  echo "export KUBECONFIG=$KUBECONFIG PATH=$ROOT/.venv/bin:$ROOT/.tools/bin:\$PATH"
  echo "kubectl autotune get tune -n $NS        # the run as a tree"
  echo "kubectl wait -n $NS --for=condition=Progressing=False optrun/tune --timeout=15m"
  echo "$0 stop"
}

status() {
  local any=1
  for name in "${NAMES[@]}"; do
    if alive "$name"; then
      echo "$name: running (pid $(cat "$DIR/$name.pid"))"
      any=0
    elif [ -f "$DIR/$name.pid" ]; then
      echo "$name: stopped"
    fi
  done
  return $any
}

stop() {
  local name pid
  for name in operator hde pba acp prometheus emulator; do
    [ -f "$DIR/$name.pid" ] || continue
    pid=$(cat "$DIR/$name.pid")
    if kill -0 "$pid" 2>/dev/null; then
      kill "$pid"
      for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
      kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
      echo "stopped $name (pid $pid)"
    fi
    rm -f "$DIR/$name.pid"
  done
}

case "${1:-}" in
  start) start ;;
  status) status ;;
  stop) stop ;;
  *) echo "usage: $0 start|status|stop" >&2; exit 2 ;;
esac
