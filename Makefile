# mx-operator: the two set-up commands are `make demo` and `make test`; both install what
# they need (Debian packages, a locally built kube-apiserver) and cache it under
# ~/.cache/mx-operator.
SHELL := /bin/bash
CARGO ?= cargo
LOCAL_CLUSTER := target/debug/local-cluster
KUBECONFIG_DEMO := $(HOME)/.cache/mx-operator/demo/kubeconfig

.PHONY: all bootstrap build test unit integration lint crds check-crds demo demo-local demo-down images node-up node-down bench bench-smoke manifests verify-mail-safety soak

all: build

bootstrap:
	@bash tests/harness/bootstrap.sh

build:
	$(CARGO) build --workspace --locked

## test: bootstrap, lint, unit and integration tests (the CI command)
test: bootstrap lint
	$(CARGO) build --workspace --locked
	$(CARGO) test --workspace --locked --no-fail-fast

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

## verify-mail-safety: the data-plane tests against real Postfix and the fault and bad-input
## tests, and their figures: relay tricks and unknown recipients accepted, messages lost,
## duplicated or bounced (outages, restarts, domains deleted, withdrawn or moved)
verify-mail-safety: bootstrap
	$(CARGO) build --workspace --locked
	@set -o pipefail; \
	  $(CARGO) test --locked -p mx-operator-tests --test gateway --test drift --test crash --test restart --test hostile -- --nocapture 2>&1 \
	  | tee target/mail-safety.log | grep -E '^test result'; status=$$?; \
	  echo; echo "Mail safety:"; grep '^mail safety:' target/mail-safety.log | sed 's/^mail safety: /  /'; \
	  awk '/^mail safety: messages queued/ { for (i = 1; i < NF; i++) { \
	      if ($$i == "queued") q += $$(i+1); if ($$i == "delivered") d += $$(i+1); \
	      if ($$i == "lost") l += $$(i+1); if ($$i == "duplicated") u += $$(i+1); \
	      if ($$i == "bounced") b += $$(i+1) } } \
	    END { printf "  all fault tests: messages queued %d / delivered %d / lost %d / duplicated %d / bounced %d\n", q, d, l, u, b }' target/mail-safety.log; \
	  echo "Faults and bad input:"; grep -E '^(faults|hostile specs):' target/mail-safety.log | sed -E 's/^(faults|hostile specs): /  /'; \
	  exit $$status

## soak: the long runs kept out of make test: the validator's and renderer's property tests
## (no input yields an injected Postfix line or parameter) at SOAK_CASES cases each, in a
## release build, and the operator SIGKILL test SOAK_CRASHES times
SOAK_CASES ?= 1000000
SOAK_CRASHES ?= 5
soak: bootstrap
	$(CARGO) build --workspace --locked
	PROPTEST_CASES=$(SOAK_CASES) $(CARGO) test --release --locked -p mx-operator --lib -- proptests properties
	@set -o pipefail; for i in $$(seq $(SOAK_CRASHES)); do \
	  $(CARGO) test --locked -p mx-operator-tests --test crash -- --nocapture 2>&1 | grep -E '^(faults|test result)' || exit 1; \
	done

## bench: the benchmark figures (release build), printed and written to bench/results.json
bench: bootstrap
	$(CARGO) build --release --locked -p mx-operator -p mx-operator-tests --bin mx-operator --bin bench
	MX_OPERATOR_BINARY=$(CURDIR)/target/release/mx-operator target/release/bench --size full --out bench/results.json

## bench-smoke: every section at its smallest size (proves the bench runs; figures not kept)
bench-smoke: bootstrap
	$(CARGO) build --locked -p mx-operator -p mx-operator-tests --bin mx-operator --bin bench
	target/debug/bench --size smoke --out target/bench-smoke.json

## crds: regenerate crds/, the chart's copy and docs/api.md from the Rust API types
crds:
	$(CARGO) run --quiet --locked -p mx-operator -- crd --out-dir crds
	cp crds/*.mx-operator.io.yaml charts/mx-operator/crds/
	$(CARGO) run --quiet --locked -p mx-operator -- crd --reference > docs/api.md

## manifests: deploy/operator/mx-operator.yaml, the chart rendered with its defaults (the
## kustomize base's operator); a test fails when it is stale
manifests: bootstrap
	$(HOME)/.cache/mx-operator/venv/bin/python3 tests/harness/helm.py render charts/mx-operator '{}' mx-operator mx-operator-system > deploy/operator/mx-operator.yaml 2>/dev/null

## images: the operator and gateway images from deploy/*/Dockerfile (buildah, no registry)
images: bootstrap build
	@bash tests/harness/images.sh

## node-up / node-down: the real single-node cluster the node tests and the demo use
node-up: images
	@bash tests/harness/node.sh up
node-down:
	@bash tests/harness/node.sh down

## demo: the images built, the single-node cluster started, the gateway of examples/ as pods,
## a message delivered to a local primary, the drift checks; falls back to demo-local where
## the node cannot start
DEMO_DIR := $(HOME)/.cache/mx-operator/demo
demo: bootstrap build
	@bash tests/harness/demo.sh

## demo-local: a local control plane (no kubelet), the operator running against it, the
## gateway as host processes, and examples/ applied
demo-local: bootstrap build
	@$(LOCAL_CLUSTER) up
	@if [ -f $(DEMO_DIR)/operator.pid ] && kill -0 $$(cat $(DEMO_DIR)/operator.pid) 2>/dev/null; then \
	  echo "operator already running (pid $$(cat $(DEMO_DIR)/operator.pid))"; \
	else \
	  KUBECONFIG=$(KUBECONFIG_DEMO) POD_NAMESPACE=default nohup target/debug/mx-operator run \
	    --metrics-address 127.0.0.1:18080 --log-format text \
	    --resolver 127.0.0.1:15353 --drift-interval-seconds 5 > $(DEMO_DIR)/operator.log 2>&1 & \
	  echo $$! > $(DEMO_DIR)/operator.pid; \
	  echo "operator started (pid $$!), log: $(DEMO_DIR)/operator.log"; \
	fi
	kubectl --kubeconfig $(KUBECONFIG_DEMO) create namespace mail-demo --dry-run=client -o yaml | kubectl --kubeconfig $(KUBECONFIG_DEMO) apply -f -
	kubectl --kubeconfig $(KUBECONFIG_DEMO) apply -n mail-demo -f examples/
	@# The demo's Knot listens on 127.0.0.1:15353 instead of the example's port 53.
	kubectl --kubeconfig $(KUBECONFIG_DEMO) patch -n mail-demo dnsprovider/knot --type merge -p '{"spec":{"rfc2136":{"port":15353}}}'
	@# The demo's gateway replica listens on 127.0.0.1:2525, and no customer server runs here:
	@# the primaries point at a closed loopback port, so nothing leaves this machine.
	kubectl --kubeconfig $(KUBECONFIG_DEMO) patch -n mail-demo mailgateway/edge --type merge -p '{"spec":{"probeAddress":"127.0.0.1:2525"}}'
	for md in example-com shop-example; do kubectl --kubeconfig $(KUBECONFIG_DEMO) patch -n mail-demo maildomain/$$md --type merge -p '{"spec":{"primary":{"host":"127.0.0.1","port":2526}}}'; done
	kubectl --kubeconfig $(KUBECONFIG_DEMO) wait -n mail-demo --for=condition=Ready --timeout=60s maildomain/example-com maildomain/shop-example
	@echo
	kubectl --kubeconfig $(KUBECONFIG_DEMO) get mail,configmaps -n mail-demo
	@echo
	@echo "MX of example.com at the demo's Knot (the customer's own, and the gateway's):"
	kdig @127.0.0.1 -p 15353 +short example.com MX
	@echo
	@echo "One gateway replica as local processes (the agent and Postfix), as the StatefulSet runs it:"
	@$(LOCAL_CLUSTER) gateway mail-demo edge
	@echo "SMTP probe of the gateway (RCPT only; no mail is sent):"
	@printf '  known recipient   alice@example.com:   '; swaks --server 127.0.0.1:2525 --quit-after RCPT --from probe@client.test --to alice@example.com 2>&1 | grep -A1 -e '-> RCPT TO' | tail -1
	@printf '  unknown recipient nobody@example.com:  '; swaks --server 127.0.0.1:2525 --quit-after RCPT --from probe@client.test --to nobody@example.com 2>&1 | grep -A1 -e '-> RCPT TO' | tail -1
	@printf '  foreign domain    someone@elsewhere.test: '; swaks --server 127.0.0.1:2525 --quit-after RCPT --from probe@client.test --to someone@elsewhere.test 2>&1 | grep -A1 -e '-> RCPT TO' | tail -1
	@echo
	@echo "Drift checks (every 5 s here): public MX through the demo's Knot, the SMTP probe of the gateway, the primaries:"
	@for i in $$(seq 1 60); do \
	  n=$$(kubectl --kubeconfig $(KUBECONFIG_DEMO) get md -n mail-demo -o jsonpath='{range .items[*]}{.status.drift}{"\n"}{end}' | grep -c .); \
	  [ "$$n" -ge 2 ] && break; sleep 1; \
	done
	kubectl --kubeconfig $(KUBECONFIG_DEMO) get md -n mail-demo
	@echo
	@echo "The same checks without a cluster (mx-operator audit; exit status 1 = problems found):"
	@printf 'example.com\nshop.example\n' | target/debug/mx-operator audit --domains - --gateway-hostname mx1.relay.example.net --resolver 127.0.0.1:15353 --probe 127.0.0.1:2525; echo "exit status $$?"
	@echo
	@echo "The local control plane and the operator keep running. Point kubectl at them with:"
	@echo "  export KUBECONFIG=$(KUBECONFIG_DEMO)"
	@echo "then try: kubectl describe md example-com -n mail-demo; curl -s 127.0.0.1:18080/metrics"
	@echo "No kubelet runs here, so the gateway's pods never start (it reports 0/2 replicas ready);"
	@echo "the replica above is the agent and Postfix started by hand, logs in /var/tmp/mx-operator-demo/gateway."
	@echo "Stop everything with: make demo-down"

demo-down:
	@if [ -f $(DEMO_DIR)/operator.pid ]; then kill $$(cat $(DEMO_DIR)/operator.pid) 2>/dev/null || true; rm -f $(DEMO_DIR)/operator.pid; echo "stopped the operator"; fi
	@if [ -f $(DEMO_DIR)/sink.pid ]; then kill $$(cat $(DEMO_DIR)/sink.pid) 2>/dev/null || true; rm -f $(DEMO_DIR)/sink.pid; echo "stopped the primary"; fi
	@$(LOCAL_CLUSTER) down
	@bash tests/harness/node.sh down
