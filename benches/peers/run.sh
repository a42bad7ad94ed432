#!/usr/bin/env bash
# Dask and Ray beside `shoal bench`, on the same work, in the same run.
#
#   benches/peers/run.sh [SHOAL] [--quick] [--runs R] [--peer-runs R] [NAME...]
#
# SHOAL is the shoal binary (default: target/release/shoal of this
# repository; the suite's own shoal-bench binary works too); NAMEs are benchmarks (default: all that have peer versions:
# see `peers.py list`). For each benchmark it runs `SHOAL bench NAME --runs R`
# (R = 3 unless --runs), then the Dask versions, then the Ray versions, each
# measurement of a peer in a fresh process (--peer-runs of them, default R).
# The JSON lines go to target/peers-results.jsonl, the Markdown table to
# stdout and to target/peers-results.md; progress goes to stderr.
#
# Needs only python3 (3.11) with pip and PyPI: the peers are installed,
# once, into target/peers-venv from benches/peers/requirements.txt.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
venv="$repo/target/peers-venv"
results="$repo/target/peers-results.jsonl"
table="$repo/target/peers-results.md"
python=${PYTHON:-python3}

all_names=(array-seed array-chunks threads-noop cluster-noop cluster-chain net-rtt cluster-transfer cluster-startup actor-roundtrip actor-throughput ray-tasks bag-foldby bag-wordcount bag-groupby)
is_bench() {
    local n
    for n in "${all_names[@]}"; do [[ $n == "$1" ]] && return 0; done
    return 1
}
usage() {
    sed -n '2,15p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
    exit "${1:-2}"
}

shoal=""
quick=""
runs=3
peer_runs=""
names=()
while (($#)); do
    case $1 in
        --quick) quick=--quick ;;
        --runs) runs=${2:?--runs takes a number}; shift ;;
        --runs=*) runs=${1#--runs=} ;;
        --peer-runs) peer_runs=${2:?--peer-runs takes a number}; shift ;;
        --peer-runs=*) peer_runs=${1#--peer-runs=} ;;
        -h | --help) usage 0 ;;
        -*) echo "run.sh: unknown option $1" >&2; usage ;;
        *)
            if [[ -z $shoal && ${#names[@]} -eq 0 ]] && ! { is_bench "$1" && [[ ! -e $1 ]]; }; then
                shoal=$1
            elif is_bench "$1"; then
                names+=("$1")
            else
                echo "run.sh: no peer version of benchmark \"$1\"; known: ${all_names[*]}" >&2
                exit 2
            fi
            ;;
    esac
    shift
done
peer_runs=${peer_runs:-$runs}
((${#names[@]})) || names=("${all_names[@]}")
shoal=${shoal:-$repo/target/release/shoal}
if [[ ! -x $shoal ]]; then
    echo "run.sh: no shoal binary at $shoal (build it with: cargo build --release -p shoal-cli -p shoal-bench)" >&2
    exit 2
fi
shoal=$(cd "$(dirname "$shoal")" && pwd)/$(basename "$shoal")
# `shoal bench ARGS` runs the suite's binary, shoal-bench, with ARGS; that
# binary can be given directly too.
shoal_bench() {
    case $(basename "$shoal") in
        shoal-bench*) "$shoal" "$@" ;;
        *) "$shoal" bench "$@" ;;
    esac
}
if ! shoal_bench --list >/dev/null; then
    echo "run.sh: $shoal cannot run the benchmarks (see above)" >&2
    exit 2
fi

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# Whatever happens, leave no Ray processes behind (Dask's die with the
# process group of each measurement, which peers.py kills).
tmp=$(mktemp -d)
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [[ -x $venv/bin/ray ]]; then
        log "stopping any Ray processes (ray stop --force)"
        "$venv/bin/ray" stop --force >/dev/null 2>&1 || true
    fi
    rm -rf "$tmp"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---- the virtual environment (made once; reinstalled when requirements change)
mkdir -p "$repo/target"
if [[ ! -x $venv/bin/python ]]; then
    log "creating $venv with $("$python" --version 2>&1)"
    rm -rf "$venv"
    if ! "$python" -m venv "$venv" >&2; then
        # Debian's python3 without python3-venv: virtualenv from PyPI instead.
        log "python3 -m venv failed; using virtualenv from PyPI"
        rm -rf "$venv" "$repo/target/peers-virtualenv"
        "$python" -m pip install --quiet --disable-pip-version-check --target "$repo/target/peers-virtualenv" virtualenv >&2
        PYTHONPATH="$repo/target/peers-virtualenv" "$python" -m virtualenv --quiet "$venv" >&2
    fi
fi
py="$venv/bin/python"
case $("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])') in
    3.11) ;;
    *) log "warning: $py is not CPython 3.11; requirements.txt is pinned for 3.11" ;;
esac
want=$(sha256sum "$here/requirements.txt" | cut -d' ' -f1)
stamp="$venv/.peers-requirements.sha256"
if [[ ! -f $stamp || $(cat "$stamp") != "$want" ]]; then
    log "installing the peers into $venv (Ray is large: this takes a while)"
    "$py" -m pip install --disable-pip-version-check --quiet --upgrade pip >&2
    "$py" -m pip install --disable-pip-version-check --quiet -r "$here/requirements.txt" >&2
    echo "$want" >"$stamp"
fi

# ---- the peers' environment: no telemetry (nothing but PyPI is reachable),
# quiet logs; OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE (set on some hosts for old
# OpenBLAS builds) would slow a current NumPy, so the peers run without them.
export RAY_USAGE_STATS_ENABLED=0
export RAY_DEDUP_LOGS=0
export DASK_DISTRIBUTED__LOGGING__DISTRIBUTED=error
export PYTHONDONTWRITEBYTECODE=1 # no __pycache__ in benches/peers (Dask's workers import peers.py)
peers() { env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE "$py" "$here/peers.py" "$@"; }

# net-rtt's peer figure stands beside shoal's cluster-chain per link.
need_chain=""
if [[ " ${names[*]} " == *" net-rtt "* && " ${names[*]} " != *" cluster-chain "* ]]; then
    need_chain=1
fi

status=0
start=$(date +%s)
versions=$("$py" -c 'from importlib.metadata import version as v; print(", ".join(f"{n} {v(n)}" for n in ("dask", "distributed", "numpy", "ray")))')
peers_meta=$(
    "$py" - "$shoal" "$runs" "$peer_runs" "${quick:-}" "$versions" "$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo '?')" <<'EOF'
import json, os, platform, sys, time
shoal, runs, peer_runs, quick, versions, commit = sys.argv[1:]
print(json.dumps({"meta": {
    "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    "host": platform.node(), "cpus": os.cpu_count(), "shoal": shoal, "commit": commit,
    "runs": int(runs), "peer_runs": int(peer_runs), "quick": bool(quick),
    "versions": versions, "python": platform.python_version(),
    "loadavg_1m_at_start": os.getloadavg()[0]}}))
EOF
)
[[ -f $results ]] && mv -f "$results" "${results%.jsonl}.prev.jsonl"
echo "$peers_meta" >"$results"
log "results: $results; shoal: $shoal; $versions; benchmarks: ${names[*]}"

for name in "${names[@]}"; do
    log "$name: shoal bench $name --runs $runs${quick:+ $quick}"
    if shoal_bench "$name" --runs "$runs" ${quick:+"$quick"} >"$tmp/shoal.jsonl"; then :; else
        log "$name: shoal failed"
        status=1
    fi
    cat "$tmp/shoal.jsonl" >>"$results"
    for peer in dask ray; do
        log "$name: $peer (x$peer_runs)"
        if peers bench "$name" --peer "$peer" --runs "$peer_runs" ${quick:+"$quick"} \
            --shoal-lines "$tmp/shoal.jsonl" >>"$results"; then :; else
            log "$name: $peer failed (see above)"
            status=1
        fi
    done
done
if [[ -n $need_chain ]]; then
    log "cluster-chain: shoal only (the figure beside net-rtt's peers)"
    shoal_bench cluster-chain --runs "$runs" ${quick:+"$quick"} >>"$results" || status=1
fi

log "done in $(($(date +%s) - start)) s (load average now: $(cut -d' ' -f1-3 /proc/loadavg))"
peers table "$results" | tee "$table"
exit "$status"
