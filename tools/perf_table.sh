#!/usr/bin/env bash
# The same-run comparison of docs/performance.md (issue 16): ddpm_bench (exact and fast inference
# path) against diffusers' UNet2DModel in Python, as-is and with OMP_WAIT_POLICY=PASSIVE, on the
# ddpm_cifar10 config, 2 threads, one after the other in one sitting. Appends one JSON line per run
# (tagged with "run") to OUT. Dev tooling, not part of CI; run it on an otherwise idle machine.
#
#   B=build/tests/bench/ddpm_bench PY=python3 tools/perf_table.sh perf.jsonl
#   (PY must import diffusers==0.31.0; its torch is the "diffusers" column's PyTorch)
set -euo pipefail
out=${1:?usage: perf_table.sh OUT.jsonl}
B=${B:-build/tests/bench/ddpm_bench}
PY=${PY:-python3}
here=$(cd "$(dirname "$0")" && pwd)
tag() { "$PY" -c 'import json,sys; t=sys.argv[1]
for l in sys.stdin:
    l=l.strip()
    if l.startswith("{"):
        d=json.loads(l); d["run"]=t; print(json.dumps(d))' "$1" >> "$out"; }
# mode batch iters warmup
for spec in "forward 1 20 3" "forward 16 5 1" "train 32 3 1"; do
  set -- $spec
  "$B" --model ddpm-cifar10 --mode "$1" --batch-size "$2" --threads 2 --iters "$3" --warmup "$4" | tag "ours exact $1 B=$2"
  if [ "$1" = forward ]; then
    "$B" --model ddpm-cifar10 --mode "$1" --batch-size "$2" --threads 2 --iters "$3" --warmup "$4" --fast | tag "ours fast $1 B=$2"
  fi
  OMP_WAIT_POLICY=PASSIVE "$PY" "$here/gpu_ref_bench.py" --device cpu --threads 2 --runs "$1:$2" --iters "$3" --warmup "$4" | tag "diffusers PASSIVE $1 B=$2"
  env -u OMP_WAIT_POLICY "$PY" "$here/gpu_ref_bench.py" --device cpu --threads 2 --runs "$1:$2" --iters "$3" --warmup "$4" | tag "diffusers as-is $1 B=$2"
done
