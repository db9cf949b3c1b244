# Portcullis — see README.md.
#   make run      install what is missing, build, run the gateway on 127.0.0.1:2525 -> 127.0.0.1:25
#   make test     install what is missing, build, run every test (end-to-end against the AOT binary)
#   make publish  the Native-AOT linux-x64 binary in artifacts/publish/linux-x64/portcullis
#   make bench    throughput ratio through the gateway vs. straight to smtp-sink, plus BenchmarkDotNet
#   make load     1,000 connections (idle and trickling ones among them), then 100,000 messages (docs/RELIABILITY.md)
#   make fuzz     AFL++ through SharpFuzz over the SMTP parsers, FUZZ_SECONDS (300) per target

RID ?= linux-x64
PUBLISH_DIR := artifacts/publish/$(RID)
BIN := $(PUBLISH_DIR)/portcullis
DOTNET ?= dotnet
export DOTNET_CLI_TELEMETRY_OPTOUT := 1
export DOTNET_NOLOGO := 1

.PHONY: all deps publish run test bench bench-load bench-micro clean check-config load load-connections load-soak fuzz

all: publish

deps:
	build/deps.sh test

publish:
	build/deps.sh run
	$(DOTNET) publish src/Appliance/Appliance.csproj -c Release -r $(RID) -o $(PUBLISH_DIR) --nologo -v q
	@echo "binary: $(BIN) ($$(stat -c %s $(BIN)) bytes)"

run: publish
	build/run-config.sh artifacts/run/portcullis.ini >/dev/null
	$(BIN) check-config --config artifacts/run/portcullis.ini
	exec $(BIN) run --config artifacts/run/portcullis.ini

test: deps publish
	PORTCULLIS_BIN=$(abspath $(BIN)) build/test.sh

bench: bench-load bench-micro

bench-load: publish
	build/deps.sh bench
	build/bench-load.sh $(BIN)

bench-micro:
	PORTCULLIS_REPO=$(CURDIR) $(DOTNET) run -c Release --project tests/Benchmarks -- --filter '*' $(BDN_ARGS)

load: load-connections load-soak

load-connections: publish
	build/deps.sh bench
	build/load.sh $(BIN) connections

load-soak: publish
	build/deps.sh bench
	build/load.sh $(BIN) soak $(or $(LOAD_MESSAGES),100000)

FUZZ_SECONDS ?= 300
fuzz:
	build/deps.sh test
	build/fuzz.sh $(FUZZ_SECONDS)

clean:
	rm -rf artifacts
	find src tests -type d \( -name bin -o -name obj \) -prune -exec rm -rf {} +
