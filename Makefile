# mx-operator: the two set-up commands are `make demo` and `make test`; both install what
# they need (Debian packages, a locally built kube-apiserver) and cache it under
# ~/.cache/mx-operator.
SHELL := /bin/bash
CARGO ?= cargo
LOCAL_CLUSTER := target/debug/local-cluster
KUBECONFIG_DEMO := $(HOME)/.cache/mx-operator/demo/kubeconfig

.PHONY: all bootstrap build test unit integration lint crds check-crds demo demo-down

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

## crds: regenerate crds/ from the Rust API types
crds:
	$(CARGO) run --quiet --locked -p mx-operator -- crd --out-dir crds

## demo: a local control plane with the CRDs and examples/ applied
demo: bootstrap build
	@$(LOCAL_CLUSTER) up
	kubectl --kubeconfig $(KUBECONFIG_DEMO) create namespace mail-demo --dry-run=client -o yaml | kubectl --kubeconfig $(KUBECONFIG_DEMO) apply -f -
	kubectl --kubeconfig $(KUBECONFIG_DEMO) apply -n mail-demo -f examples/
	@echo
	kubectl --kubeconfig $(KUBECONFIG_DEMO) get mail -n mail-demo
	@echo
	@echo "The local control plane keeps running. Point kubectl at it with:"
	@echo "  export KUBECONFIG=$(KUBECONFIG_DEMO)"
	@echo "then try: kubectl get md -n mail-demo; kubectl explain maildomain.spec.recipients"
	@echo "The controllers (mx-operator run) are not built yet, so no status is set."
	@echo "Stop it with: make demo-down"

demo-down:
	@$(LOCAL_CLUSTER) down
