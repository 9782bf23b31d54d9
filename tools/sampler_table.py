#!/usr/bin/env python3
"""The sampler table of docs/math.md: FD-fmnist at n samples and wall time for every sampler at
about 10, 20 and 50 model calls, from one trained model, with the `evaluate` CLI.

  python3 tools/sampler_table.py --evaluate build/examples/evaluate --model runs/fashion \
      [--n 1000] [--calls 10,20,50] [--samplers ddim,euler,...] [--threads 2] [--jsonl out.jsonl]

Standard library only. Every run draws the same seed (0), so rows differ only by the sampler.
Heun calls the model twice per step except at the last (2 * steps - 1 calls), so it gets
steps = (calls + 1) // 2; every other sampler here calls it once per step. The "calls" column is
the number of UNet evaluations actually made; "s" is the evaluate command's wall_seconds
(generation + features + FD/KID; the feature part is ~1 s of it at n = 1000).
Prints a Markdown table on stdout; each run's JSON goes to --jsonl as it finishes.
"""
import argparse
import json
import subprocess
import sys

SAMPLERS = ["ddpm", "ddim", "dpmpp_2m", "dpmpp_2m_karras", "dpmpp_2m_sde", "dpmpp_3m", "unipc",
            "euler", "euler_karras", "euler_a", "heun"]


def steps_for(sampler, calls):
    if sampler.startswith("heun"):
        steps = (calls + 1) // 2
        return steps, 2 * steps - 1
    return calls, calls


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--evaluate", default="build/examples/evaluate")
    ap.add_argument("--model", required=True)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--calls", default="10,20,50")
    ap.add_argument("--samplers", default=",".join(SAMPLERS))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--gen-batch", type=int, default=50)
    ap.add_argument("--jsonl", default=None)
    ap.add_argument("--table-only", action="store_true",
                    help="run nothing: print the table of the runs already in --jsonl")
    args = ap.parse_args()
    calls_list = [int(c) for c in args.calls.split(",")]
    rows = {}
    if args.table_only:
        with open(args.jsonl) as f:
            for line in f:
                j = json.loads(line)
                nominal = min(calls_list, key=lambda c: abs(c - j["calls"]))
                rows[(j["sampler"], nominal)] = j
    out = open(args.jsonl, "a") if args.jsonl and not args.table_only else None
    for sampler in args.samplers.split(","):
        for calls in calls_list:
            if args.table_only:
                continue
            steps, actual = steps_for(sampler, calls)
            cmd = [args.evaluate, "--model", args.model, "--num-samples", str(args.n), "--sampler", sampler,
                   "--steps", str(steps), "--seed", "0", "--threads", str(args.threads),
                   "--gen-batch", str(args.gen_batch)]
            res = subprocess.run(cmd, capture_output=True, text=True)
            if res.returncode != 0:
                sys.exit(f"{' '.join(cmd)} failed ({res.returncode}):\n{res.stderr}")
            j = json.loads(res.stdout)
            j.update({"sampler": sampler, "steps": steps, "calls": actual})
            rows[(sampler, calls)] = j
            if out:
                out.write(json.dumps(j) + "\n")
                out.flush()
            print(f"{sampler} steps={steps} calls={actual}: FD {j['fd']:.1f} KID {j['kid']:.3f} "
                  f"{j['wall_seconds']:.0f} s", file=sys.stderr, flush=True)
    head = "| sampler | " + " | ".join(f"~{c} calls: FD-fmnist | s" for c in calls_list) + " |"
    print(head)
    print("|---|" + "---:|---:|" * len(calls_list))
    for sampler in args.samplers.split(","):
        cells = []
        for calls in calls_list:
            j = rows.get((sampler, calls))
            if j is None:
                cells += ["—", "—"]
                continue
            tag = "" if j["calls"] == calls else f" ({j['calls']} calls)"
            cells += [f"{j['fd']:.1f}{tag}", f"{j['wall_seconds']:.0f}"]
        print(f"| {sampler} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
