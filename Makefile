# make        builds the shim library and the lcpdiff binary
# make test   sets everything up on a fresh Debian machine and runs every test
# make demo   sets everything up and makes demo.png with the built-in toy-world model
# make bench  compares the tensor layer with Python's torch on the same libtorch

GO      ?= go
BUILD   := build
SHIM    := $(BUILD)/lib/liblcptorch.so
BIN     := $(BUILD)/bin/lcpdiff
NPROC   := $(shell nproc 2>/dev/null || echo 2)
VERSION := $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)

.PHONY: all shim test demo bench fuzz clean FORCE

all: $(BIN)

$(BUILD)/libtorch.env:
	scripts/fetch-libtorch.sh

shim: $(SHIM)

$(SHIM): $(BUILD)/libtorch.env $(wildcard internal/torch/shim/*)
	. ./$(BUILD)/libtorch.env && cmake -S internal/torch/shim -B $(BUILD)/shim \
		-DCMAKE_PREFIX_PATH="$$TORCH_CMAKE_PREFIX" -DCMAKE_BUILD_TYPE=Release \
		-DCMAKE_LIBRARY_OUTPUT_DIRECTORY="$(CURDIR)/$(BUILD)/lib" >/dev/null
	cmake --build $(BUILD)/shim -j $(NPROC)

$(BIN): $(SHIM) FORCE
	$(GO) build -ldflags "-X main.version=$(VERSION)" -o $@ ./cmd/lcpdiff

test: $(BIN)
	$(GO) vet ./...
	$(GO) test -count=1 ./...

demo: $(BIN)
	$(BIN) generate --layout docs/toyworld-demo.yaml -o demo.png --show-boxes

bench: $(SHIM)
	scripts/bench.sh

fuzz:
	$(GO) test ./internal/safetensors -run '^$$' -fuzz FuzzParse -fuzztime 60s

clean:
	rm -rf $(BUILD)
