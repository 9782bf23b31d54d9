#!/usr/bin/env bash
# Builds the libFuzzer harnesses of tests/fuzz with Clang (ASan + UBSan) and runs them:
#   1. every file of tests/fuzz/regressions/<fuzzer>/ once (inputs that crashed or escaped the
#      ddpm::Error funnel before their fix): any failure fails the script;
#   2. each fuzzer for SECONDS (default 300) on a corpus seeded from tests/data, examples/configs
#      and tests/fuzz/seeds, with libFuzzer's -malloc_limit_mb=1024 (an input that makes ddpm
#      allocate more than 1 GiB at once is a finding) and -timeout=60 (a hang). libFuzzer also keeps
#      inputs slower than 10 s as slow-unit-* files: listed, not findings (under ASan a legitimate
#      image at the 8192 x 8192 pixel limit takes seconds on a loaded machine).
# Prints one line per fuzzer: executions, coverage (edges / features of the instrumented code:
# the ddpm headers and the harness; LibTorch is not instrumented) and corpus size; new findings
# go to build-fuzz/artifacts/<fuzzer>/ and fail the script.
#   tests/fuzz/run.sh [SECONDS] [FUZZER...]     (FUZZER: scheduler_config unet_config train_config
#                                                safetensors idx image checkpoint; default all)
# Env: CXX (default clang++-14, then clang++), JOBS (fuzzers run at once, default 1),
#      DDPM_FUZZ_BUILD (build folder, default build-fuzz).
# Debian 12: apt install clang-14 libclang-rt-14-dev (plus the packages of .ci/install-deps).
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds=${1:-300}
shift || true
all=(scheduler_config unet_config train_config safetensors idx image checkpoint)
fuzzers=("$@")
[ ${#fuzzers[@]} -gt 0 ] || fuzzers=("${all[@]}")
build=${DDPM_FUZZ_BUILD:-build-fuzz}
cxx=${CXX:-}
if [ -z "$cxx" ]; then
  for c in clang++-14 clang++; do command -v "$c" >/dev/null && { cxx=$c; break; }; done
fi
[ -n "$cxx" ] || { echo "fuzz: no clang++ (Debian: apt install clang-14 libclang-rt-14-dev)" >&2; exit 2; }

cmake -S . -B "$build" -DCMAKE_CXX_COMPILER="$cxx" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DDDPM_BUILD_FUZZERS=ON \
  -DDDPM_BUILD_TESTS=OFF -DDDPM_BUILD_EXAMPLES=OFF -DDDPM_BUILD_BENCH=OFF -DDDPM_INSTALL=OFF >/dev/null
# Every fuzzer: `all` of this configuration (fuzzers only), so -j2 builds two at once; CMake's
# Makefiles build the targets of one `--target a b ...` call one after another.
if [ ${#fuzzers[@]} -eq ${#all[@]} ]; then
  cmake --build "$build" -j2
else
  for t in make_checkpoint_seed "${fuzzers[@]/#/fuzz_}"; do cmake --build "$build" -j2 --target "$t"; done
fi

# Seed corpora (copied, so the fuzzers' additions stay in the build folder).
seed() {  # seed NAME FILE...
  mkdir -p "$build/corpus/$1"
  local n=$1
  shift
  for f in "$@"; do [ -f "$f" ] && cp "$f" "$build/corpus/$n/seed-$(echo "$f" | tr '/' '_')"; done
  return 0
}
seed scheduler_config $(find tests/data -name 'scheduler_config.json') tests/fuzz/seeds/scheduler_config/*
seed unet_config $(find tests/data -name 'config.json' -path '*unet*') tests/data/diffusers/ddpm_cifar10_config.json
seed train_config examples/configs/*.json
seed safetensors $(find tests/data -name '*.safetensors' -size -64k)
seed idx tests/fuzz/seeds/idx/*
seed image tests/fuzz/seeds/image/*
mkdir -p "$build/corpus/checkpoint"
"$build/tests/fuzz/make_checkpoint_seed" "$build/corpus/checkpoint/seed-tiny-archive"

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:allocator_may_return_null=0}
# .ci/ubsan.supp: two shift reports inside Debian's stb (why: there); any other report halts.
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1:suppressions=$PWD/.ci/ubsan.supp}
export TMPDIR=${TMPDIR:-/tmp}
status=0

# 1. Regression corpus.
for f in "${fuzzers[@]}"; do
  dir=tests/fuzz/regressions/$f
  if [ -d "$dir" ] && [ -n "$(ls -A "$dir")" ]; then
    if "$build/tests/fuzz/fuzz_$f" -runs=1 -malloc_limit_mb=1024 -rss_limit_mb=4096 "$dir"/* >"$build/regress-$f.log" 2>&1; then
      echo "fuzz: regressions $f: $(ls "$dir" | wc -l) inputs pass"
    else
      echo "fuzz: regressions $f: FAILED (log: $build/regress-$f.log)"; tail -20 "$build/regress-$f.log"; status=1
    fi
  fi
done

# 2. Bounded fuzzing.
run_one() {
  local f=$1
  mkdir -p "$build/artifacts/$f" "$build/work/$f"
  cp -n "$build/corpus/$f"/* "$build/work/$f/" 2>/dev/null || true
  local max_len=65536
  [ "$f" = checkpoint ] && max_len=1048576  # the seed checkpoint is ~170 KB; shorter would cut it
  "$build/tests/fuzz/fuzz_$f" "$build/work/$f" -max_total_time="$seconds" -timeout=60 -malloc_limit_mb=1024 \
    -rss_limit_mb=4096 -max_len=$max_len -print_final_stats=1 -artifact_prefix="$build/artifacts/$f/" >"$build/fuzz-$f.log" 2>&1
}
pids=()
for f in "${fuzzers[@]}"; do
  run_one "$f" &
  pids+=($!)
  if [ ${#pids[@]} -ge "${JOBS:-1}" ]; then wait "${pids[0]}" || true; pids=("${pids[@]:1}"); fi
done
for p in "${pids[@]}"; do wait "$p" || true; done
for f in "${fuzzers[@]}"; do
  log=$build/fuzz-$f.log
  execs=$(grep -o 'stat::number_of_executed_units: [0-9]*' "$log" | grep -o '[0-9]*$' || echo 0)
  cov=$(grep -o 'cov: [0-9]* ft: [0-9]* corp: [0-9]*' "$log" | tail -1)
  found=$(ls -A "$build/artifacts/$f" | grep -vc '^slow-unit-' || true)
  slow=$(ls -A "$build/artifacts/$f" | grep -c '^slow-unit-' || true)
  echo "fuzz: $f: ${seconds} s, ${execs:-0} executions, ${cov:-no coverage line}, findings: $found, slow units (>10 s, not findings): $slow"
  if [ "$found" -gt 0 ] || ! grep -q 'Done [0-9]* runs' "$log"; then
    echo "fuzz: $f FAILED (log: $log)"; grep -m1 -A12 'ERROR\|escaped\|runtime error' "$log" || tail -20 "$log"; status=1
  fi
done
exit $status
