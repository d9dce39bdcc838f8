# The two set-up commands of the README, and the developer targets around them.
#   make demo   installs what is missing, builds, fetches the model, runs the main job
#   make test   installs what is missing, builds, runs every test through ctest
BUILD      ?= build
ASAN_BUILD ?= build-asan
FUZZ_BUILD ?= build-fuzz
JOBS       ?= 2
CMAKE_ARGS ?=
MODEL      ?= models/SmolLM2-135M-Instruct.Q4_1.gguf
HEADWISE   := $(BUILD)/launcher/headwise

export OMPI_ALLOW_RUN_AS_ROOT := 1
export OMPI_ALLOW_RUN_AS_ROOT_CONFIRM := 1

.PHONY: all deps pyenv model build build-asan test test-asan fuzz demo bench format format-check clean

all: build

deps:
	@scripts/install-deps

pyenv:
	@scripts/python-env

model:
	@scripts/fetch-model

$(BUILD)/build.ninja:
	cmake -S . -B $(BUILD) -G Ninja $(CMAKE_ARGS)

build: deps $(BUILD)/build.ninja
	cmake --build $(BUILD) -j$(JOBS)

$(ASAN_BUILD)/build.ninja:
	cmake -S . -B $(ASAN_BUILD) -G Ninja -DCMAKE_BUILD_TYPE=Debug -DHEADWISE_SANITIZE=ON -DHEADWISE_CUDA=OFF $(CMAKE_ARGS)

build-asan: deps $(ASAN_BUILD)/build.ninja
	cmake --build $(ASAN_BUILD) -j$(JOBS)

test: build model pyenv
	ctest --test-dir $(BUILD) --output-on-failure -j$(JOBS)

# Unit and MPI tests under AddressSanitizer + UndefinedBehaviorSanitizer.
test-asan: build-asan model
	ctest --test-dir $(ASAN_BUILD) --output-on-failure -j$(JOBS) -LE 'oracle|cuda|model'

# libFuzzer + ASan + UBSan (clang): each target in fuzz/ for FUZZ_SECONDS, up to
# FUZZ_JOBS at once, on a copy of its seeds in $(FUZZ_BUILD); fails on a crash.
FUZZ_SECONDS ?= 60
FUZZ_JOBS    ?= $(JOBS)
FUZZ_TARGETS ?= gguf tokenizer chat_template request

$(FUZZ_BUILD)/build.ninja:
	CC=clang CXX=clang++ cmake -S . -B $(FUZZ_BUILD) -G Ninja -DHEADWISE_FUZZ=ON -DHEADWISE_CUDA=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo $(CMAKE_ARGS)

fuzz: deps $(FUZZ_BUILD)/build.ninja
	cmake --build $(FUZZ_BUILD) -j$(JOBS) --target $(addsuffix _fuzzer,$(FUZZ_TARGETS))
	fuzz/run-fuzzers $(FUZZ_BUILD) $(FUZZ_SECONDS) $(FUZZ_JOBS) $(FUZZ_TARGETS)

demo: build model
	$(HEADWISE) inspect $(MODEL)
	scripts/demo $(HEADWISE) $(MODEL) 3

# Benchmarks write JSON into bench/out/; figures go in docs/PERF.md.
bench: build model
	@mkdir -p bench/out
	$(BUILD)/bench/kernels_bench --benchmark_format=json --benchmark_out=bench/out/kernels_bench.json --benchmark_out_format=json
	$(BUILD)/bench/llama_bench -m $(MODEL) --out bench/out/llama_bench.json
	$(BUILD)/bench/offload_bench --out bench/out/offload_bench.json
	bench/run_distributed.sh $(BUILD)

CXX_SOURCES = $(shell git ls-files '*.cc' '*.h' '*.cu' '*.cuh')

format:
	clang-format -i $(CXX_SOURCES)

format-check:
	@echo "clang-format --dry-run -Werror on $(words $(CXX_SOURCES)) files"
	@clang-format --dry-run -Werror $(CXX_SOURCES) && echo "format-check: ok"

clean:
	rm -rf $(BUILD) $(ASAN_BUILD)
