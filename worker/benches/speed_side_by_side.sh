#!/usr/bin/env bash
# Training speed on the CPU, latentsweep (Burn Flex) and PyTorch back to back on the same
# machine: anchor samples/s per loss at batch 128, medians, and their ratio. Run it on a quiet
# machine; it prints the JSON lines of both sides, then a Markdown table for BENCHMARKS.md.
#
#   apt-get install -y python3-torch dataset-fashion-mnist   # PyTorch reference (Debian CPU build)
#   bash worker/benches/speed_side_by_side.sh [ROUNDS]        # default 1 round (ROUNDS > 1 alternates)
set -euo pipefail
cd "$(dirname "$0")/../.."
rounds="${1:-1}"
threads="$(nproc)"
out="$(mktemp)"
cargo bench -p latentsweep-worker --bench train_speed --no-run >/dev/null 2>&1 || \
    cargo bench -p latentsweep-worker --bench train_speed --no-run
for r in $(seq "$rounds"); do
    echo "# round $r: latentsweep" >&2
    cargo bench -q -p latentsweep-worker --bench train_speed -- --repeats 5 --batches 16 | tee -a "$out"
    echo "# round $r: pytorch, $threads threads" >&2
    /usr/bin/python3 worker/benches/pytorch_reference.py --threads "$threads" --steps 16 --repeats 5 | tee -a "$out"
    echo "# round $r: pytorch, 1 thread" >&2
    /usr/bin/python3 worker/benches/pytorch_reference.py --threads 1 --steps 16 --repeats 5 | tee -a "$out"
done
/usr/bin/python3 - "$out" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
def med(impl, loss, threads=None):
    v = [r["samples_per_sec"] for r in rows if r["impl"] == impl and r["loss"] == loss
         and (threads is None or r["threads"] == threads)]
    return statistics.median(v) if v else float("nan")
ours_t = max(r["threads"] for r in rows if r["impl"] == "latentsweep-flex")
print(f"\n| loss | latentsweep (Flex, {ours_t} threads) | PyTorch {ours_t} threads | PyTorch 1 thread | ratio vs PyTorch {ours_t} threads |")
print("| --- | ---: | ---: | ---: | ---: |")
for loss in ["ce", "bce", "contrastive", "triplet"]:
    o, p, p1 = med("latentsweep-flex", loss), med("pytorch", loss, ours_t), med("pytorch", loss, 1)
    print(f"| {loss} | {o:.0f} | {p:.0f} | {p1:.0f} | {o / p:.2f} |")
PY
rm -f "$out"
