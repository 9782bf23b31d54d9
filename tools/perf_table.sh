#!/usr/bin/env bash
# The same-run comparison of docs/performance.md (issue 16): ddpm_bench (exact and fast inference
# path) against diffusers' UNet2DModel in Python, as-is and with OMP_WAIT_POLICY=PASSIVE, on the
# ddpm_cifar10 config, 2 threads, in one sitting. The runs are interleaved: ROUNDS rounds, each
# running every configuration once, so that a noisy neighbour slows all of them alike; the summary
# pools every timed call of a configuration across rounds (median, images/s, ratio to diffusers).
# Appends one JSON line per run (tagged with "run" and "round") to OUT. Dev tooling, not part of
# CI; run it on an otherwise idle machine.
#
#   ROUNDS=3 B=build/tests/bench/ddpm_bench PY=python3 tools/perf_table.sh perf.jsonl
#   (PY must import diffusers==0.31.0; its torch is the "diffusers" column's PyTorch)
#   tools/perf_table.sh --summary perf.jsonl     # the table again, from a file
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
PY=${PY:-python3}
summary() {
  "$PY" - "$1" <<'P'
import json, statistics, sys
runs = {}
for l in open(sys.argv[1]):
    d = json.loads(l)
    if d.get("precision", "fp32") != "fp32":
        continue
    r = runs.setdefault(d["run"], {"t": [], "sg": [], "B": d["batch_size"], "share": []})
    r["t"] += d.get("times_s", [d["median_s"]])
    r["sg"].append(d["sgemm_gflops_per_s"])
    if "share_of_sgemm" in d:
        r["share"].append(d["share_of_sgemm"])
print("| run | calls | median s | images/s | vs diffusers PASSIVE | vs diffusers as-is | sgemm GFLOP/s | share |")
print("|---|---:|---:|---:|---:|---:|---:|---:|")
for name, r in runs.items():
    med = statistics.median(r["t"])
    work = " ".join(name.split()[-2:])
    ref = {}
    for env in ("PASSIVE", "as-is"):
        k = f"diffusers {env} {work}"
        ref[env] = f"{statistics.median(runs[k]['t']) / med:.2f}x" if k in runs and name.startswith("ours") else ""
    share = f"{statistics.median(r['share']):.2f}" if r["share"] else ""
    print(f"| {name} | {len(r['t'])} | {med:.4f} | {r['B'] / med:.2f} | {ref['PASSIVE']} | {ref['as-is']} "
          f"| {statistics.median(r['sg']):.0f} | {share} |")
P
}
if [ "${1:-}" = "--summary" ]; then summary "${2:?usage: perf_table.sh --summary OUT.jsonl}"; exit; fi
out=${1:?usage: perf_table.sh OUT.jsonl}
B=${B:-build/tests/bench/ddpm_bench}
ROUNDS=${ROUNDS:-1}
tag() { "$PY" -c 'import json,sys
for l in sys.stdin:
    l=l.strip()
    if l.startswith("{"):
        d=json.loads(l); d["run"]=sys.argv[1]; d["round"]=int(sys.argv[2]); print(json.dumps(d))' "$1" "$2" >> "$out"; }
for round in $(seq 1 "$ROUNDS"); do
  # mode batch iters warmup
  for spec in "forward 1 20 3" "forward 16 5 1" "train 32 3 1"; do
    set -- $spec
    "$B" --model ddpm-cifar10 --mode "$1" --batch-size "$2" --threads 2 --iters "$3" --warmup "$4" | tag "ours exact $1 B=$2" "$round"
    if [ "$1" = forward ]; then
      "$B" --model ddpm-cifar10 --mode "$1" --batch-size "$2" --threads 2 --iters "$3" --warmup "$4" --fast | tag "ours fast $1 B=$2" "$round"
    fi
    OMP_WAIT_POLICY=PASSIVE "$PY" "$here/gpu_ref_bench.py" --device cpu --threads 2 --runs "$1:$2" --iters "$3" --warmup "$4" | tag "diffusers PASSIVE $1 B=$2" "$round"
    env -u OMP_WAIT_POLICY "$PY" "$here/gpu_ref_bench.py" --device cpu --threads 2 --runs "$1:$2" --iters "$3" --warmup "$4" | tag "diffusers as-is $1 B=$2" "$round"
  done
done
summary "$out"
