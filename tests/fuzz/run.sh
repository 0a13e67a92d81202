#!/bin/sh
# Build and run the fuzz targets (tests/fuzz/fuzz_*.c).
#
#   tests/fuzz/run.sh build              build every target into build/fuzz/
#   tests/fuzz/run.sh replay [TARGET...] run each committed corpus once (make check)
#   tests/fuzz/run.sh fuzz [TARGET...]   fuzz each target for FUZZ_SECONDS (default 30)
#
# With clang's libFuzzer the targets are real fuzzers under ASan and UBSan.
# Without it (or with FUZZ_ENGINE=replay) they are built with $CC and
# replay_main.c, which can replay a corpus but not fuzz, so `make check`
# still exercises every committed input on a machine with only gcc.
#
# Fuzz mode writes what it discovers to build/fuzz/corpus/TARGET and crash
# reproducers to build/fuzz/artifacts/TARGET/, never into the committed
# tests/fuzz/corpus/ (promote an input there by hand, with a reason).
set -eu

cd "$(dirname "$0")/../.."

MODE=${1:-replay}
[ $# -gt 0 ] && shift
TARGETS=${*:-"fuzz_wire_parse fuzz_framing fuzz_options fuzz_blocklist fuzz_localdata fuzz_doh fuzz_http1 fuzz_ctlproto fuzz_doh_server"}
FUZZ_SECONDS=${FUZZ_SECONDS:-30}
CC=${CC:-cc}
CLANG=${CLANG:-clang}
OUT=build/fuzz
LOGS=$OUT/logs

WARN="-Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wformat=2 \
-Wimplicit-fallthrough -Wvla"
# lib/ needs OpenSSL (lib/tls) and nghttp2 (the DoH modules) to link.
SSL_CFLAGS=$(pkg-config --cflags openssl libnghttp2 2>/dev/null || true)
SSL_LIBS=$(pkg-config --libs openssl libnghttp2 2>/dev/null || echo "-lssl -lcrypto -lnghttp2")
LIB_SRC=$(ls lib/*.c)

# Largest input each target is given while fuzzing: a DNS message big enough
# for truncation paths, streams of several frames, a long command line.
max_len() {
	case $1 in
	fuzz_wire_parse) echo 4096 ;;
	fuzz_framing) echo 8192 ;;
	fuzz_localdata) echo 4096 ;;
	fuzz_doh) echo 16384 ;;
	fuzz_http1) echo 9000 ;;
	fuzz_doh_server) echo 8192 ;;
	*) echo 2048 ;;
	esac
}

# Can $CLANG build and link a libFuzzer target with the sanitizers?
have_libfuzzer() {
	probe=$OUT/.probe
	mkdir -p "$OUT"
	printf '%s\n' '#include <stddef.h>' '#include <stdint.h>' \
		'int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n);' \
		'int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) { (void)d; (void)n; return 0; }' \
		>"$probe.c"
	"$CLANG" -fsanitize=fuzzer,address,undefined "$probe.c" -o "$probe" >/dev/null 2>&1
}

# Does $CC accept ASan+UBSan (gcc with libasan/libubsan)?
cc_has_sanitizers() {
	probe=$OUT/.probe_cc
	mkdir -p "$OUT"
	printf 'int main(void) { return 0; }\n' >"$probe.c"
	"$CC" -fsanitize=address,undefined "$probe.c" -o "$probe" >/dev/null 2>&1
}

case ${FUZZ_ENGINE:-auto} in
auto)
	if have_libfuzzer; then ENGINE=libfuzzer; else ENGINE=replay; fi ;;
libfuzzer | replay)
	ENGINE=$FUZZ_ENGINE ;;
*)
	echo "FUZZ_ENGINE must be auto, libfuzzer or replay" >&2
	exit 2 ;;
esac

if [ "$ENGINE" = libfuzzer ]; then
	BIN=$OUT
else
	BIN=$OUT/replay
fi

# Rebuild a target only when a source it is made of is newer than it.
stale() {
	[ ! -x "$1" ] && return 0
	[ -n "$(find lib tests/fuzz -newer "$1" \( -name '*.c' -o -name '*.h' \) 2>/dev/null)" ]
}

build_one() {
	t=$1
	bin=$BIN/$t
	stale "$bin" || return 0
	mkdir -p "$BIN"
	echo "building $bin ($ENGINE)"
	if [ "$ENGINE" = libfuzzer ]; then
		# clang (unlike gcc) flags log_msg()'s vsnprintf under -Wformat=2
		# although log.h gives log_msg a format attribute: not ours to fix here.
		# shellcheck disable=SC2086
		"$CLANG" -std=gnu11 -g -O1 -fno-omit-frame-pointer \
			-fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
			$WARN -Wno-format-nonliteral -I. $SSL_CFLAGS -o "$bin" "tests/fuzz/$t.c" \
			$LIB_SRC $SSL_LIBS
	else
		san=""
		cc_has_sanitizers && san="-fsanitize=address,undefined -fno-sanitize-recover=all"
		# shellcheck disable=SC2086
		"$CC" -std=gnu11 -g -O1 -fno-omit-frame-pointer $san $WARN -I. $SSL_CFLAGS \
			-o "$bin" "tests/fuzz/$t.c" tests/fuzz/replay_main.c $LIB_SRC $SSL_LIBS
	fi
}

build_all() {
	for t in $TARGETS; do
		[ -f "tests/fuzz/$t.c" ] || { echo "no such target: $t" >&2; exit 2; }
		build_one "$t"
	done
}

replay() {
	mkdir -p "$LOGS"
	failed=""
	for t in $TARGETS; do
		corpus=tests/fuzz/corpus/$t
		n=$(find "$corpus" -type f | wc -l)
		log=$LOGS/$t.replay.log
		if "$BIN/$t" "$corpus" -runs=0 </dev/null >"$log" 2>&1; then
			echo "fuzz replay $t: $n inputs ok"
		else
			echo "fuzz replay $t: FAILED (log: $log)"
			tail -n 30 "$log"
			failed="$failed $t"
		fi
	done
	[ -z "$failed" ] || { echo "fuzz replay failed:$failed" >&2; exit 1; }
}

# Total executions from a libFuzzer log: the final stats line if printed,
# else the highest "#N" progress line (fork mode).
executions() {
	n=$(sed -n 's/^stat::number_of_executed_units: *\([0-9]*\).*/\1/p' "$1" | tail -n 1)
	if [ -z "$n" ]; then
		n=$(sed -n 's/^#\([0-9][0-9]*\)[: \t].*/\1/p' "$1" | sort -n | tail -n 1)
	fi
	echo "${n:-0}"
}

fuzz() {
	if [ "$ENGINE" != libfuzzer ]; then
		echo "fuzz mode needs clang with libFuzzer (-fsanitize=fuzzer); only replay is possible" >&2
		exit 2
	fi
	mkdir -p "$LOGS"
	summary=""
	crashed=""
	for t in $TARGETS; do
		scratch=$OUT/corpus/$t
		artifacts=$OUT/artifacts/$t
		log=$LOGS/$t.fuzz.log
		mkdir -p "$scratch" "$artifacts"
		echo "fuzzing $t for ${FUZZ_SECONDS}s (new inputs: $scratch)"
		# Fork mode with -ignore_crashes keeps fuzzing past a crash (including
		# a committed reproducer of a bug not fixed yet) and saves each one.
		# The first corpus directory receives new inputs; the committed one
		# is only read.
		dict=""
		[ -f "tests/fuzz/$t.dict" ] && dict="-dict=tests/fuzz/$t.dict"
		set +e
		# shellcheck disable=SC2086
		"$BIN/$t" $dict -fork=1 -ignore_crashes=1 -ignore_timeouts=1 -ignore_ooms=1 \
			-max_total_time="$FUZZ_SECONDS" -max_len="$(max_len "$t")" \
			-artifact_prefix="$artifacts/" -print_final_stats=1 \
			"$scratch" "tests/fuzz/corpus/$t" </dev/null >"$log" 2>&1
		set -e
		execs=$(executions "$log")
		ncrash=$(find "$artifacts" -type f -name 'crash-*' | wc -l)
		summary="$summary$(printf '%-18s %12s executions, %s crash files in %s' "$t" "$execs" "$ncrash" "$artifacts")
"
		[ "$ncrash" -gt 0 ] && crashed="$crashed $t"
	done
	echo
	echo "fuzz summary (${FUZZ_SECONDS}s per target):"
	printf '%s' "$summary"
	if [ -n "$crashed" ]; then
		echo "crashes found in:$crashed -- reproduce with build/fuzz/TARGET FILE" >&2
		exit 1
	fi
}

case $MODE in
build) build_all ;;
replay) build_all; replay ;;
fuzz) build_all; fuzz ;;
*)
	echo "usage: $0 build|replay|fuzz [TARGET...]" >&2
	exit 2 ;;
esac
