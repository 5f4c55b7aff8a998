# The one place each command of the project is written. README and .ci/run call these targets.
GO       ?= go
BIN      ?= bin/cohort
PKG      := github.com/cohortlab/cohort
# Packages with goroutines of their own run under the race detector too (the trainer's kernels
# and AdamW run on every core).
RACE_DIRS := consensus coordinator transport trainer internal/par
RACE_PKGS  = $(shell for d in $(RACE_DIRS); do [ -d $$d ] && $(GO) list ./$$d/... 2>/dev/null; done)
FUZZTIME ?= 20s
BENCHTIME ?= 1x

.PHONY: all build build-openblas build-purego demo-train test race bench vs-pytorch demo demo-lm fuzz verify e2e figures clean

all: build

# The fast path is the default where it can be: when the system has OpenBLAS (Debian
# libopenblas-dev), `make build` (and so demo, demo-lm and e2e) links gorgonia to it; without it
# the binary is pure Go. Every replica of one cohort should use the same kind of build (see
# `cohort --version`). The OpenBLAS build is tested too when the library is installed (.ci/run
# installs it).
HAVE_OPENBLAS := $(shell ldconfig -p 2>/dev/null | grep -q 'libopenblas\.so ' && echo yes)
BUILD_TAGS    ?= $(if $(filter yes,$(HAVE_OPENBLAS)),openblas,)

## build: the cohort binary (with OpenBLAS when it is installed; BUILD_TAGS= for pure Go).
build:
	$(GO) build $(if $(BUILD_TAGS),-tags $(BUILD_TAGS)) -o $(BIN) ./cmd/cohort

## test: the whole suite (unit, property, golden, short simulations); under 10 minutes on 2 cores.
test:
	$(GO) vet ./...
	COHORT_PLANTED=1 $(GO) test -short -shuffle=on -timeout 9m ./...
	@if [ -n "$(RACE_PKGS)" ]; then $(GO) test -race -short -shuffle=on -timeout 9m $(RACE_PKGS); fi
	$(GO) test -race -count=1 -run 'TestCohortTrainsOverQUIC' ./sim/   # the data plane, peers and coordinators together
	$(GO) test -count=1 -run 'TestCohortOfProcesses' ./cmd/cohort/     # real processes, a leader SIGKILLed, a peer restarted
	@if [ "$(HAVE_OPENBLAS)" = yes ]; then $(GO) test -short -tags openblas ./trainer/...; \
	 else echo "libopenblas not installed: skipping the -tags openblas run"; fi

## build-openblas: the cohort binary with gorgonia on OpenBLAS, failing if it is not installed.
build-openblas:
	$(GO) build -tags openblas -o $(BIN) ./cmd/cohort

## build-purego: the pure-Go cohort binary, even where OpenBLAS is installed.
build-purego:
	$(GO) build -o $(BIN) ./cmd/cohort

## bench: every benchmark once (smoke); raise BENCHTIME for real figures, e.g. make bench BENCHTIME=2s
bench:
	$(GO) test -run '^$$' -bench . -benchtime $(BENCHTIME) -benchmem ./...

## vs-pytorch: one training step (Grad, clip, AdamW) of the MLP and the GPT against PyTorch's on
## this CPU at 1 and 2 threads, pure Go and -tags openblas; prints Cohort/PyTorch (> 1: faster).
## Needs Debian python3-torch. Knobs: BENCHTIME=3s COUNT=3 MODELS="mlp gpt" (about 4 minutes).
vs-pytorch:
	GO=$(GO) ./scripts/vs-pytorch.sh

## demo: the main job on embedded data, no setup needed: 3 Raft coordinators and 6 peers on loopback,
## each peer behind a 10 Mbit/s, 50 ms, 1 % loss link, train the Fashion-MNIST MLP; the leader is
## killed at round 6 and the cohort carries on.
demo: build
	./$(BIN) --log-level warn simulate --coordinators 3 --peers 6 --model mlp --rounds 12 --inner-steps 30 \
	  --partition dirichlet:1 --link 10mbit,50ms,1% --kill-leader-at 6 --seed 1

## demo-lm: a text cohort on the embedded play, no setup needed: 3 Raft coordinators and 4 peers
## behind 10 Mbit/s, 50 ms, 1 % loss links train a byte-level GPT (2 layers, width 64, 4 heads,
## context 64), each peer on its own speakers' lines; it prints the validation loss per round, the
## contribution table and 200 bytes sampled from the final model. Measured on 2 cores (shared):
## 3m01s wall, val_loss 4.81 after round 1 to 2.72 after round 6 (--lr 3e-3 did no better).
demo-lm: build
	./$(BIN) --log-level warn simulate --coordinators 3 --peers 4 --model gpt:2-64-4-64 --data embedded \
	  --partition natural --link 10mbit,50ms,1% --rounds 6 --inner-steps 50 --seed 1

## demo-train: the in-process DiLoCo trainer alone (no network).
demo-train: build
	./$(BIN) train --model mlp --mode diloco --workers 4 --inner-steps 25 --rounds 8 --partition dirichlet:0.5 --seed 1 --data embedded

## fuzz: every fuzz target for FUZZTIME each.
fuzz:
	@set -e; for pkg in $$($(GO) list ./...); do \
	  for t in $$($(GO) test -list '^Fuzz' $$pkg 2>/dev/null | grep '^Fuzz' || true); do \
	    echo "== $$pkg $$t"; $(GO) test -run '^$$' -fuzz "^$$t$$" -fuzztime $(FUZZTIME) $$pkg; \
	  done; \
	done

## e2e: the end-to-end runs alone (real coordinator, join and stage processes; whole simulated
## cohorts with faults; a stage group's processes killed and resumed). They are part of `make test` too; this target reruns just them, uncached. Only
## here: TestCohortAcrossHosts, the processes in network namespaces of their own over shaped veth
## links (it needs root, ip and tc, and skips without them).
e2e: build
	$(GO) test -count=1 -timeout 20m -run 'Processes|Faults|CohortTrains|Cohort|AcrossHosts|Planted|Stage' ./cmd/... ./sim/

## verify: formatting, vet and a tidy module.
verify:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || (gofmt -l $$(git ls-files '*.go'); echo "gofmt needed"; exit 1)
	$(GO) vet ./...
	$(GO) mod tidy -diff

clean:
	rm -rf bin
