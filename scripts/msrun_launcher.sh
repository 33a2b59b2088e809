#!/usr/bin/env bash
# Launch a MindFormers command on one or several machines through MindSpore's `msrun`.
#
#   bash scripts/msrun_launcher.sh "run_mindformer.py --config X.yaml --run_mode train" 8
#
# Environment:
#   MF_LOG_SUFFIX=<s>         write logs to <LOG_DIR>_<s> instead of <LOG_DIR>
#   MF_LAUNCHER_DRY_RUN=1     print the msrun command and exit 0 without running it
#
# About JOIN (measured with MindSpore 2.10): with --join=False msrun returns about 3 s after spawning
# the scheduler and workers, with exit code 0 whatever the workers later do; the workers keep running
# in their own sessions and write <LOG_DIR>/worker_<rank>.log. With --join=True msrun tails the worker
# logs to the console, waits for every process, kills the rest as soon as one fails, and exits non-zero
# if any worker or the scheduler failed. The default stays False for compatibility with upstream
# scripts; pass JOIN=True (6- or 9-argument form) when the exit code must mean "training succeeded".
#
# Two "nodes" on one host (9-argument form twice, same MASTER_ADDR/PORT) half work: msrun starts a
# scheduler on every node whose MASTER_ADDR is a local address, the one that loses the race for the
# port fails, and its msrun exits 1 although every rank joined the one cluster and finished.
# Real multi-node runs are unaffected; to rehearse one on a single machine give each "node" its own
# network namespace and address (tests/scripts/test_msrun_multinode.py does this with `ip netns`).
set -euo pipefail

REPO_ROOT="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)"
PROG="msrun_launcher.sh"

usage() {
    cat <<EOF
Usage:
  bash $PROG [EXECUTE_ORDER]
      8 workers on this machine.
  bash $PROG [EXECUTE_ORDER] [WORKER_NUM]
      WORKER_NUM workers on this machine.
  bash $PROG [EXECUTE_ORDER] [WORKER_NUM] [MASTER_PORT] [LOG_DIR] [JOIN] [CLUSTER_TIME_OUT]
      WORKER_NUM workers on this machine, all settings given.
  bash $PROG [EXECUTE_ORDER] [WORKER_NUM] [LOCAL_WORKER] [MASTER_ADDR] [MASTER_PORT] [NODE_RANK] \\
      [LOG_DIR] [JOIN] [CLUSTER_TIME_OUT]
      LOCAL_WORKER of WORKER_NUM workers on this machine, which is node NODE_RANK of several.

EXECUTE_ORDER is one quoted string, e.g. "run_mindformer.py --config configs/x.yaml --run_mode train";
a script path in it is looked up in the current directory, then in the repository root.
Defaults: MASTER_ADDR 127.0.0.1, MASTER_PORT 8118, NODE_RANK 0, LOG_DIR output/msrun_log, JOIN False,
CLUSTER_TIME_OUT 7200 (seconds; negative waits forever).
Environment: MF_LOG_SUFFIX appends _<suffix> to LOG_DIR; MF_LAUNCHER_DRY_RUN=1 only prints the command.
EOF
}

die() {
    echo "$PROG: $*" >&2
    exit 1
}

# require_int NAME MIN [MAX]: fail with one line naming the argument unless variable NAME holds an
# integer in [MIN, MAX]; rewrite it in base 10 (bash arithmetic would read "08" as a bad octal number)
require_int() {
    local name="$1" min="$2" max="${3:-}" value="${!1}"
    if ! [[ "$value" =~ ^-?[0-9]+$ ]]; then
        die "$name must be an integer, got '$value'"
    fi
    local n=$(( 10#${value#-} ))
    [[ "$value" == -* ]] && n=$(( -n ))
    if (( n < min )) || { [[ -n "$max" ]] && (( n > max )); }; then
        die "$name must be an integer in [$min, ${max:-inf}], got '$value'"
    fi
    printf -v "$name" '%d' "$n"
}

if [[ $# -eq 1 && ( "$1" == "-h" || "$1" == "--help" ) ]]; then
    usage
    exit 0
fi

EXECUTE_ORDER="${1:-}"
WORKER_NUM=8
LOCAL_WORKER=""
MASTER_ADDR="127.0.0.1"
MASTER_PORT=8118
NODE_RANK=0
LOG_DIR="output/msrun_log"
JOIN="False"
CLUSTER_TIME_OUT=7200

case $# in
    1) ;;
    2) WORKER_NUM="$2" ;;
    6) WORKER_NUM="$2"; MASTER_PORT="$3"; LOG_DIR="$4"; JOIN="$5"; CLUSTER_TIME_OUT="$6" ;;
    9) WORKER_NUM="$2"; LOCAL_WORKER="$3"; MASTER_ADDR="$4"; MASTER_PORT="$5"; NODE_RANK="$6"
       LOG_DIR="$7"; JOIN="$8"; CLUSTER_TIME_OUT="$9" ;;
    *) echo "$PROG: expected 1, 2, 6 or 9 arguments, got $#" >&2; usage >&2; exit 1 ;;
esac
# the single-machine forms run all workers here
(( $# == 9 )) || LOCAL_WORKER="$WORKER_NUM"

require_int WORKER_NUM 1
require_int LOCAL_WORKER 1
require_int MASTER_PORT 1024 65535
require_int NODE_RANK 0
require_int CLUSTER_TIME_OUT -2147483648
if (( LOCAL_WORKER > WORKER_NUM )); then
    die "LOCAL_WORKER ($LOCAL_WORKER) must not exceed WORKER_NUM ($WORKER_NUM)"
fi
case "${JOIN,,}" in
    true) JOIN="True" ;;
    false) JOIN="False" ;;
    *) die "JOIN must be True or False, got '$JOIN'" ;;
esac
[[ -n "$MASTER_ADDR" ]] || die "MASTER_ADDR must not be empty"
[[ -n "$LOG_DIR" ]] || die "LOG_DIR must not be empty"
if [[ -n "${MF_LOG_SUFFIX:-}" ]]; then
    LOG_DIR="${LOG_DIR}_${MF_LOG_SUFFIX}"
fi

# Split EXECUTE_ORDER with shell quoting rules (so `--options "a.b=c d"` stays one word) without
# eval-ing the user's string, which would also run any $(...) inside it; shlex.quote output is safe.
quoted="$(python3 -c '
import shlex, sys
try:
    print(" ".join(shlex.quote(w) for w in shlex.split(sys.argv[1])))
except ValueError as e:
    sys.exit(f"{sys.argv[2]}: cannot parse EXECUTE_ORDER ({e}): {sys.argv[1]}")
' "$EXECUTE_ORDER" "$PROG")" || exit 1
eval "TASK=($quoted)"
(( ${#TASK[@]} > 0 )) || die "EXECUTE_ORDER must name a script to run, got '$EXECUTE_ORDER'"

# msrun runs python/python3/pytest as given and puts `python` in front of anything else
SCRIPT_IDX=0
if [[ "${TASK[0]}" == "python" || "${TASK[0]}" == "python3" || "${TASK[0]}" == "pytest" ]]; then
    SCRIPT_IDX=1
fi
if (( SCRIPT_IDX < ${#TASK[@]} )) && [[ "${TASK[SCRIPT_IDX]}" == *.py ]]; then
    script="${TASK[SCRIPT_IDX]}"
    if [[ -f "$script" ]]; then
        resolved="$(cd -- "$(dirname -- "$script")" && pwd -P)/$(basename -- "$script")"
    elif [[ "$script" != /* && -f "$REPO_ROOT/$script" ]]; then
        resolved="$REPO_ROOT/$script"
    else
        die "script '$script' not found in $(pwd) or $REPO_ROOT"
    fi
    TASK[SCRIPT_IDX]="$resolved"
fi

export PYTHONPATH="$REPO_ROOT${PYTHONPATH:+:$PYTHONPATH}"
# MindSpore C++ logs: warnings and errors only, unless GLOG_v is set
export GLOG_v="${GLOG_v:-2}"

CMD=(msrun
     "--worker_num=$WORKER_NUM"
     "--local_worker_num=$LOCAL_WORKER"
     "--master_addr=$MASTER_ADDR"
     "--master_port=$MASTER_PORT"
     "--node_rank=$NODE_RANK"
     "--log_dir=$LOG_DIR"
     "--join=$JOIN"
     "--cluster_time_out=$CLUSTER_TIME_OUT"
     "${TASK[@]}")

echo "$PROG: PYTHONPATH=$PYTHONPATH"
# shell-quoted so the line can be pasted back into a terminal
printf '%s:' "$PROG"
printf ' %q' "${CMD[@]}"
printf '\n'
if [[ "${MF_LAUNCHER_DRY_RUN:-0}" == "1" ]]; then
    exit 0
fi
if [[ "$JOIN" == "False" ]]; then
    echo "$PROG: JOIN=False: msrun returns once workers start; follow $LOG_DIR/worker_*.log"
fi
command -v msrun >/dev/null || die "msrun not found on PATH; it is installed with mindspore (pip install mindspore)"
exec "${CMD[@]}"
