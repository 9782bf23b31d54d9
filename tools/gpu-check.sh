#!/usr/bin/env bash
# GPU check for a short loan of a GPU machine (CMake, compiler, nvcc and PyTorch there; no
# network, no packages). Within ~8 minutes of wall time:
#   1. finds the GPU and the local PyTorch (its libtorch: torch.utils.cmake_prefix_path);
#   2. configures against it, builds only ddpm_tests (test_gpu.cpp + test_device.cpp) and
#      ddpm_bench, with the header-only dependencies from .gpu-deps/ (tools/gpu-check-deps.sh);
#   3. runs the GPU-tagged tests: CPU vs GPU UNet / samplers / training step, bf16 autocast
#      loss vs float32, CUDA generators (tolerances in tests/unit/test_gpu.cpp);
#   4. runs ddpm_bench on the GPU: ddpm_cifar10 train B=128 and forward B=256, fp32 and bf16;
#   5. PyTorch eager diffusers UNet2DModel reference numbers when diffusers imports there;
#   6. writes one report: <out>/gpu-check.json and <out>/gpu-check.md.
#
#   tools/gpu-check.sh [--out DIR] [--no-gpu-ok]
#     --out DIR     report directory (default $OUT when set, else build-gpu/report)
#     --no-gpu-ok   dry run on a machine without a GPU: build and run everything on the CPU
#                   (GPU tests skip, bench runs small on the CPU) to test this script.
# Without a GPU (and without --no-gpu-ok) it stops at step 1, exit 3, saying so.
# Environment: PYTHON (default python3, must import torch), GPU_CHECK_BUILD (default build-gpu),
# GPU_CHECK_JOBS (default nproc).
set -uo pipefail
cd "$(dirname "$0")/.."
t_start=$(date +%s)
out="${OUT:-}"
no_gpu_ok=0
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out="$2"; shift 2 ;;
    --no-gpu-ok) no_gpu_ok=1; shift ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "gpu-check: unknown option $1" >&2; exit 2 ;;
  esac
done
build="${GPU_CHECK_BUILD:-build-gpu}"
[ -n "$out" ] || out="$build/report"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
jobs="${GPU_CHECK_JOBS:-$(nproc)}"
py="${PYTHON:-python3}"
log="$out/gpu-check.log"
: > "$log"
say() { echo "gpu-check: $*" | tee -a "$log" >&2; }
elapsed() { echo $(( $(date +%s) - t_start )); }
# Steps get what is left of an 8-minute budget (minus 20 s for the report).
left() { local l=$(( 460 - $(elapsed) )); [ "$l" -lt 10 ] && l=10; echo "$l"; }

status="ok"
notes=()
fail() { status="failed"; notes+=("$1"); say "FAILED: $1"; }

# ---------------------------------------------------------------- 1. GPU and PyTorch
info_json="$("$py" - <<'PY' 2>>"$log"
import json, os, torch, torch.utils
d = {"torch": torch.__version__, "torch_dir": os.path.dirname(torch.__file__),
     "cmake_prefix_path": torch.utils.cmake_prefix_path, "torch_cuda": torch.version.cuda,
     "cuda_available": torch.cuda.is_available(), "gpus": []}
if d["cuda_available"]:
    for i in range(torch.cuda.device_count()):
        p = torch.cuda.get_device_properties(i)
        d["gpus"].append({"name": p.name, "capability": f"{p.major}.{p.minor}",
                          "memory_gib": round(p.total_memory / 2**30, 1)})
print(json.dumps(d))
PY
)" || { say "STOP: '$py' cannot import torch (set PYTHON to a Python with PyTorch)"; exit 4; }
field() { echo "$info_json" | "$py" -c "import json,sys; v=json.load(sys.stdin)$1; print(v)"; }
torch_dir="$(field '["torch_dir"]')"
cuda_avail="$(field '["cuda_available"]')"
say "PyTorch $(field '["torch"]') (CUDA $(field '["torch_cuda"]')) at $torch_dir"
smi="$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || true)"
if [ "$cuda_avail" != "True" ]; then
  msg="NO GPU: torch.cuda.is_available() is False (nvidia-smi: ${smi:-not found or no device}); nothing to measure"
  if [ "$no_gpu_ok" = 1 ]; then
    say "$msg -- dry run on the CPU (--no-gpu-ok)"
    status="dry-run-no-gpu"
  else
    say "STOP: $msg"
    printf '{"status": "no-gpu", "message": %s, "python": %s}\n' \
      "$("$py" -c 'import json,sys; print(json.dumps(sys.argv[1]))' "$msg")" "$info_json" > "$out/gpu-check.json"
    printf '# GPU check\n\nStatus: **no GPU** -- %s\n' "$msg" > "$out/gpu-check.md"
    exit 3
  fi
else
  say "GPU: $(field '["gpus"]') ; nvidia-smi: $smi"
fi
dev=cuda
[ "$cuda_avail" = "True" ] || dev=cpu

# ---------------------------------------------------------------- 2. configure + build
nvcc="$(command -v nvcc || true)"
[ -z "$nvcc" ] && [ -x /usr/local/cuda/bin/nvcc ] && nvcc=/usr/local/cuda/bin/nvcc
deps="$PWD/.gpu-deps"
[ -d "$deps/include/catch2" ] || { say "STOP: $deps missing: run tools/gpu-check-deps.sh on a machine with the Debian packages and carry .gpu-deps"; exit 5; }
cmake_args=(-DCMAKE_BUILD_TYPE=Release -DDDPM_BUILD_EXAMPLES=OFF -DDDPM_BUILD_BENCH=ON -DDDPM_INSTALL=OFF
            "-DDDPM_TEST_GLOB=test_gpu.cpp;test_device.cpp")
[ -n "$nvcc" ] && cmake_args+=("-DCMAKE_CUDA_COMPILER=$nvcc")
if [ "$cuda_avail" = "True" ]; then
  cc="$(field '["gpus"][0]["capability"]')"
  cmake_args+=("-DTORCH_CUDA_ARCH_LIST=$cc")  # only this GPU: quicker, quieter configure
fi
# zlib: headers from .gpu-deps when the machine has none; the library from the system.
if [ ! -f /usr/include/zlib.h ]; then
  zlib_so="$(ls /usr/lib/x86_64-linux-gnu/libz.so /usr/lib64/libz.so /lib/x86_64-linux-gnu/libz.so.1 /usr/lib/x86_64-linux-gnu/libz.so.1 /usr/lib64/libz.so.1 2>/dev/null | head -n 1)"
  [ -n "$zlib_so" ] && cmake_args+=("-DZLIB_INCLUDE_DIR=$deps/include" "-DZLIB_LIBRARY=$zlib_so")
fi
t0=$(date +%s)
if CMAKE_PREFIX_PATH="$torch_dir:$deps" timeout "$(left)" cmake -S . -B "$build" "${cmake_args[@]}" >>"$log" 2>&1; then
  t1=$(date +%s)
  say "configured in $(( t1 - t0 )) s; building ddpm_tests + ddpm_bench with $jobs jobs"
  if timeout "$(left)" cmake --build "$build" -j"$jobs" --target ddpm_tests ddpm_bench >>"$log" 2>&1; then
    say "built in $(( $(date +%s) - t1 )) s"
  else
    fail "build (see gpu-check.log)"
  fi
else
  fail "configure (see gpu-check.log)"
fi
configure_build_s=$(( $(date +%s) - t0 ))

# ---------------------------------------------------------------- 3. GPU-tagged tests
tests_rc=-1
if [ "$status" != "failed" ]; then
  timeout "$(left)" "$build/tests/ddpm_tests" "[gpu],[device]" --use-colour no -r console \
    > "$out/tests.txt" 2>&1
  tests_rc=$?
  tail -n 3 "$out/tests.txt" | tee -a "$log" >&2
  [ "$tests_rc" -eq 0 ] || fail "GPU tests (exit $tests_rc, see tests.txt)"
  grep -c "ddpm-test-skipped" "$out/tests.txt" >/dev/null && say "note: some GPU tests skipped (no GPU)"
fi

# ---------------------------------------------------------------- 4. ddpm_bench
: > "$out/bench.jsonl"
if [ -x "$build/tests/bench/ddpm_bench" ]; then
  if [ "$dev" = cuda ]; then
    runs=("--mode train --batch-size 128" "--mode train --batch-size 128 --autocast-bf16"
          "--mode forward --batch-size 256" "--mode forward --batch-size 256 --autocast-bf16")
    common="--model ddpm-cifar10 --device cuda --iters 20 --warmup 5 --sgemm-size 8192 --sgemm-reps 10"
  else  # dry run: the same code path, tiny
    runs=("--mode train --batch-size 2" "--mode forward --batch-size 2")
    common="--model seed --device cpu --iters 1 --warmup 0 --sgemm-size 256 --sgemm-reps 1"
  fi
  for r in "${runs[@]}"; do
    # shellcheck disable=SC2086
    if ! timeout "$(left)" "$build/tests/bench/ddpm_bench" $common $r >> "$out/bench.jsonl" 2>>"$log"; then
      fail "ddpm_bench $r"
    fi
  done
  say "bench: $(wc -l < "$out/bench.jsonl") runs"
fi

# ---------------------------------------------------------------- 5. PyTorch eager reference
timeout "$(left)" "$py" tools/gpu_ref_bench.py --device "$dev" > "$out/reference.jsonl" 2>>"$log" ||
  notes+=("PyTorch reference bench failed (see gpu-check.log)")

# ---------------------------------------------------------------- 6. report
total=$(elapsed)
"$py" - "$out" "$status" "$total" "$configure_build_s" "$tests_rc" "$info_json" "$smi" "${notes[@]+"${notes[@]}"}" <<'PY'
import json, sys, os
out, status, total, cb, tests_rc, info, smi = sys.argv[1:8]
notes = sys.argv[8:]
def lines(name):
    p = os.path.join(out, name)
    return [json.loads(l) for l in open(p) if l.strip().startswith("{")] if os.path.exists(p) else []
bench, ref = lines("bench.jsonl"), lines("reference.jsonl")
tests = open(os.path.join(out, "tests.txt")).read().strip().splitlines()[-2:] if os.path.exists(os.path.join(out, "tests.txt")) else []
rep = {"status": status, "wall_s": int(total), "configure_build_s": int(cb), "tests_exit": int(tests_rc),
       "tests_summary": tests, "python": json.loads(info), "nvidia_smi": smi, "ddpm_bench": bench,
       "pytorch_reference": ref, "notes": notes}
json.dump(rep, open(os.path.join(out, "gpu-check.json"), "w"), indent=1)
md = [f"# GPU check: {status}", "", f"- PyTorch {rep['python']['torch']} (CUDA {rep['python']['torch_cuda']}); GPU: {smi or 'none'}",
      f"- wall {total} s (configure + build {cb} s); GPU tests exit {tests_rc}: {' / '.join(tests)}", ""]
md += ["| run | batch | precision | median s | images/s | GFLOP/s | sgemm GFLOP/s |", "|---|---|---|---|---|---|---|"]
for b in bench:
    md.append(f"| ddpm {b['model']} {b['mode']} ({b['device']}) | {b['batch_size']} | {'bf16' if b['autocast_bf16'] else 'fp32'} | "
              f"{b['median_s']:.4f} | {b['images_per_s']:.1f} | {b['gflops_per_s']:.0f} | {b['sgemm_gflops_per_s']:.0f} |")
for r in ref:
    if "median_s" in r:
        md.append(f"| PyTorch eager diffusers {r['mode']} ({r['device']}) | {r['batch_size']} | {r['precision']} | "
                  f"{r['median_s']:.4f} | {r['images_per_s']:.1f} | | |")
    else:
        md.append(f"| PyTorch eager reference | | | {r.get('skipped', r)} | | | |")
md += [""] + [f"- note: {n}" for n in notes]
open(os.path.join(out, "gpu-check.md"), "w").write("\n".join(md) + "\n")
print("\n".join(md))
PY
say "report: $out/gpu-check.json, $out/gpu-check.md ($(elapsed) s)"
[ "$status" = "failed" ] && exit 1
exit 0
