#!/usr/bin/env bash
# Training speed and peak memory on the CPU, latentsweep (Burn Flex) and PyTorch side by side on
# the same machine: for every network x loss cell, anchor samples/s at batch 128 (medians), their
# ratio, and the peak RSS of each process (/usr/bin/time -v; one process per cell and side, so the
# RSS is the cell's). Prints the JSON lines of every run, then one JSON line per cell
# ({"network", "loss", "ours", "pytorch", "ratio", "rss_ours_mib", "rss_torch_mib", "load"}) and a
# Markdown table for BENCHMARKS.md.
#
#   bash worker/benches/speed_side_by_side.sh [ROUNDS]      # default 1 round; rounds alternate sides
#
# Cells: embedding-net and lenet-hadsell on Fashion-MNIST, koch-siamese on the AT&T faces (when
# ../shared/datasets/att_faces exists; the worker's folder loader brings them to 56x46 and the
# PyTorch side resizes them the same way) x ce, bce, contrastive, triplet (random), triplet with
# batch-hard and semi-hard mining. Both sides use THREADS threads (default 2).
#
# Environment:
#   PYTHON=PATH    interpreter with torch and numpy (default /var/tmp/torchvenv/bin/python; it is
#                  created with pip, CPU wheel index first, then plain PyPI, when missing);
#   THREADS=N      threads on both sides (default 2);
#   NETWORKS="A B" LOSSES="a,b"   a subset of the cells;
#   ATT=DIR        the AT&T faces (default ../shared/datasets/att_faces relative to the repo).
#   PROFILE=dev   build the bench with the dev profile (opt-level 3, reuses a dev build cache).
set -euo pipefail
cd "$(dirname "$0")/../.."
rounds="${1:-1}"
threads="${THREADS:-2}"
py="${PYTHON:-/var/tmp/torchvenv/bin/python}"
att="${ATT:-$(pwd)/../shared/datasets/att_faces}"
networks="${NETWORKS:-embedding-net lenet-hadsell koch-siamese}"
losses="${LOSSES:-ce,bce,contrastive,triplet,triplet-batch-hard,triplet-semi-hard}"
[ -x /usr/bin/time ] || apt-get install -y time
if ! "$py" -c 'import torch, numpy' 2>/dev/null; then
    python3 -m venv "$(dirname "$(dirname "$py")")"
    "$py" -m pip install -q numpy
    "$py" -m pip install -q torch --index-url https://download.pytorch.org/whl/cpu ||
        "$py" -m pip install -q torch
fi
bin="$(cargo bench -p latentsweep-worker --bench train_speed --profile "${PROFILE:-release}" --no-run --message-format=json 2>/dev/null |
    /usr/bin/python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "train_speed" and m.get("executable"):
        print(m["executable"])')"
[ -x "$bin" ] || { echo "train_speed bench binary not built" >&2; exit 1; }
out="$(mktemp)"
tv="$(mktemp)"
# Runs "$@" under /usr/bin/time -v and appends its JSON lines to $out with the process's peak RSS
# (MiB) and the 1-minute load average at its end.
measure() {
    local lines
    lines="$(/usr/bin/time -v -o "$tv" "$@")"
    local rss load
    rss="$(awk -F': ' '/Maximum resident set size/ {print $2}' "$tv")"
    load="$(cut -d' ' -f1 /proc/loadavg)"
    echo "$lines" | grep '^{' | /usr/bin/python3 -c 'import json,sys
for l in sys.stdin:
    r = json.loads(l); r["rss_mib"] = round(int(sys.argv[1]) / 1024, 1); r["load"] = float(sys.argv[2])
    print(json.dumps(r))' "$rss" "$load" | tee -a "$out"
}
for r in $(seq "$rounds"); do
    for net in $networks; do
        case "$net" in
            koch-siamese)
                [ -d "$att" ] || { echo "# no AT&T faces at $att: koch-siamese skipped" >&2; continue; }
                ours_data="folder:$att"; torch_data="$att"
                # ~40x the work per image of the others: fewer timed steps (each of 128 anchors).
                torch_steps=(--steps 4 --repeats 3 --warmup 2) ;;
            *) ours_data="fashion-mnist"; torch_data="/usr/share/datasets/fashion-mnist"
                # The same 16 x 128 training images as the worker's train_limit keeps.
                torch_steps=(--steps 16 --repeats 5 --limit 2048) ;;
        esac
        for loss in ${losses//,/ }; do
            echo "# round $r: $net $loss: latentsweep" >&2
            RAYON_NUM_THREADS="$threads" measure "$bin" --network "$net" --dataset "$ours_data" \
                --losses "$loss" --repeats 5 --batches 16
            echo "# round $r: $net $loss: pytorch" >&2
            measure "$py" worker/benches/pytorch_reference.py --network "$net" --data "$torch_data" \
                --losses "$loss" --threads "$threads" "${torch_steps[@]}"
        done
    done
done
/usr/bin/python3 - "$out" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
def med(impl, net, loss, key):
    v = [r[key] for r in rows if r["impl"] == impl and r["network"] == net and r["loss"] == loss]
    return statistics.median(v) if v else float("nan")
cells = []
for r in rows:
    if (r["network"], r["loss"]) not in cells:
        cells.append((r["network"], r["loss"]))
version = next((r["version"] for r in rows if r["impl"] == "pytorch"), "?")
table = []
for net, loss in cells:
    o, p = med("latentsweep-flex", net, loss, "samples_per_sec"), med("pytorch", net, loss, "samples_per_sec")
    ro, rp = med("latentsweep-flex", net, loss, "rss_mib"), med("pytorch", net, loss, "rss_mib")
    load = statistics.median(r["load"] for r in rows if r["network"] == net and r["loss"] == loss)
    cell = {"network": net, "loss": loss, "ours": o, "pytorch": p, "ratio": round(o / p, 2),
            "rss_ours_mib": ro, "rss_torch_mib": rp, "rss_ratio": round(ro / rp, 2), "load": load,
            "pytorch_version": version}
    print(json.dumps(cell))
    table.append(cell)
print(f"\n| network | loss | latentsweep | PyTorch {version} | ours / PyTorch | peak RSS ours (MiB) | peak RSS PyTorch (MiB) | RSS ours / PyTorch | load |")
print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
for c in table:
    print(f"| {c['network']} | {c['loss']} | {c['ours']:.0f} | {c['pytorch']:.0f} | {c['ratio']:.2f} | "
          f"{c['rss_ours_mib']:.0f} | {c['rss_torch_mib']:.0f} | {c['rss_ratio']:.2f} | {c['load']:.1f} |")
PY
rm -f "$out" "$tv"
