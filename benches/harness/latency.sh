#!/usr/bin/env bash
# latency.sh — added latency of proxies over the direct path at fixed request rates.
#
# Runs `loadgen` (benches/loadgen, open loop, latency from intended send times) against a baseline target
# and one or more proxied targets at a few fixed rates, interleaved, and prints each target's p50 / p99 /
# p99.9 and what it adds over the baseline measured at the same rate in the same round.
#
#   benches/harness/latency.sh [options] NAME PREFIX URL [NAME PREFIX URL ...]
#
# The first triple is the baseline (the direct path). PREFIX is the command the load generator runs
# under, word-split, e.g. 'ip netns exec bench-cli taskset -c 0' (or '' for none). Example, with the
# bench harness's topology and Envoy on :15001 of the client namespace at 72k req/s:
#
#   benches/harness/latency.sh --throughput 72000 \
#     direct 'ip netns exec bench-cli taskset -c 0' http://10.244.0.6:5000/ \
#     envoy  'ip netns exec bench-cli-envoy taskset -c 0' http://10.244.0.6:5000/
#
# Options:
#   --throughput R    the slowest proxy's measured throughput (req/s); rates are fractions of it
#   --fractions "F…"  fractions of --throughput to run at (default "0.25 0.5 0.75")
#   --rates "R…"      explicit rates instead of --throughput/--fractions
#   --duration D      measured window per run (default 10s)
#   --warmup D        unrecorded lead-in per run (default 2s)
#   --connections N   keep-alive connections (default 32)
#   --timeout D       per-request timeout (default 5s)
#   --rounds N        repeat the whole sweep N times, rotating the target order (default 1)
#   --loadgen PATH    the loadgen binary (default $LOADGEN, else release/loadgen in $CARGO_TARGET_DIR or
#                     this repo's target/)
#   --outdir DIR      keep the raw JSON and the summary there (default: a new temporary directory)
#
# Output: a table on stdout; in OUTDIR one JSON file per run, runs.tsv (the index) and summary.tsv.
# Figures are medians over rounds; "added" is the median over rounds of (target − baseline) of the same
# round and rate. A row is flagged ERR when the run had errors and BEHIND when it achieved less than
# 95 % of the rate: its latency then says more about saturation than about the proxy.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
die() { echo "latency.sh: $*" >&2; exit 2; }

throughput='' fractions="0.25 0.5 0.75" rates='' duration=10s warmup=2s connections=32 timeout=5s rounds=1
loadgen=${LOADGEN:-${CARGO_TARGET_DIR:-$repo/target}/release/loadgen} outdir=
while [ $# -gt 0 ]; do
  case $1 in
    --throughput) throughput=${2:?}; shift 2 ;;
    --fractions) fractions=${2:?}; shift 2 ;;
    --rates) rates=${2:?}; shift 2 ;;
    --duration) duration=${2:?}; shift 2 ;;
    --warmup) warmup=${2:?}; shift 2 ;;
    --connections) connections=${2:?}; shift 2 ;;
    --timeout) timeout=${2:?}; shift 2 ;;
    --rounds) rounds=${2:?}; shift 2 ;;
    --loadgen) loadgen=${2:?}; shift 2 ;;
    --outdir) outdir=${2:?}; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    --) shift; break ;;
    -*) die "unknown option $1 (see --help)" ;;
    *) break ;;
  esac
done

if [ $(( $# % 3 )) -ne 0 ] || [ $# -lt 6 ]; then
  die "expected at least two NAME PREFIX URL triples, got $# arguments"
fi
names=() prefixes=() urls=()
while [ $# -gt 0 ]; do
  [[ $1 =~ ^[A-Za-z0-9_.-]+$ ]] || die "invalid target name '$1' (letters, digits, _ . -)"
  for n in "${names[@]}"; do [ "$n" != "$1" ] || die "target name '$1' given twice"; done
  names+=("$1") prefixes+=("$2") urls+=("$3")
  shift 3
done

if [ -z "$rates" ]; then
  [ -n "$throughput" ] || die "give --throughput (the slowest proxy's req/s) or --rates"
  read -r -a fraction_list <<< "$fractions"
  rates=$(python3 -c 'import sys; t=float(sys.argv[1]); print(" ".join(str(max(1, round(t*float(f)))) for f in sys.argv[2:]))' \
    "$throughput" "${fraction_list[@]}") || die "invalid --throughput '$throughput' or --fractions '$fractions'"
fi
for r in $rates; do [[ $r =~ ^[1-9][0-9]*$ ]] || die "invalid rate '$r' (a positive integer)"; done
[[ $rounds =~ ^[1-9][0-9]*$ ]] || die "invalid --rounds '$rounds'"
[ -x "$loadgen" ] || die "no loadgen binary at $loadgen (cargo build --release -p meshcap-loadgen, or --loadgen PATH)"
if [ -z "$outdir" ]; then outdir=$(mktemp -d "${TMPDIR:-/tmp}/latency.XXXXXX"); fi
mkdir -p "$outdir"

index=$outdir/runs.tsv
printf 'round\trate\ttarget\tbaseline\tfile\tstatus\n' > "$index"
failed=0
n=${#names[@]}
for round in $(seq 1 "$rounds"); do
  for rate in $rates; do
    # Rotate the order each round (the baseline included) so no target always runs first or last.
    for j in $(seq 0 $(( n - 1 ))); do
      i=$(( (j + round - 1) % n ))
      name=${names[$i]}
      file=$outdir/r$round-$rate-$name.json
      read -r -a prefix <<< "${prefixes[$i]}"
      echo "round $round rate $rate: $name ${urls[$i]}" >&2
      status=ok
      if ! "${prefix[@]}" "$loadgen" --json --url "${urls[$i]}" --rate "$rate" --connections "$connections" \
          --duration "$duration" --warmup "$warmup" --timeout "$timeout" > "$file" 2> "$file.err"; then
        status=failed failed=$(( failed + 1 ))
        echo "  loadgen failed: $(tail -1 "$file.err")" >&2
      fi
      printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$rate" "$name" "$([ "$i" -eq 0 ] && echo yes || echo no)" \
        "$file" "$status" >> "$index"
    done
  done
done

python3 - "$index" "$outdir/summary.tsv" "${names[@]}" <<'EOF'
import csv, json, statistics, sys

index, summary_path, names = sys.argv[1], sys.argv[2], sys.argv[3:]
baseline = names[0]
runs = {}  # (rate, target) -> list of (round, report or None)
for row in csv.DictReader(open(index), delimiter="\t"):
    report = None
    if row["status"] == "ok":
        try:
            report = json.load(open(row["file"]))
        except (OSError, ValueError):
            report = None
    runs.setdefault((int(row["rate"]), row["target"]), []).append((int(row["round"]), report))

KEYS = ["p50", "p99", "p99.9"]

def ms(report, key):
    lat = report.get("latency_us") if report else None
    return None if lat is None else lat[key] / 1000.0

def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None

def fmt(v, sign=False):
    return "-" if v is None else (f"{v:+.3f}" if sign else f"{v:.3f}")

header = ["rate", "target"] + [f"{k} ms" for k in KEYS] + [f"added {k} ms" for k in KEYS] + ["achieved", "errors", "flags"]
rows = []
for rate in sorted({rate for rate, _ in runs}):
    base = {rnd: rep for rnd, rep in runs.get((rate, baseline), [])}
    for name in names:
        reports = runs.get((rate, name), [])
        absolute = [median(ms(rep, k) for _, rep in reports) for k in KEYS]
        if name == baseline:
            added = [None] * len(KEYS)
        else:
            added = []
            for k in KEYS:
                diffs = []
                for rnd, rep in reports:
                    a, b = ms(rep, k), ms(base.get(rnd), k)
                    diffs.append(None if a is None or b is None else a - b)
                added.append(median(diffs))
        ok = [rep for _, rep in reports if rep]
        achieved = median(rep["achieved_rate"] for rep in ok)
        errors = sum(rep["errors"] for rep in ok)
        flags = []
        if len(ok) < len(reports):
            flags.append("FAILED")
        if errors:
            flags.append("ERR")
        if achieved is not None and achieved < 0.95 * rate:
            flags.append("BEHIND")
        rows.append([str(rate), name] + [fmt(v) for v in absolute] + [fmt(v, True) for v in added]
                    + ["-" if achieved is None else f"{achieved:.0f}", str(errors), ",".join(flags)])

with open(summary_path, "w") as out:
    out.write("\t".join(header) + "\n")
    for row in rows:
        out.write("\t".join(row) + "\n")
widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
for row in [header] + rows:
    print("  ".join(cell.rjust(w) if i not in (1, len(header) - 1) else cell.ljust(w)
                    for i, (cell, w) in enumerate(zip(row, widths))).rstrip())
EOF
echo "raw results: $outdir" >&2
[ "$failed" -eq 0 ] || { echo "latency.sh: $failed loadgen run(s) failed" >&2; exit 1; }
