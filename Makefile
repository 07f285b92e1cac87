# fluxprm — build, test, install.  `make` builds; `make test` runs the suite; `make asan` runs it under
# AddressSanitizer + UBSan; `make install PREFIX=...`; `make check-long`, `make bench` for long work.
CC      ?= gcc
PREFIX  ?= /usr/local
BUILD   ?= build
DEPS    := jansson libpcre2-8 libutf8proc libcurl libmicrohttpd
# libcurl (the judge client) and libmicrohttpd (the reward server) are loaded on first use (src/base/dynlib.c):
# their headers are needed, not their link; tests with mock servers link them directly.
LINK_DEPS := jansson libpcre2-8 libutf8proc
DL_DEPS   := libcurl libmicrohttpd
CFLAGS  ?= -O2 -g
# Project flags live apart from CFLAGS so that `make CFLAGS=...` (e.g. make asan) keeps them.
FP_CFLAGS := -std=c11 -D_GNU_SOURCE -Wall -Wextra -fPIC -fopenmp -Iinclude -Isrc \
           $(shell pkg-config --cflags $(DEPS))
FP_LDLIBS := $(shell pkg-config --libs $(LINK_DEPS)) -ldl -lm -lpthread -fopenmp
TEST_LDLIBS := $(shell pkg-config --libs $(DL_DEPS))
# Optional MPI build (`make MPI=1`, needs `scripts/install-deps.sh --mpi`): mpicc compiles and links, and
# -DFP_WITH_MPI enables `mpirun -np P fluxprm select ...` (docs/apps.md).  Use its own BUILD dir.
ifeq ($(MPI),1)
CC := mpicc
FP_CFLAGS += -DFP_WITH_MPI
endif
# Optional OpenBLAS build (`make BLAS=1`, needs `scripts/install-deps.sh --blas`): -DFP_WITH_OPENBLAS routes
# F32-weight GEMMs where OpenBLAS wins through cblas_sgemm (docs/architecture.md).  Use its own BUILD dir.
ifeq ($(BLAS),1)
fp_empty :=
BLAS_CFLAGS := $(shell pkg-config --cflags openblas 2>/dev/null || echo -I/usr/include/x86_64-linux-gnu/openblas-pthread)
BLAS_LIBS   := $(shell pkg-config --libs openblas 2>/dev/null || echo -lopenblas)
FP_CFLAGS += -DFP_WITH_OPENBLAS $(BLAS_CFLAGS)
FP_LDLIBS += $(BLAS_LIBS)
PC_BLAS   := $(fp_empty) $(strip $(BLAS_LIBS))
endif
VERSION := 0.1.0

# Every .c under src/<subsystem>/ is library code, except the CLI (src/cli) and fuzz targets.
LIB_SRC := $(filter-out src/cli/%,$(wildcard src/*/*.c))
CLI_SRC := $(wildcard src/cli/*.c)
LIB_OBJ := $(LIB_SRC:%.c=$(BUILD)/%.o)
CLI_OBJ := $(CLI_SRC:%.c=$(BUILD)/%.o)
TEST_SRC := $(wildcard tests/*/test_*.c)
TEST_BIN := $(TEST_SRC:%.c=$(BUILD)/%)

# ISA-specific kernels: chosen at run time, so only these files get the extra -m flags.
$(BUILD)/%_avx2.o:   EXTRA_CFLAGS = -mavx2 -mfma -mf16c
$(BUILD)/%_avx512.o: EXTRA_CFLAGS = -mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx512bf16 -mavx512vnni -mfma -mf16c

all: $(BUILD)/libfluxprm.a $(BUILD)/libfluxprm.so $(BUILD)/fluxprm $(BUILD)/fluxprm.pc

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(FP_CFLAGS) $(EXTRA_CFLAGS) -MMD -MP -c $< -o $@

$(BUILD)/libfluxprm.a: $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/libfluxprm.so: $(LIB_OBJ)
	$(CC) -shared -o $@ $^ $(LDFLAGS) $(FP_LDLIBS)

$(BUILD)/fluxprm: $(CLI_OBJ) $(BUILD)/libfluxprm.a
	$(CC) $(CFLAGS) $(FP_CFLAGS) -o $@ $(CLI_OBJ) $(BUILD)/libfluxprm.a $(LDFLAGS) $(FP_LDLIBS)

$(BUILD)/tests/%: tests/%.c $(BUILD)/libfluxprm.a tests/harness.h
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(FP_CFLAGS) -Itests -MMD -MP -o $@ $< $(BUILD)/libfluxprm.a $(LDFLAGS) $(FP_LDLIBS) $(TEST_LDLIBS)

# Benchmark programs bench/<name>/bench_<name>.c -> $(BUILD)/bench/<name>/bench_<name> (the bench/*/run.sh
# scripts build them with `make $(BUILD)/bench/...`; not part of `all`).
$(BUILD)/bench/%: bench/%.c $(BUILD)/libfluxprm.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(FP_CFLAGS) -MMD -MP -o $@ $< $(BUILD)/libfluxprm.a $(LDFLAGS) $(FP_LDLIBS)

# pkg-config file for PREFIX (rewritten when PREFIX changes, so `make install PREFIX=...` is always right).
PC_TEXT = prefix=$(PREFIX)\nlibdir=$${prefix}/lib\nincludedir=$${prefix}/include\n\nName: fluxprm\nDescription: trajectory-aware process reward model engine\nVersion: $(VERSION)\nRequires.private: $(LINK_DEPS)\nCflags: -I$${includedir}\nLibs: -L$${libdir} -lfluxprm\nLibs.private: -ldl -lm -lpthread -fopenmp$(PC_BLAS)\n
$(BUILD)/fluxprm.pc: FORCE
	@mkdir -p $(BUILD)
	@printf '$(PC_TEXT)' > $@.tmp
	@if cmp -s $@.tmp $@; then rm -f $@.tmp; else mv $@.tmp $@; fi

tests: $(TEST_BIN) $(BUILD)/fluxprm

# The suite: every test binary, then one summary line "N passed, N failed, N skipped".
test: tests
	@FLUXPRM_BIN=$(abspath $(BUILD)/fluxprm) sh tests/run_tests.sh $(TEST_BIN)

asan:
	$(MAKE) BUILD=build-asan CFLAGS="-O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer" \
	  LDFLAGS="-fsanitize=address,undefined" test

check-long: tests
	@FLUXPRM_LONG=1 FLUXPRM_BIN=$(abspath $(BUILD)/fluxprm) sh tests/run_tests.sh $(TEST_BIN)
	sh fuzz/run.sh

# libFuzzer targets for the checkpoint readers (needs clang; FUZZ_SECONDS per target, default 60).
fuzz:
	sh fuzz/run.sh

bench: all
	@sh bench/run.sh

install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/lib $(DESTDIR)$(PREFIX)/include $(DESTDIR)$(PREFIX)/lib/pkgconfig
	install -m 755 $(BUILD)/fluxprm $(DESTDIR)$(PREFIX)/bin/
	install -m 644 $(BUILD)/libfluxprm.a $(DESTDIR)$(PREFIX)/lib/
	install -m 755 $(BUILD)/libfluxprm.so $(DESTDIR)$(PREFIX)/lib/
	install -m 644 include/fluxprm.h $(DESTDIR)$(PREFIX)/include/
	install -m 644 $(BUILD)/fluxprm.pc $(DESTDIR)$(PREFIX)/lib/pkgconfig/

clean:
	rm -rf build build-asan

.PHONY: all tests test asan check-long fuzz bench install clean FORCE
FORCE:
.SECONDARY:
-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
