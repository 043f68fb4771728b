#!/usr/bin/env bash
# `make demo`: the product on the real single-node cluster of tests/harness/node.sh. The
# images are built from deploy/*/Dockerfile, the gateway of examples/ runs as two pods (Postfix
# and the agent), the operator runs on this machine against the node's API server, a message
# is sent to the gateway's Service and delivered to a local stand-in for the customer's
# primary, and the drift checks report. Where the node cannot start, it falls back to the
# local processes of `make demo-local` and says so.
set -euo pipefail

REPO="$(cd "$(dirname "$0")/../.." && pwd)"
CACHE_DIR="${MX_OPERATOR_CACHE:-$HOME/.cache/mx-operator}"
DEMO_DIR="$CACHE_DIR/demo"
BIN="$REPO/target/debug"
NS=mail-demo
SINK_PORT=2526
DNS="127.0.0.1:15353"

say() { printf '\n== %s\n' "$*"; }

say "Building the images from deploy/operator/Dockerfile and deploy/gateway/Dockerfile (the first run takes a few minutes)"
bash "$REPO/tests/harness/images.sh"
say "Starting the single-node cluster (tests/harness/node.sh)"
if ! state=$(bash "$REPO/tests/harness/node.sh" up); then
  echo "The node could not start (its logs are under ${MX_NODE_DIR:-/var/tmp/mx-operator-node}/run/logs)."
  echo "Falling back to the local processes: an API server without a kubelet, the gateway as host processes."
  exec make -C "$REPO" demo-local
fi
# shellcheck disable=SC1090
. "$state"
export KUBECONFIG
mkdir -p "$DEMO_DIR"
cp "$KUBECONFIG" "$DEMO_DIR/node.kubeconfig"
bash "$REPO/tests/harness/node.sh" load "$CACHE_DIR/images/mx-operator.oci.tar" "$CACHE_DIR/images/mx-gateway.oci.tar"

say "The demo zone example.com at Knot ($DNS), and the customer's primary (an SMTP sink on $NODE_IP:$SINK_PORT)"
"$BIN/local-cluster" dns
if [ -f "$DEMO_DIR/sink.pid" ] && kill -0 "$(cat "$DEMO_DIR/sink.pid")" 2>/dev/null; then
  echo "primary already running (pid $(cat "$DEMO_DIR/sink.pid"))"
else
  setsid "$BIN/local-cluster" sink "$NODE_IP:$SINK_PORT" > "$DEMO_DIR/primary.log" 2>&1 < /dev/null &
  echo $! > "$DEMO_DIR/sink.pid"
  echo "primary started (pid $!), log: $DEMO_DIR/primary.log"
fi

say "The CRDs (Kubernetes $(kubectl version -o json 2>/dev/null | python3 -c 'import json,sys; v=json.load(sys.stdin)["serverVersion"]; print(v["major"]+"."+v["minor"])') knows no CEL rules: mx-operator crd --without-cel)"
"$BIN/mx-operator" crd --without-cel | kubectl apply --server-side -f -
# kubectl wait fails, instead of waiting, on a CRD whose status.conditions is still null
# (just created): ask again, for 60 s in all, until every CRD is established.
for attempt in $(seq 20); do
  if kubectl wait --for=condition=Established crd --all --timeout=2s >/dev/null 2>&1; then
    break
  fi
  if [ "$attempt" = 20 ]; then
    kubectl wait --for=condition=Established crd --all --timeout=1s
    exit 1
  fi
  sleep 1
done

say "The operator, on this machine against the node's API server"
if [ -f "$DEMO_DIR/operator.pid" ] && kill -0 "$(cat "$DEMO_DIR/operator.pid")" 2>/dev/null; then
  echo "operator already running (pid $(cat "$DEMO_DIR/operator.pid"))"
else
  POD_NAMESPACE=default setsid "$BIN/mx-operator" run --metrics-address 127.0.0.1:18080 --log-format text \
    --resolver "$DNS" --drift-interval-seconds 5 --gateway-image localhost/mx-gateway:dev \
    > "$DEMO_DIR/operator.log" 2>&1 < /dev/null &
  echo $! > "$DEMO_DIR/operator.pid"
  echo "operator started (pid $!), log: $DEMO_DIR/operator.log"
fi

say "examples/ applied in namespace $NS"
kubectl create namespace "$NS" --dry-run=client -o yaml | kubectl apply -f -
kubectl apply -n "$NS" -f "$REPO/examples/"
# The demo's Knot listens on port 15353, not 53; the customers' primaries are the local sink.
kubectl patch -n "$NS" dnsprovider/knot --type merge -p '{"spec":{"rfc2136":{"server":"127.0.0.1","port":15353}}}'
for md in example-com shop-example; do
  kubectl patch -n "$NS" "maildomain/$md" --type merge \
    -p "{\"spec\":{\"primary\":{\"host\":\"$NODE_IP\",\"port\":$SINK_PORT,\"tls\":\"None\"}}}"
done

say "The gateway's pods (a StatefulSet, a queue volume each)"
for i in $(seq 1 60); do kubectl get -n "$NS" statefulset/edge >/dev/null 2>&1 && break; sleep 1; done
kubectl rollout status -n "$NS" statefulset/edge --timeout=180s
kubectl wait -n "$NS" --for=condition=Ready --timeout=60s maildomain/example-com maildomain/shop-example
kubectl get -n "$NS" pods,pvc,svc -o wide

NODE_PORT=$(kubectl get -n "$NS" svc edge -o 'jsonpath={.spec.ports[?(@.name=="smtp")].nodePort}')
SMTP="$NODE_IP:$NODE_PORT"
say "SMTP at the gateway's Service ($SMTP, its node port)"
rcpt() { swaks --server "$SMTP" --quit-after RCPT --from probe@client.test --to "$1" 2>&1 | grep -A1 -e '-> RCPT TO' | tail -1; }
printf '  known recipient   alice@example.com:      %s\n' "$(rcpt alice@example.com)"
printf '  unknown recipient nobody@example.com:     %s\n' "$(rcpt nobody@example.com)"
printf '  foreign domain    someone@elsewhere.test: %s\n' "$(rcpt someone@elsewhere.test)"
echo "  a message for alice@example.com:"
swaks --server "$SMTP" --from sender@client.test --to alice@example.com \
  --header "Subject: hello through the backup MX" --body "sent by make demo" 2>&1 | grep -E '^<- +250 .*(queued|Ok)' | sed 's/^/    /'
for i in $(seq 1 60); do grep -q "hello through the backup MX" "$DEMO_DIR/primary.log" && break; sleep 1; done
echo "  at the primary:"
grep "hello through the backup MX" "$DEMO_DIR/primary.log" | tail -1 | sed 's/^/    /'

say "MX of example.com at the demo's Knot (the customer's own, and the gateway's)"
kdig @127.0.0.1 -p 15353 +short example.com MX

say "Drift checks (every 5 s here): public MX, the SMTP probe of every ready replica, the primaries"
for i in $(seq 1 60); do
  n=$(kubectl get md -n "$NS" -o jsonpath='{range .items[*]}{.status.drift}{"\n"}{end}' | grep -c . || true)
  [ "$n" -ge 2 ] && break; sleep 1
done
kubectl get md -n "$NS"
kubectl get md -n "$NS" example-com -o jsonpath='{range .status.conditions[?(@.type=="AcceptanceVerified")]}  AcceptanceVerified: {.status} {.reason}: {.message}{"\n"}{end}'

say "The same checks without a cluster (mx-operator audit; exit status 1 = problems found)"
printf 'example.com\nshop.example\n' | "$BIN/mx-operator" audit --domains - --gateway-hostname mx1.relay.example.net \
  --resolver "$DNS" --probe "$SMTP" && status=0 || status=$?
echo "exit status $status"

cat <<EOF

The node, the operator and the primary keep running. Point kubectl at the node with:
  export KUBECONFIG=$DEMO_DIR/node.kubeconfig
then try: kubectl get pods -n $NS; kubectl describe md example-com -n $NS; curl -s 127.0.0.1:18080/metrics
Logs: $DEMO_DIR/operator.log, $DEMO_DIR/primary.log, ${MX_NODE_DIR:-/var/tmp/mx-operator-node}/run/logs/
Stop everything with: make demo-down
EOF
