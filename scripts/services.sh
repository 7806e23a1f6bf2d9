#!/usr/bin/env bash
# Start the local PostgreSQL and Redis if they are down (the distributed profile and CI need
# them). The commands are this machine kind's own (see docs/deploy.md); elsewhere, point
# SKEIN_POSTGRES and SKEIN_REDIS at servers you run.
#   scripts/services.sh [postgres] [redis]     (default: both)
set -euo pipefail

want=("$@")
((${#want[@]})) || want=(postgres redis)

for service in "${want[@]}"; do
    case $service in
    postgres)
        if ! pg_isready -q -h 127.0.0.1 -p 5432; then
            echo "services: starting PostgreSQL"
            pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql)" main start
            for _ in $(seq 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
            pg_isready -h 127.0.0.1 -p 5432
        fi
        ;;
    redis)
        if [[ $(redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null) != PONG ]]; then
            echo "services: starting Redis"
            mkdir -p /var/lib/redis /var/log/redis
            redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
                --dir /var/lib/redis --logfile /var/log/redis/ci.log
            for _ in $(seq 30); do [[ $(redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null) == PONG ]] && break; sleep 1; done
            redis-cli -h 127.0.0.1 -p 6379 ping
        fi
        ;;
    *) echo "services: unknown service $service (postgres, redis)" >&2; exit 2 ;;
    esac
done
