#!/usr/bin/env bash
# The topology of deploy/compose.yaml as plain processes on this machine, against a PostgreSQL server that
# runs here: a Prefect server and an MLflow server (both on PostgreSQL), the ledger on PostgreSQL, N round
# services and M pool workers on one workspace folder. The tests and bench/scale_out.py start the same thing
# through dil.topology.
#
#   deploy/local.sh up DIR CAMPAIGN.yaml [SERVICES=2] [WORKERS=1]   # prints every address
#   deploy/local.sh down DIR [--drop]                                # --drop also drops the databases
#
# DIL_PG (default postgresql+psycopg://postgres@127.0.0.1:5432) names the server; its databases are
# <prefix>_ledger, <prefix>_prefect and <prefix>_mlflow (prefix dil_<campaign name>), created when missing.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${DIL_PYTHON:-$here/.venv/bin/python}"
export DO_NOT_TRACK=true PREFECT_SERVER_ANALYTICS_ENABLED=false MLFLOW_DISABLE_TELEMETRY=true

case "${1:-}" in
  up)
    [ $# -ge 3 ] || { echo "usage: $0 up DIR CAMPAIGN.yaml [SERVICES] [WORKERS]" >&2; exit 2; }
    exec "$python" -m dil.topology up "$2" --config "$3" --services "${4:-2}" --workers "${5:-1}" \
      --pg "${DIL_PG:-postgresql+psycopg://postgres@127.0.0.1:5432}"
    ;;
  down)
    [ $# -ge 2 ] || { echo "usage: $0 down DIR [--drop]" >&2; exit 2; }
    exec "$python" -m dil.topology down "$2" ${3:+"$3"}
    ;;
  *)
    echo "usage: $0 up DIR CAMPAIGN.yaml [SERVICES] [WORKERS] | $0 down DIR [--drop]" >&2
    exit 2
    ;;
esac
