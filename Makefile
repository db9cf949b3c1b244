# Portcullis — see README.md.
#   make run      install what is missing, build, run the gateway on 127.0.0.1:2525 -> 127.0.0.1:25
#   make test     install what is missing, build, run every test (end-to-end against the AOT binary)
#   make publish  the Native-AOT linux-x64 binary in artifacts/publish/linux-x64/portcullis
#   make bench    2 KB/100 KB/5 MB through the gateway vs. straight to smtp-sink (ratio, latency, CPU and
#                 memory per message next to libclamav's own), a 200-client burst, plus BenchmarkDotNet;
#                 BENCH_QUICK=1 make bench-load for a 1-2 minute smoke (docs/PERFORMANCE.md)
#   make bench-profile  perf record -g of the gateway under the 2 KB load (binary with symbols)
#   make publish-arm64  cross-build the linux-arm64 binary (Raspberry Pi 4/5, 64-bit OS)
#   make package  .deb packages for amd64 and arm64 in artifacts/packages (dpkg-buildpackage, lintian;
#                 Maintainer from DEB_MAINTAINER="Name <address>", default git user.name/user.email)
#   make package-test  apt install/remove/install/purge of the amd64 .deb in a throw-away root
#   make man      portcullis(8) and portcullis.ini(5) from docs/man/*.md in artifacts/man
#   make install DESTDIR=...  the binary and rootfs/ laid out under DESTDIR
#   make bench-reload  mail keeps flowing during signature reloads (concurrent vs. low memory)
#   make bench-policy  hostile MIME (300,000 parts, 8 MB header line): peak RSS, CPU vs. portcullis scan
#   make load     1,000 connections (idle and trickling ones among them), then 100,000 messages (docs/RELIABILITY.md)
#   make fuzz     AFL++ through SharpFuzz over the SMTP parsers, FUZZ_SECONDS (300) per target

RID ?= linux-x64
PUBLISH_DIR := artifacts/publish/$(RID)
BIN := $(PUBLISH_DIR)/portcullis
ARM64_DIR := artifacts/publish/linux-arm64
ARM64_BIN := $(ARM64_DIR)/portcullis
DESTDIR ?=
DOTNET ?= dotnet
export DOTNET_CLI_TELEMETRY_OPTOUT := 1
export DOTNET_NOLOGO := 1

.PHONY: all deps publish publish-arm64 run test test-arm64 verify-units package package-test man install bench bench-load bench-micro bench-reload bench-profile bench-policy clean check-config load load-connections load-soak fuzz

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

# The x64 suite, the unit checks, then the arm64 binary under qemu (scan + one SMTP transaction).
test: deps publish publish-arm64
	build/deps.sh package
	PORTCULLIS_BIN=$(abspath $(BIN)) PORTCULLIS_ARM64_BIN=$(abspath $(ARM64_BIN)) build/test.sh

test-arm64: publish-arm64
	build/smoke-arm64.sh $(ARM64_BIN)

# Cross-compiled with clang against the arm64 sysroot Debian installs as a foreign architecture.
publish-arm64:
	build/deps.sh run
	build/deps.sh arm64
	$(DOTNET) publish src/Appliance/Appliance.csproj -c Release -r linux-arm64 -o $(ARM64_DIR) --nologo -v q \
		-p:CppCompilerAndLinker=clang -p:SysRoot=/ -p:ObjCopyName=aarch64-linux-gnu-objcopy
	@echo "binary: $(ARM64_BIN) ($$(stat -c %s $(ARM64_BIN)) bytes)"

verify-units: $(BIN)
	build/deps.sh package
	build/verify-units.sh $(BIN)

$(BIN):
	$(MAKE) --no-print-directory publish

$(ARM64_BIN):
	$(MAKE) --no-print-directory publish-arm64

install: $(BIN)
	build/install.sh "$(if $(DESTDIR),$(abspath $(DESTDIR)),/)" $(BIN)

package: publish publish-arm64
	build/deps.sh package
	build/package.sh amd64 $(BIN) artifacts/packages
	build/package.sh arm64 $(ARM64_BIN) artifacts/packages

package-test: $(BIN)
	build/deps.sh package
	build/package.sh amd64 $(BIN) artifacts/packages
	build/package-test.sh artifacts/packages/portcullis_$$(sed -nE 's|.*<Version>([^<]+)</Version>.*|\1|p' Directory.Build.props | head -1)_amd64.deb

man:
	build/deps.sh package
	build/man.sh artifacts/man

bench: bench-load bench-micro

bench-load: publish
	build/deps.sh bench
	build/bench-load.sh $(BIN)

# A binary of its own with symbols kept, so perf names the managed frames.
bench-profile:
	build/deps.sh profile
	$(DOTNET) publish src/Appliance/Appliance.csproj -c Release -r $(RID) -o artifacts/publish-symbols/$(RID) --nologo -v q -p:StripSymbols=false
	build/bench-profile.sh artifacts/publish-symbols/$(RID)/portcullis $(or $(PROFILE_SECONDS),20)

bench-reload: publish
	build/deps.sh bench
	build/bench-reload.sh $(BIN)

# Attachment policy: hostile messages' peak RSS and CPU next to `portcullis scan`, clean-mail CPU
# (BASELINE_BIN: another build to compare the clean-mail CPU with, e.g. main's).
bench-policy: publish
	build/deps.sh bench
	build/bench-policy.sh $(BIN) $(BASELINE_BIN)

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
