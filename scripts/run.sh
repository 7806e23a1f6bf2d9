#!/usr/bin/env bash
# `make run`: the whole demo from a fresh clone.
#   setup -> Airflow metadata DB -> airflow_settings.yaml -> demo fleet ->
#   discovery printed -> Airflow on http://localhost:$PORT.
# Ctrl-C stops everything this script started.
#
# Profiles (SKEIN_PROFILE; plugins/skein_airflow/profiles.py holds their settings):
#   embedded (default)  SQLite, LocalExecutor: `airflow standalone`
#   distributed         PostgreSQL (metadata DB, campaign store, Celery results), Redis broker,
#                       CeleryExecutor: api-server, scheduler, dag-processor, triggerer and two
#                       Celery workers (queues default+skein-eu, default+skein-us). Starts the
#                       local PostgreSQL and Redis if they are down (scripts/services.sh).
#
# Knobs (environment):
#   SKEIN_PROFILE            embedded | distributed
#   SKEIN_POSTGRES, SKEIN_REDIS, SKEIN_DISTRIBUTED_NAME   distributed: servers, database names
#   SKEIN_RUN_NO_AIRFLOW=1   stop after printing discovery (quick check, tests)
#   SKEIN_DEMO_CONSUMERS, SKEIN_DEMO_SEED   demo fleet size and seed (regenerated when changed)
#   SKEIN_AIRFLOW_PORT       api-server port (default 8080)
#   SKEIN_AIRFLOW_HOME, SKEIN_DEMO_DIR      where run state goes (default .airflow, or
#                            .airflow-distributed; .skein/demo)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

PROFILE=${SKEIN_PROFILE:-embedded}
case $PROFILE in
embedded | distributed) ;;
*) echo "error: SKEIN_PROFILE=$PROFILE: choose embedded or distributed" >&2; exit 2 ;;
esac

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

make --no-print-directory setup
export PATH="$ROOT/.venv/bin:$PATH"  # `airflow standalone` spawns `airflow` subprocesses
# This checkout's engine and plugins, whatever the venv's editable install points at (a git
# worktree may share another checkout's venv).
export PYTHONPATH=$ROOT/include:$ROOT/plugins${PYTHONPATH:+:$PYTHONPATH}

PORT=${SKEIN_AIRFLOW_PORT:-8080}
DEMO_DIR=${SKEIN_DEMO_DIR:-$ROOT/.skein/demo}
CONSUMERS=${SKEIN_DEMO_CONSUMERS:-40}
SEED=${SKEIN_DEMO_SEED:-7}

# A project-local Airflow: our dags/ and plugins/; database and executor from the profile.
if [[ $PROFILE == distributed ]]; then
    export AIRFLOW_HOME=${SKEIN_AIRFLOW_HOME:-$ROOT/.airflow-distributed}
else
    export AIRFLOW_HOME=${SKEIN_AIRFLOW_HOME:-$ROOT/.airflow}
fi
export AIRFLOW__CORE__DAGS_FOLDER=$ROOT/dags
export AIRFLOW__CORE__PLUGINS_FOLDER=$ROOT/plugins
export AIRFLOW__CORE__LOAD_EXAMPLES=False
profile_env=$(python -m skein_airflow.profiles env "$PROFILE" --airflow-home "$AIRFLOW_HOME")
eval "$profile_env"
# The demo DAG starts unpaused, so triggering it is one click.
export AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION=False
export AIRFLOW__API__PORT=$PORT
# Only this machine reaches the demo (its admin password is a file here); set
# SKEIN_AIRFLOW_HOST=0.0.0.0 to open it to the network on purpose.
export AIRFLOW__API__HOST=${SKEIN_AIRFLOW_HOST:-127.0.0.1}
export AIRFLOW__API__BASE_URL=http://localhost:$PORT  # workers reach the execution API here
export SKEIN_CAMPAIGNS_DIR=$DEMO_DIR/campaigns
# Run directories of the DAG's tasks (and, embedded, the campaign store's SQLite file).
export SKEIN_HOME=$AIRFLOW_HOME/skein
mkdir -p "$AIRFLOW_HOME"

if [[ $PROFILE == distributed ]]; then
    say "PostgreSQL and Redis"
    # Only the local servers are ours to start; others are somebody else's to run.
    if [[ -z ${SKEIN_POSTGRES:-} ]]; then scripts/services.sh postgres; fi
    if [[ -z ${SKEIN_REDIS:-} ]]; then scripts/services.sh redis; fi
    python -m skein_airflow.profiles prepare distributed
    say "Airflow metadata DB (PostgreSQL)"
else
    say "Airflow metadata DB ($AIRFLOW_HOME/airflow.db)"
fi
airflow db migrate >"$AIRFLOW_HOME/db-migrate.log" 2>&1 \
    || { tail -n 30 "$AIRFLOW_HOME/db-migrate.log"; exit 1; }
echo "migrated (log: $AIRFLOW_HOME/db-migrate.log)"

say "Connections, pools and variables (airflow_settings.yaml)"
python -m skein_airflow.settings_loader airflow_settings.yaml

say "Demo fleet ($DEMO_DIR)"
params="consumers=$CONSUMERS seed=$SEED"
if [[ -f $DEMO_DIR/.skein-demo-params && $(<"$DEMO_DIR/.skein-demo-params") == "$params" ]]; then
    echo "up to date ($params); delete $DEMO_DIR to rebuild"
else
    rm -rf "$DEMO_DIR"
    skein demo-fleet --out "$DEMO_DIR" --consumers "$CONSUMERS" --seed "$SEED"
    echo "$params" >"$DEMO_DIR/.skein-demo-params"  # written last: a half-built fleet is rebuilt
fi

CAMPAIGN=$DEMO_DIR/campaigns/plays-v2.yaml
say "Discovery: skein discover ${CAMPAIGN#"$ROOT"/}"
skein discover "$CAMPAIGN"

# The plan as a dry run in the campaign store the portal reads ($SKEIN_HOME, or the distributed
# profile's SKEIN_STORE_URL): the portal shows these consumers before any Airflow run.
PLAN_RUN=make-run__$(date -u +%Y-%m-%dT%H-%M-%SZ)
PLAN_DIR=$SKEIN_HOME/runs/plays-v2/$PLAN_RUN
say "Plan: skein run ${CAMPAIGN#"$ROOT"/} --dry-run --run-id $PLAN_RUN"
# Exit 3 means "complete, but some consumers need a human": expected for the demo.
rc=0; skein run "$CAMPAIGN" --dry-run --run-id "$PLAN_RUN" || rc=$?
if (( rc != 0 && rc != 3 )); then exit "$rc"; fi
echo "Patches: ${PLAN_DIR#"$ROOT"/}/patches/*.diff (one per rewritten consumer), plan.json"

if [[ ${SKEIN_RUN_NO_AIRFLOW:-0} == 1 ]]; then
    echo
    echo "SKEIN_RUN_NO_AIRFLOW=1: not starting Airflow."
    exit 0
fi

CAMPAIGN_ID=$(python -c 'import sys; from skein.spec import load_campaign; print(load_campaign(sys.argv[1]).campaign)' "$CAMPAIGN")
DAG_ID=skein__$CAMPAIGN_ID
URL=http://localhost:$PORT

if curl -s -o /dev/null "$URL"; then
    echo "error: something already answers on $URL; stop it or set SKEIN_AIRFLOW_PORT." >&2
    exit 1
fi

LOG=$AIRFLOW_HOME/standalone.log
if [[ $PROFILE == distributed ]]; then
    say "Airflow (CeleryExecutor) on $URL"
    LOG=$AIRFLOW_HOME/distributed.log
    # Each component in its own log; the first one to exit ends them all (and this script).
    components='
        airflow api-server >"$AIRFLOW_HOME/api-server.log" 2>&1 &
        airflow scheduler >"$AIRFLOW_HOME/scheduler.log" 2>&1 &
        airflow dag-processor >"$AIRFLOW_HOME/dag-processor.log" 2>&1 &
        airflow triggerer >"$AIRFLOW_HOME/triggerer.log" 2>&1 &'
    while read -r name args; do
        components+="
        airflow $args >\"\$AIRFLOW_HOME/$name.log\" 2>&1 &"
    done < <(python -m skein_airflow.profiles workers)
    components+='
        wait -n; echo "an Airflow component exited; stopping the others"; kill -TERM 0'
    setsid bash -c "$components" >"$LOG" 2>&1 &
else
    say "Airflow standalone on $URL"
    setsid airflow standalone >"$LOG" 2>&1 &
fi
# setsid: Airflow and every process it spawns form one process group, which the
# trap below stops as a whole (Ctrl-C reaches only this script).
AIRFLOW_PID=$!
stop() {
    trap - INT TERM EXIT
    if kill -0 "$AIRFLOW_PID" 2>/dev/null; then
        echo
        echo "stopping Airflow (process group $AIRFLOW_PID)..."
        kill -TERM -- "-$AIRFLOW_PID" 2>/dev/null || true
        for _ in $(seq 20); do kill -0 "$AIRFLOW_PID" 2>/dev/null || break; sleep 0.5; done
        kill -KILL -- "-$AIRFLOW_PID" 2>/dev/null || true
    fi
}
trap 'stop; exit 130' INT TERM
trap stop EXIT
if [[ $PROFILE == distributed ]]; then
    echo "starting api-server, scheduler, dag-processor, triggerer and workers (logs: $AIRFLOW_HOME/*.log)"
else
    echo "starting scheduler, dag-processor, triggerer and api-server (log: $LOG)"
fi

PASSWORD_FILE=$AIRFLOW_HOME/simple_auth_manager_passwords.json.generated
healthy=0
for _ in $(seq 180); do
    if ! kill -0 "$AIRFLOW_PID" 2>/dev/null; then
        echo "error: Airflow exited; last lines of its logs:" >&2
        tail -n 40 "$LOG" "$AIRFLOW_HOME"/{api-server,scheduler}.log 2>/dev/null >&2
        exit 1
    fi
    # The admin password is written when the api-server starts.
    if curl -sf "$URL/api/v2/monitor/health" >/dev/null && [[ -f $PASSWORD_FILE ]]; then
        healthy=1; break
    fi
    sleep 1
done
((healthy)) || { echo "error: $URL not healthy after 180 s; see $LOG" >&2; exit 1; }

WORKERS_LINE=""
if [[ $PROFILE == distributed ]]; then
    # Each Celery worker logs "<name>@<host> ready." once it consumes its queues.
    while read -r name args; do
        queues=$(sed -E 's/.*--queues ([^ ]+).*/\1/' <<<"$args")
        for _ in $(seq 120); do
            grep -Eq "$name@[^ ]+ ready\." "$AIRFLOW_HOME/$name.log" 2>/dev/null && break
            kill -0 "$AIRFLOW_PID" 2>/dev/null || { tail -n 40 "$AIRFLOW_HOME/$name.log" >&2; exit 1; }
            sleep 1
        done
        grep -Eq "$name@[^ ]+ ready\." "$AIRFLOW_HOME/$name.log" \
            || { echo "error: $name not ready after 120 s; see $AIRFLOW_HOME/$name.log" >&2; exit 1; }
        WORKERS_LINE+="${WORKERS_LINE:+, }$name ($queues)"
    done < <(python -m skein_airflow.profiles workers)
fi

if [[ $PROFILE == distributed ]]; then
    AUDIT_ENV="SKEIN_STORE_URL=$SKEIN_STORE_URL"
else
    AUDIT_ENV="SKEIN_HOME=${SKEIN_HOME#"$ROOT"/}"
fi
PASSWORD=$(python -c 'import json, sys; print(json.load(open(sys.argv[1]))["admin"])' "$PASSWORD_FILE")

# Wait until the dag-processor has registered the demo DAG, via the REST API.
TOKEN=$(curl -sf -X POST "$URL/auth/token" -H 'Content-Type: application/json' \
    -d "{\"username\": \"admin\", \"password\": \"$PASSWORD\"}" \
    | python -c 'import json, sys; print(json.load(sys.stdin)["access_token"])')
dag_ready=0
for _ in $(seq 60); do
    if curl -sf -H "Authorization: Bearer $TOKEN" "$URL/api/v2/dags/$DAG_ID" >/dev/null; then
        dag_ready=1; break
    fi
    sleep 1
done

say "Skein is running"
cat <<EOF
Open      $URL
Log in    user admin, password $PASSWORD
          (from ${PASSWORD_FILE#"$ROOT"/})
Trigger   Dags -> $DAG_ID -> Trigger (params: dry_run, waves, error_threshold,
          consumers; the defaults run everything).
Approve   Browse -> Required Actions -> "$CAMPAIGN_ID: approve ..." (approver: admin).
          Choose Approve all, Approve canary only or Reject.
Portal    Skein in Airflow's navigation, or $URL/skein/ : progress, consumers, diffs,
          pause / skip / escalate / retry, and the approval too.
Results   evidence ${SKEIN_HOME#"$ROOT"/}/runs/$CAMPAIGN_ID/<run id>/summary.html
          audit    $AUDIT_ENV .venv/bin/skein audit $CAMPAIGN_ID
          git      git -C ${DEMO_DIR#"$ROOT"/}/repos/<repo> log --merges --first-parent
Logs      ${LOG#"$ROOT"/}${WORKERS_LINE:+ and ${AIRFLOW_HOME#"$ROOT"/}/<component>.log}
EOF
if [[ $PROFILE == distributed ]]; then
    echo "Profile   distributed: CeleryExecutor, workers $WORKERS_LINE"
    echo "          metadata DB and campaign store in PostgreSQL, broker Redis"
else
    echo "Profile   embedded: SQLite, LocalExecutor (SKEIN_PROFILE=distributed: Celery, PostgreSQL)"
fi
echo "Stop      Ctrl-C"
if ((!dag_ready)); then
    echo "warning: $DAG_ID is not registered yet; check Dag Import Errors in the UI and $LOG" >&2
fi
wait "$AIRFLOW_PID"
