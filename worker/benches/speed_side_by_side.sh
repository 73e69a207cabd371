#!/usr/bin/env bash
# Training speed on the CPU, latentsweep (Burn Flex) and PyTorch back to back on the same
# machine: anchor samples/s per loss at batch 128, medians, and their ratio. Run it on a quiet
# machine; it prints the JSON lines of every run, then a Markdown table for BENCHMARKS.md.
#
#   apt-get install -y python3-torch dataset-fashion-mnist   # PyTorch reference (Debian CPU build)
#   bash worker/benches/speed_side_by_side.sh [ROUNDS]        # default 1 round (ROUNDS > 1 alternates)
#
# Environment:
#   BASELINE=PATH   also run an older build of the `train_speed` bench binary (e.g. one built from
#                   an earlier commit in a `git worktree`), shown as the "before" column;
#   PYTHONS="A B"   Python interpreters to run the PyTorch reference with (default /usr/bin/python3,
#                   Debian's PyTorch); each one's PyTorch version is reported.
set -euo pipefail
cd "$(dirname "$0")/../.."
rounds="${1:-1}"
threads="$(nproc)"
pythons="${PYTHONS:-/usr/bin/python3}"
out="$(mktemp)"
cargo bench -p latentsweep-worker --bench train_speed --no-run >/dev/null 2>&1 || \
    cargo bench -p latentsweep-worker --bench train_speed --no-run
for r in $(seq "$rounds"); do
    if [ -n "${BASELINE:-}" ]; then
        echo "# round $r: before ($BASELINE)" >&2
        "$BASELINE" --repeats 5 --batches 16 | sed 's/"latentsweep-flex"/"before"/' | tee -a "$out"
    fi
    echo "# round $r: latentsweep" >&2
    cargo bench -q -p latentsweep-worker --bench train_speed -- --repeats 5 --batches 16 | tee -a "$out"
    for py in $pythons; do
        for t in "$threads" 1; do
            echo "# round $r: pytorch ($py), $t thread(s)" >&2
            "$py" worker/benches/pytorch_reference.py --threads "$t" --steps 16 --repeats 5 | tee -a "$out"
        done
    done
done
/usr/bin/python3 - "$out" "$threads" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
t = int(sys.argv[2])
def med(impl, loss, threads=None, version=None):
    v = [r["samples_per_sec"] for r in rows if r["impl"] == impl and r["loss"] == loss
         and (threads is None or r["threads"] == threads)
         and (version is None or r.get("version") == version)]
    return statistics.median(v) if v else float("nan")
versions = sorted({r["version"] for r in rows if r["impl"] == "pytorch"})
before = any(r["impl"] == "before" for r in rows)
head = ["loss"] + (["before (Flex)"] if before else []) + [f"latentsweep ({t} threads)"]
for v in versions:
    head += [f"PyTorch {v}, {t} threads", f"PyTorch {v}, 1 thread", f"ratio vs PyTorch {v} ({t} threads)"]
print("\n| " + " | ".join(head) + " |")
print("| --- |" + " ---: |" * (len(head) - 1))
for loss in ["ce", "bce", "contrastive", "triplet"]:
    o = med("latentsweep-flex", loss)
    cells = [loss] + ([f"{med('before', loss):.0f}"] if before else []) + [f"{o:.0f}"]
    for v in versions:
        p, p1 = med("pytorch", loss, t, v), med("pytorch", loss, 1, v)
        cells += [f"{p:.0f}", f"{p1:.0f}", f"{o / p:.2f}"]
    print("| " + " | ".join(cells) + " |")
PY
rm -f "$out"
