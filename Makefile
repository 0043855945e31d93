# libtsq - build, test, install.
#
#   make            build build/$(BLAS)/libtsq.so and libtsq.a
#   make check      install missing Debian packages, build, run every test
#   make demo       install missing packages, run the Fashion-MNIST demo
#   make bench      benchmarks, one JSON object per line
#   make install PREFIX=/usr/local DESTDIR=
#   make deps       apt-get install what is missing (Debian 12)
#   make check-asan / check-valgrind / check-tsan / check-abi / docs
#
# BLAS=openblas (default) or BLAS=cblas (Debian's reference libblas-dev).

VERSION_MAJOR := 0
VERSION_MINOR := 1
VERSION_PATCH := 0
VERSION := $(VERSION_MAJOR).$(VERSION_MINOR).$(VERSION_PATCH)
SONAME := libtsq.so.$(VERSION_MAJOR)

PREFIX ?= /usr/local
DESTDIR ?=
LIBDIR ?= $(PREFIX)/lib
INCLUDEDIR ?= $(PREFIX)/include

BLAS ?= openblas
SAN ?=
CC ?= cc
ifeq ($(CC),cc)
CC := gcc
endif

# Debian 12's OpenBLAS (0.3.21) falls back to its Prescott (SSE3) kernels on
# CPUs newer than itself: on a Sapphire Rapids VM its one-thread sgemm ran at
# 27 GFLOP/s, against 155 with the SkylakeX kernels. Unless the caller has
# chosen, everything make runs (tests, demo, benchmarks) names the kernel set
# that the CPU's flags allow. Flags, not model numbers: the set chosen cannot
# use an instruction the CPU lacks. README.md, "Getting the fast BLAS kernels".
ifeq ($(origin OPENBLAS_CORETYPE),undefined)
CPU_FLAGS := $(shell grep -m1 '^flags' /proc/cpuinfo 2>/dev/null)
ifneq ($(and $(filter avx512f,$(CPU_FLAGS)),$(filter avx512dq,$(CPU_FLAGS)),$(filter avx512cd,$(CPU_FLAGS)),$(filter avx512bw,$(CPU_FLAGS)),$(filter avx512vl,$(CPU_FLAGS))),)
export OPENBLAS_CORETYPE := SkylakeX
else ifneq ($(and $(filter avx2,$(CPU_FLAGS)),$(filter fma,$(CPU_FLAGS))),)
export OPENBLAS_CORETYPE := Haswell
endif
endif

BUILDROOT ?= build
BUILD := $(BUILDROOT)/$(BLAS)$(if $(SAN),-$(SAN))
# make demo, make bench and make bench-compare build at -O3 in a tree of
# their own: make tracks files, not flags, so a shared tree would run
# whichever of the -O2 (check) and -O3 objects was built last.
O3ROOT := $(BUILDROOT)/O3
O3BUILD := $(O3ROOT)/$(BLAS)$(if $(SAN),-$(SAN))

MULTIARCH := $(shell $(CC) -print-multiarch 2>/dev/null)
ifeq ($(BLAS),openblas)
BLAS_CFLAGS = $(shell pkg-config --cflags openblas 2>/dev/null) -DTSQ_BLAS_OPENBLAS=1
BLAS_LIBS = $(shell pkg-config --libs openblas 2>/dev/null || echo -lopenblas)
else ifeq ($(BLAS),cblas)
# Debian's reference BLAS: its own header and its own directory, with an rpath,
# because /usr/lib/<arch>/libblas.so.3 is an alternative that may be OpenBLAS.
BLAS_CFLAGS = -DTSQ_BLAS_NETLIB=1
BLAS_LIBS = -L/usr/lib/$(MULTIARCH)/blas -Wl,-rpath,/usr/lib/$(MULTIARCH)/blas -lblas
else
$(error BLAS must be openblas or cblas)
endif

OPT ?= -O2
WARN := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes
SAN_FLAGS :=
ifeq ($(SAN),asan)
SAN_FLAGS := -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer
endif
ifeq ($(SAN),fuzz)
SAN_FLAGS := -fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined \
             -fno-omit-frame-pointer
endif
ifeq ($(SAN),tsan)
SAN_FLAGS := -fsanitize=thread
endif

CFLAGS_ALL = -std=c11 $(OPT) -g $(WARN) -ffp-contract=off -D_POSIX_C_SOURCE=200809L -fPIC \
             -fvisibility=hidden -Iinclude -Ilibtsq -Ilibtsq/core $(BLAS_CFLAGS) $(SAN_FLAGS) $(CFLAGS)
LIBS_ALL = $(BLAS_LIBS) -lm -lpthread -ldl

# Per-file instruction sets: a source opts into a vector ISA by its name, and
# is only ever called after run-time CPU detection says the ISA is present.
ISA_AVX2 := -mavx2 -mfma
ISA_AVX512 := -mavx2 -mfma -mavx512f -mavx512bw -mavx512vl -mavx512dq
ISA_VNNI := $(ISA_AVX512) -mavx512vnni
ISA_POPCNT := $(ISA_AVX512) -mavx512vpopcntdq
# Tile instructions only: the AMX kernel does no vector arithmetic.
ISA_AMX := -mamx-tile -mamx-int8

LIB_SRCS := $(sort $(wildcard libtsq/*/*.c))
# Most objects are the same whichever BLAS is linked: they are built once,
# in $(COMMON), and shared by both BLAS builds (make check builds both).
# The others name the BLAS (TSQ_BLAS_*) or include blas.h, directly or
# through headers that do (found to a fixed point). blas.h also refuses to
# compile without a BLAS define, so a source missed here fails to build
# instead of silently losing its OpenBLAS-only code.
BLAS_SRCS := $(sort $(shell pat='TSQ_BLAS_|"blas\.h"'; prev=; \
    while [ "$$pat" != "$$prev" ]; do prev=$$pat; \
        for f in $$(grep -lE "$$pat" libtsq/*/*.h); do \
            pat="$$pat|\"([a-z]+/)?$$(basename $$f | sed 's/\./\\./')\""; done; \
        pat=$$(echo "$$pat" | tr '|' '\n' | sort -u | paste -sd'|'); done; \
    grep -lE "$$pat" $(LIB_SRCS)))
COMMON := $(BUILDROOT)/common$(if $(SAN),-$(SAN))
LIB_OBJS := $(patsubst %.c,$(BUILD)/%.o,$(BLAS_SRCS)) \
            $(patsubst %.c,$(COMMON)/%.o,$(filter-out $(BLAS_SRCS),$(LIB_SRCS)))
TEST_SRCS := $(sort $(wildcard tests/test_*.c))
TEST_BINS := $(patsubst tests/%.c,$(BUILD)/tests/%,$(TEST_SRCS))
TEST_SUPPORT_SRCS := $(sort $(wildcard tests/support/*.c))
TEST_SUPPORT_OBJS := $(patsubst %.c,$(BUILD)/%.o,$(TEST_SUPPORT_SRCS))
BENCH_SRCS := $(sort $(wildcard tests/bench/*.c))
BENCH_BINS := $(patsubst tests/bench/%.c,$(BUILD)/bench/%,$(BENCH_SRCS))

SHLIB := $(BUILD)/libtsq.so.$(VERSION)
STLIB := $(BUILD)/libtsq.a
# The inference-only library (docs/kernels.md, "The inference-only
# library"): core, kernels, runtime and io (the model file), no training code.
RT_OBJS := $(filter $(foreach d,$(BUILD) $(COMMON),$(d)/libtsq/core/% $(d)/libtsq/kernels/% $(d)/libtsq/runtime/% $(d)/libtsq/io/%),$(LIB_OBJS))
RTLIB := $(BUILD)/libtsq_runtime.a

CHECK_CFLAGS = $(shell pkg-config --cflags check 2>/dev/null)
CHECK_LIBS = $(shell pkg-config --libs check 2>/dev/null || echo -lcheck -lsubunit -lrt)

.PHONY: fuzz fuzz-run symbols all lib check check-run check-asan check-valgrind check-cblas bench demo \
        install uninstall deps docs clean tests examples

all: lib examples

lib: $(SHLIB) $(BUILD)/$(SONAME) $(BUILD)/libtsq.so $(STLIB) $(RTLIB)

.PHONY: runtime
runtime: $(RTLIB)
	@echo "$(RTLIB): $$(wc -c < $(RTLIB)) bytes ($(words $(RT_OBJS)) objects: core, kernels, runtime, io)"

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -MMD -MP -c $< -o $@

# The shared objects: no BLAS flags (so both builds compile them alike).
$(COMMON)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(filter-out $(BLAS_CFLAGS),$(CFLAGS_ALL)) -MMD -MP -c $< -o $@

$(foreach d,$(BUILD) $(COMMON),$(d)/%_avx2.o): CFLAGS_ALL += $(ISA_AVX2)
$(foreach d,$(BUILD) $(COMMON),$(d)/%_avx512.o): CFLAGS_ALL += $(ISA_AVX512)
$(foreach d,$(BUILD) $(COMMON),$(d)/%_vnni.o): CFLAGS_ALL += $(ISA_VNNI)
$(foreach d,$(BUILD) $(COMMON),$(d)/%_vpopcnt.o): CFLAGS_ALL += $(ISA_POPCNT)
$(foreach d,$(BUILD) $(COMMON),$(d)/%_amx.o): CFLAGS_ALL += $(ISA_AMX)

$(SHLIB): $(LIB_OBJS) libtsq/libtsq.map
	$(CC) -shared -Wl,-soname,$(SONAME) -Wl,--version-script=libtsq/libtsq.map \
	    -Wl,--no-undefined $(SAN_FLAGS) -o $@ $(LIB_OBJS) $(LIBS_ALL)

$(BUILD)/$(SONAME): $(SHLIB)
	ln -sf $(notdir $(SHLIB)) $@

$(BUILD)/libtsq.so: $(BUILD)/$(SONAME)
	ln -sf $(SONAME) $@

$(STLIB): $(LIB_OBJS)
	rm -f $@
	ar rcs $@ $(LIB_OBJS)

$(RTLIB): $(RT_OBJS)
	rm -f $@
	ar rcs $@ $(RT_OBJS)

# The demo's IDX reader is tested like the library, with zlib.
$(BUILD)/tests/test_idx: tests/test_idx.c examples/fmnist/idx.c $(STLIB) $(TEST_SUPPORT_OBJS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) $(CHECK_CFLAGS) -Itests/support -o $@ $< examples/fmnist/idx.c \
	    $(TEST_SUPPORT_OBJS) $(STLIB) $(CHECK_LIBS) -lz $(LIBS_ALL)

# Tests link the static archive, so they can also reach internal kernels.
$(BUILD)/tests/test_%: tests/test_%.c $(STLIB) $(TEST_SUPPORT_OBJS) tests/support/harness.h
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) $(CHECK_CFLAGS) -Itests/support -o $@ $< $(TEST_SUPPORT_OBJS) \
	    $(STLIB) $(CHECK_LIBS) $(LIBS_ALL)

# Benchmarks share the tests' generator and references (not the Check harness).
BENCH_SUPPORT_OBJS := $(BUILD)/tests/support/rng.o $(BUILD)/tests/support/reference.o
$(BUILD)/bench/%: tests/bench/%.c $(STLIB) tests/bench/bench.h $(BENCH_SUPPORT_OBJS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -Itests/bench -Itests/support -o $@ $< $(BENCH_SUPPORT_OBJS) $(STLIB) \
	    $(LIBS_ALL)

# ---- fuzzing (libFuzzer, clang) ---------------------------------------------
# docs/reliability.md, "Fuzzing". `make fuzz FUZZ_SECONDS=600` reproduces it;
# `make fuzz-seeds` regenerates the seed corpora from the library itself.
FUZZ_SRCS := $(sort $(wildcard tests/fuzz/fuzz_*.c))
FUZZ_BINS := $(patsubst tests/fuzz/%.c,$(BUILD)/fuzz/%,$(FUZZ_SRCS))
FUZZ_SECONDS ?= 30
FUZZ_JOBS ?= 2
FUZZ_LINK := -fsanitize=fuzzer,address,undefined

$(BUILD)/fuzz/fuzz_idx: tests/fuzz/fuzz_idx.c examples/fmnist/idx.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) $(FUZZ_LINK) -o $@ $^ -lz

$(BUILD)/fuzz/fuzz_%: tests/fuzz/fuzz_%.c tests/fuzz/fuzz_common.h $(STLIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) $(FUZZ_LINK) -o $@ $< $(STLIB) $(LIBS_ALL)

# Each target runs FUZZ_SECONDS on its committed seed corpus, FUZZ_JOBS
# targets at a time; new inputs go to the build tree, so the repository's
# corpus only grows by hand. A crash, leak, UBSan report, timeout or
# out-of-memory fails the run and prints the end of that target's log.
fuzz:
	@$(MAKE) --no-print-directory deps DEPS_EXTRA="clang libclang-rt-14-dev"
	@$(MAKE) --no-print-directory fuzz-run SAN=fuzz CC=clang

fuzz-run: $(FUZZ_BINS)
	@set -- $(FUZZ_BINS); fail=0; \
	while [ $$# -gt 0 ]; do \
	    jobs=""; i=0; \
	    while [ $$# -gt 0 ] && [ $$i -lt $(FUZZ_JOBS) ]; do \
	        f=$$1; shift; i=$$((i + 1)); \
	        name=$$(basename $$f | sed 's/^fuzz_//'); \
	        mkdir -p $(BUILD)/corpus/$$name; \
	        echo "fuzz $$name: $(FUZZ_SECONDS) s"; \
	        $$f -max_total_time=$(FUZZ_SECONDS) -timeout=10 -rss_limit_mb=2048 \
	            -print_final_stats=1 -artifact_prefix=$(BUILD)/fuzz-$$name- \
	            $(BUILD)/corpus/$$name tests/fuzz/corpus/$$name \
	            > $(BUILD)/fuzz-$$name.log 2>&1 & \
	        jobs="$$jobs $$!:$$name"; \
	    done; \
	    for j in $$jobs; do \
	        name=$${j#*:}; log=$(BUILD)/fuzz-$$name.log; \
	        if wait $${j%%:*}; then \
	            echo "fuzz $$name: $$(grep -E '^#[0-9]+.*DONE' $$log | tail -n 1)"; \
	            echo "fuzz $$name: $$(grep -E 'stat::(number_of_executed_units|average_exec_per_sec|peak_rss_mb)' $$log | tr -s ' \n' ' ')"; \
	        else \
	            tail -n 40 $$log; echo "fuzz $$name: FAILED (log: $$log)"; fail=1; \
	        fi; \
	    done; \
	done; \
	exit $$fail

# The seed generator links the plain library (no sanitizer needed).
.PHONY: fuzz-seeds
$(BUILD)/fuzz/make_seeds: tests/fuzz/make_seeds.c $(STLIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -o $@ $< $(STLIB) $(LIBS_ALL)

fuzz-seeds: $(BUILD)/fuzz/make_seeds
	$(BUILD)/fuzz/make_seeds tests/fuzz/corpus

EXAMPLES := $(BUILD)/examples/minimal $(BUILD)/examples/fmnist $(BUILD)/examples/train_loop
examples: $(EXAMPLES)

# The caller-driven loop of docs/training-loop.md, built so that it cannot rot.
$(BUILD)/examples/train_loop: examples/train_loop.c $(BUILD)/libtsq.so
	@mkdir -p $(dir $@)
	$(CC) -std=c11 $(OPT) $(WARN) -D_POSIX_C_SOURCE=200809L -Iinclude $(SAN_FLAGS) -o $@ $< \
	    -L$(BUILD) -ltsq -lm -Wl,-rpath,'$$ORIGIN/..'

FMNIST_SRCS := $(sort $(wildcard examples/fmnist/*.c))
$(BUILD)/examples/fmnist: $(FMNIST_SRCS) $(wildcard examples/fmnist/*.h) $(BUILD)/libtsq.so
	@mkdir -p $(dir $@)
	$(CC) -std=c11 $(OPT) $(WARN) -D_POSIX_C_SOURCE=200809L -Iinclude $(SAN_FLAGS) -o $@ \
	    $(FMNIST_SRCS) -L$(BUILD) -ltsq -lz -lm -Wl,-rpath,'$$ORIGIN/..'

$(BUILD)/examples/minimal: examples/minimal.c $(BUILD)/libtsq.so
	@mkdir -p $(dir $@)
	$(CC) -std=c11 $(OPT) $(WARN) -Iinclude $(SAN_FLAGS) -o $@ $< -L$(BUILD) -ltsq \
	    -Wl,-rpath,'$$ORIGIN/..'

tests: $(TEST_BINS)

# ---- the README's test command -------------------------------------------
check:
	@$(MAKE) --no-print-directory deps
	@$(MAKE) --no-print-directory -j2 all tests
	@$(MAKE) --no-print-directory check-run
	@$(MAKE) --no-print-directory -j2 all tests BLAS=cblas
	@$(MAKE) --no-print-directory check-run BLAS=cblas CHECK_QUICK=1
	@# make demo and make bench build at -O3, where gcc warns about other things.
	@$(MAKE) --no-print-directory -s -j2 lib OPT=-O3 BUILDROOT=$(O3ROOT) && echo "check: -O3 build clean"

# tests/check_layers.sh fails on any upward include between libtsq's
# folders; TSQ_LAYERS=report only lists them (for a tree in mid-move).
TSQ_LAYERS ?= strict
check-run: all tests
	@BUILD=$(BUILD) BLAS=$(BLAS) CC=$(CC) SAN=$(SAN) CHECK_QUICK=$(CHECK_QUICK) TSQ_LAYERS=$(TSQ_LAYERS) \
	    sh tests/run.sh $(TEST_BINS)

check-asan:
	@$(MAKE) --no-print-directory deps
	@$(MAKE) --no-print-directory check-run SAN=asan CC=gcc

# valgrind (3.19 in Debian 12) decodes AVX2 but not AVX-512: OpenBLAS gets
# its Haswell kernels there, and libtsq, which reads the CPU's features
# through valgrind's CPUID, picks its AVX2 paths by itself. The tests run at
# their quick sizes (CHECK_QUICK): the same code paths and error paths, on
# problems small enough for valgrind's 20-50x slowdown (test_alloc_e2e
# alone re-runs a pipeline 1,254 times).
check-valgrind:
	@$(MAKE) --no-print-directory deps DEPS_EXTRA=valgrind
	@$(MAKE) --no-print-directory all tests
	@OPENBLAS_CORETYPE=$(if $(filter SkylakeX,$(OPENBLAS_CORETYPE)),Haswell,$(OPENBLAS_CORETYPE)) \
	    BUILD=$(BUILD) VALGRIND=1 CHECK_QUICK=1 sh tests/run.sh $(TEST_BINS)

# ---- ThreadSanitizer (docs/reliability.md, "Concurrency") -----------------
# The tests that run threads (several of their own, or libtsq's workers with
# TSQ_CONTEXT_THREADS > 1), built with gcc -fsanitize=thread into
# $(BUILDROOT)/openblas-tsan (clang does not link its TSan runtime into the
# shared library under --no-undefined) and run with one OpenBLAS thread:
# OpenBLAS is not instrumented, so its own threads could only hide races.
# halt_on_error=1: the first report ends the test with exit code 66, which
# Check counts as an error (fork mode works: each test's child reports and
# exits by itself). test_concurrency runs at full size and alone; the others
# run quick and two at a time, since their threaded parts are short (one at
# a time, their CPU / wall was 1.0).
TSAN_TESTS ?= plan nn_layers nn_net quantizer regressor kernels
.PHONY: check-tsan check-tsan-build check-tsan-run check-abi check-abi-run abi-baseline abi-baseline-run
check-tsan:
	@$(MAKE) --no-print-directory deps
	@$(MAKE) --no-print-directory check-tsan-run SAN=tsan CC=gcc

# The build alone (tests/run.sh starts it while the fuzzer's timed runs
# end, so that only the tests wait for them).
check-tsan-build: $(BUILD)/tests/test_concurrency $(patsubst %,$(BUILD)/tests/test_%,$(TSAN_TESTS))

check-tsan-run: check-tsan-build
	@OPENBLAS_NUM_THREADS=1 TSAN_OPTIONS="halt_on_error=1 $(TSAN_OPTIONS)" BUILD=$(BUILD) \
	    SAN=$(SAN) sh tests/run.sh $(BUILD)/tests/test_concurrency
	@OPENBLAS_NUM_THREADS=1 TSAN_OPTIONS="halt_on_error=1 $(TSAN_OPTIONS)" BUILD=$(BUILD) \
	    SAN=$(SAN) CHECK_QUICK=1 TSQ_TEST_JOBS=2 sh tests/run.sh $(patsubst %,$(BUILD)/tests/test_%,$(TSAN_TESTS))

# ---- ABI (docs/reliability.md, "ABI") ---------------------------------------
# tests/abi/libtsq.so.0.abi is the ABI of release 0.1.0: abidw of the plain
# -O2 -g library, public headers only, without paths, source locations or
# DT_NEEDED, so it does not depend on the build directory, compiler or BLAS.
# check-abi compares the library of $(BUILD) with it. Any abidiff exit bit
# fails: 8 (ABIDIFF_ABI_INCOMPATIBLE_CHANGE: a removed function or variable),
# 4 (ABIDIFF_ABI_CHANGE: e.g. a changed parameter or return type, which
# abidiff leaves for review but core.h's policy forbids), 1 or 2 (error).
# New functions are compatible: --no-added-syms leaves them out of the
# verdict; the summary counts them.
ABI_BASELINE := tests/abi/libtsq.so.$(VERSION_MAJOR).abi
ABIDW_FLAGS := --no-corpus-path --no-comp-dir-path --no-show-locs --no-elf-needed \
               --type-id-style hash --headers-dir include --drop-private-types
# The baseline holds public types only already (abidw --headers-dir);
# --headers-dir1 on an ABI XML file with --drop-private-types makes abidiff
# 2.2 abort in its reader, so only the new library is filtered here.
ABIDIFF_FLAGS := --headers-dir2 include --drop-private-types --fail-no-debug-info --no-show-locs \
                 --suppressions tests/abi-experimental.supp
check-abi:
	@$(MAKE) --no-print-directory deps DEPS_EXTRA=abigail-tools
	@$(MAKE) --no-print-directory check-abi-run SAN=

check-abi-run: $(SHLIB)
	@added=$$(abidiff $(ABIDIFF_FLAGS) $(ABI_BASELINE) $(SHLIB) 2>/dev/null \
	    | sed -n 's/^Functions changes summary:.* \([0-9][0-9]*\) Added function.*/\1/p'); \
	abidiff $(ABIDIFF_FLAGS) --no-added-syms $(ABI_BASELINE) $(SHLIB) > $(BUILD)/abidiff.log 2>&1; \
	rc=$$?; \
	if [ $$rc -eq 0 ]; then \
	    echo "check-abi: $(notdir $(SHLIB)) is compatible with $(ABI_BASELINE) ($${added:-0} function(s) added)"; \
	else \
	    cat $(BUILD)/abidiff.log; \
	    echo "check-abi: $(notdir $(SHLIB)) BREAKS $(ABI_BASELINE) (abidiff exit $$rc: 8 incompatible, 4 changed, 1/2 error)"; \
	    exit 1; \
	fi

# Only for a deliberate soname bump (VERSION_MAJOR changes, a new baseline
# file): a compatible release keeps the baseline of its major version.
abi-baseline:
	@$(MAKE) --no-print-directory deps DEPS_EXTRA=abigail-tools
	@$(MAKE) --no-print-directory abi-baseline-run SAN=

abi-baseline-run: $(SHLIB)
	@mkdir -p $(dir $(ABI_BASELINE))
	abidw $(ABIDW_FLAGS) --out-file $(ABI_BASELINE) $(SHLIB)

# PyTorch fp32 / int8 against the plan and the float net (docs/kernels.md,
# "Against PyTorch"): one JSON line per (batch, threads).
.PHONY: bench-compare
bench-compare:
	@$(MAKE) --no-print-directory deps
	@$(MAKE) --no-print-directory lib OPT=-O3 BUILDROOT=$(O3ROOT)
	TSQ_LIBRARY=$(O3BUILD)/libtsq.so /usr/bin/python3 tests/bench/bench_compare.py $(BENCH_ARGS)

bench:
	@$(MAKE) --no-print-directory deps
	@$(MAKE) --no-print-directory bench-bins OPT=-O3 BUILDROOT=$(O3ROOT)
	@for b in $(patsubst $(BUILD)/%,$(O3BUILD)/%,$(BENCH_BINS)); do $$b || exit 1; done

.PHONY: bench-bins
bench-bins: $(BENCH_BINS)

# The end-to-end TSQ demo (docs/demo.md). libtsq's own threads split each
# batch, each calling a one-threaded BLAS: measured faster than OpenBLAS's
# threads, which collapse when the machine is shared (docs/nn.md, Speed).
# DEMO_ARGS adds options, e.g.
# DEMO_ARGS=--quick or DEMO_ARGS="--sweep docs/results.md".
DEMO_ARGS ?=
demo:
	@$(MAKE) --no-print-directory deps DEPS_EXTRA=dataset-fashion-mnist
	@$(MAKE) --no-print-directory -j2 all OPT=-O3 BUILDROOT=$(O3ROOT)
	OPENBLAS_NUM_THREADS=1 $(O3BUILD)/examples/fmnist --json build/fmnist.json --report build/fmnist-report.html \
	    --model build/fmnist-tsq.tsq $(DEMO_ARGS)

# ---- install ---------------------------------------------------------------
$(BUILD)/tsq.pc: tsq.pc.in Makefile
	@mkdir -p $(BUILD)
	sed -e 's|@PREFIX@|$(PREFIX)|g' -e 's|@LIBDIR@|$(LIBDIR)|g' \
	    -e 's|@INCLUDEDIR@|$(INCLUDEDIR)|g' -e 's|@VERSION@|$(VERSION)|g' \
	    -e 's|@BLAS_LIBS@|$(BLAS_LIBS)|g' $< > $@

# The Python package (bindings/python/tsq) goes where Debian's python3 looks
# for locally installed modules: $(PREFIX)/lib/python3.X/dist-packages, or
# /usr/lib/python3/dist-packages for PREFIX=/usr. tsq/_install.py records
# LIBDIR, so the installed package loads this libtsq.so.0 without ldconfig.
# PYTHON_SITEDIR= (empty) skips it; docs/python.md, "Installing".
PYTHON ?= /usr/bin/python3
PYTHON_SITEDIR ?= $(shell $(PYTHON) -c 'import sys; p = "$(PREFIX)";     print(p + "/lib/python3/dist-packages" if p == "/usr" else     "%s/lib/python3.%d/dist-packages" % (p, sys.version_info[1]))' 2>/dev/null)

install: lib $(BUILD)/tsq.pc
	install -d $(DESTDIR)$(LIBDIR)/pkgconfig $(DESTDIR)$(INCLUDEDIR)/tsq
	install -m 644 include/tsq.h $(DESTDIR)$(INCLUDEDIR)/tsq.h
	install -m 644 include/tsq/*.h $(DESTDIR)$(INCLUDEDIR)/tsq/
	install -m 755 $(SHLIB) $(DESTDIR)$(LIBDIR)/
	ln -sf $(notdir $(SHLIB)) $(DESTDIR)$(LIBDIR)/$(SONAME)
	ln -sf $(SONAME) $(DESTDIR)$(LIBDIR)/libtsq.so
	install -m 644 $(STLIB) $(DESTDIR)$(LIBDIR)/
	install -m 644 $(BUILD)/tsq.pc $(DESTDIR)$(LIBDIR)/pkgconfig/tsq.pc
	@if [ -n "$(PYTHON_SITEDIR)" ]; then \
	    echo "install the Python package into $(DESTDIR)$(PYTHON_SITEDIR)/tsq"; \
	    install -d $(DESTDIR)$(PYTHON_SITEDIR)/tsq/torch && \
	    install -m 644 bindings/python/tsq/*.py bindings/python/tsq/py.typed \
	        $(DESTDIR)$(PYTHON_SITEDIR)/tsq/ && \
	    install -m 644 bindings/python/tsq/torch/*.py $(DESTDIR)$(PYTHON_SITEDIR)/tsq/torch/ && \
	    printf '"""Written by make install: where libtsq.so.0 was installed."""\nLIBDIR = "%s"\n' \
	        '$(LIBDIR)' > $(DESTDIR)$(PYTHON_SITEDIR)/tsq/_install.py; \
	fi

uninstall:
	rm -f $(DESTDIR)$(INCLUDEDIR)/tsq.h $(DESTDIR)$(LIBDIR)/libtsq.* \
	    $(DESTDIR)$(LIBDIR)/pkgconfig/tsq.pc
	rm -rf $(DESTDIR)$(INCLUDEDIR)/tsq
	[ -z "$(PYTHON_SITEDIR)" ] || rm -rf $(DESTDIR)$(PYTHON_SITEDIR)/tsq

# ---- Debian packages --------------------------------------------------------
# Installed by name when missing; `make check` and `make demo` call this first.
DEPS_CORE := gcc g++ make pkg-config libopenblas-dev libblas-dev check zlib1g-dev clang libclang-rt-14-dev \
             abigail-tools python3 python3-numpy python3-torch python3-venv openmpi-bin libopenmpi-dev \
             dataset-fashion-mnist
DEPS_EXTRA ?=
deps:
	@missing=""; for p in $(DEPS_CORE) $(DEPS_EXTRA); do \
	    dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' \
	        || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	    echo "make deps: installing$$missing"; \
	    if [ "$$(id -u)" != 0 ]; then echo "make deps: run as root (or: sudo make deps)" >&2; exit 1; fi; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	        --no-install-recommends $$missing; \
	fi

docs:
	@$(MAKE) --no-print-directory deps DEPS_EXTRA=doxygen
	doxygen docs/Doxyfile

clean:
	rm -rf build

.SECONDARY:

-include $(LIB_OBJS:.o=.d)

# Rewrites tests/symbols.txt from the built library (after adding public calls).
symbols: lib
	nm -D --defined-only $(BUILD)/libtsq.so | awk '$$2 ~ /^[TDBR]$$/ {print $$3}' \
	    | sed 's/@.*//' | sort -u > tests/symbols.txt
