#!/usr/bin/env bash
# Build the Dockerfile's api and worker-cpu targets and run a preview try-on through them, on a
# machine with no container daemon and no access to an image registry (how issue 14 was
# checked). Needs root, Debian's buildah and debootstrap, PostgreSQL on 127.0.0.1:5432 (trust)
# and Redis on 127.0.0.1:6379. Prints what it checked; leaves images tryon-{api,worker-cpu}:check.
#
# 1. A Python 3.11 base image from Debian packages (the apt mirror this machine already uses),
#    standing in for python:3.11-slim: PYTHON_IMAGE=localhost/tryon-pybase:3.11.
# 2. `buildah bud --isolation chroot` (runc cannot set rlimits in this sandbox; chroot can).
# 3. The two images run side by side (buildah run, host network, a bind-mounted /data) against
#    the host's PostgreSQL (database tryon_container_check) and Redis (db 14).
set -euo pipefail
cd "$(dirname "$0")/.."
work=${WORK:-/tmp/tryon-container-check}
mkdir -p "$work"
if ! buildah images -q localhost/tryon-pybase:3.11 | grep -q .; then
    mirror=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/*.sources)
    rm -rf "$work/rootfs"
    debootstrap --variant=minbase --include=python3.11,python3.11-venv,ca-certificates \
        bookworm "$work/rootfs" "$mirror" >"$work/debootstrap.log"
    chroot "$work/rootfs" /usr/bin/python3.11 -m venv /usr/local/py
    # this machine reaches the package index through a proxy with its own CA
    cp /etc/ssl/certs/ca-certificates.crt "$work/rootfs/etc/ssl/certs/ca-certificates.crt"
    ctr=$(buildah from scratch); mnt=$(buildah mount "$ctr")
    cp -a "$work/rootfs/." "$mnt/"
    buildah config --env PATH=/usr/local/py/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        --env PIP_CERT=/etc/ssl/certs/ca-certificates.crt --cmd '["python3"]' "$ctr"
    buildah commit -q --rm "$ctr" localhost/tryon-pybase:3.11 >/dev/null
fi
for target in api worker-cpu; do
    start=$(date +%s)
    buildah bud -q --isolation chroot --layers --build-arg PYTHON_IMAGE=localhost/tryon-pybase:3.11 \
        --target "$target" -t "localhost/tryon-$target:check" . >"$work/build-$target.log" 2>&1
    echo "built $target in $(( $(date +%s) - start )) s: $(buildah images --format '{{.Size}}' localhost/tryon-$target:check | head -1)"
done

psql -h 127.0.0.1 -U postgres -qc "drop database if exists tryon_container_check"
psql -h 127.0.0.1 -U postgres -qc "create database tryon_container_check"
redis-cli -n 14 flushdb >/dev/null
rm -rf "$work/data" && mkdir -p "$work/data" && chown 10001 "$work/data"
envs=(--env TRYON_DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1:5432/tryon_container_check
      --env TRYON_BROKER_URL=redis://127.0.0.1:6379/14 --env TRYON_SECRET_KEY=container-check
      --env TRYON_STORAGE_ROOT=/data/storage --env TRYON_DEFAULT_ENGINE=preview --env TRYON_WEIGHTS=)
api=$(buildah from localhost/tryon-api:check); wrk=$(buildah from localhost/tryon-worker-cpu:check)
buildah config "${envs[@]}" "$api"; buildah config "${envs[@]}" "$wrk"
R() { c=$1; shift; buildah run --isolation chroot -v "$work/data:/data" "$c" -- "$@"; }
pids=()
# each server runs in its own session so that its whole process tree can be stopped
bg() { c=$1; log=$2; shift 2; setsid buildah run --isolation chroot -v "$work/data:/data" "$c" -- "$@" >"$log" 2>&1 & pids+=($!); }
cleanup() {
    for p in "${pids[@]}"; do kill -TERM -- "-$p" 2>/dev/null || true; done
    sleep 3
    for p in "${pids[@]}"; do kill -KILL -- "-$p" 2>/dev/null || true; done
    buildah rm "$api" "$wrk" >/dev/null
}
trap cleanup EXIT
echo "api image: torch importable = $(R "$api" python -c 'import importlib.util as u; print(u.find_spec("torch") is not None)')"
echo "worker-cpu image: torch importable = $(R "$wrk" python -c 'import importlib.util as u; print(u.find_spec("torch") is not None)')"
R "$api" tryon db upgrade
port=${PORT:-18914}
bg "$api" "$work/api.log" gunicorn --workers 1 --bind "127.0.0.1:$port" -c python:web.gunicorn_conf 'web:create_app()'
bg "$wrk" "$work/worker.log" celery -A workers.tasks:app worker --pool prefork -Q cpu --concurrency 1 \
    --loglevel INFO --without-gossip --without-mingle -n cpu@check
API=http://127.0.0.1:$port
for _ in $(seq 90); do curl -sf "$API/readyz" >/dev/null && break; sleep 1; done
echo "readyz: $(curl -s "$API/readyz")"
last() { R "$api" "$@" 2>/dev/null | tail -1; }
S=$(last tryon accounts create --name s --role shopper); SK=$(last tryon keys create --account "$S")
M=$(last tryon accounts create --name m --role merchant); MK=$(last tryon keys create --account "$M")
id() { python3 -c "import json,sys; print(json.load(sys.stdin)['id'])"; }
G=$(curl -s -H "Authorization: Bearer $MK" -F image=@tryon/assets/garment_tshirt.png \
    -F category=upper_body -F name=T "$API/v1/garments" | id)
P=$(curl -s -H "Authorization: Bearer $SK" -F image=@tryon/assets/person_astronaut.png \
    -F consent=true "$API/v1/photos" | id)
body="{\"photo_id\":\"$P\",\"garment_id\":\"$G\""
echo "anydoor without weights: $(curl -s -w ' HTTP %{http_code}' -H "Authorization: Bearer $SK" \
    -H 'Content-Type: application/json' -d "$body,\"engine\":\"anydoor\"}" "$API/v1/tryons")"
J=$(curl -s -H "Authorization: Bearer $SK" -H 'Content-Type: application/json' -d "$body}" "$API/v1/tryons" | id)
for i in $(seq 120); do
    st=$(curl -s -H "Authorization: Bearer $SK" "$API/v1/tryons/$J" | python3 -c "import json,sys; print(json.load(sys.stdin)['status'])")
    [ "$st" = succeeded ] || [ "$st" = failed ] && break
    sleep 1
done
echo "default-engine try-on: $st after ~${i} s ($(curl -s -H "Authorization: Bearer $SK" "$API/v1/tryons/$J" | python3 -c "import json,sys; d=json.load(sys.stdin); print(d['engine'], d['timings'])"))"
curl -s -o "$work/result.png" -w "result: HTTP %{http_code}, %{size_download} bytes\n" -H "Authorization: Bearer $SK" "$API/v1/tryons/$J/results/0"
echo "worker healthcheck (compose's command): $(R "$wrk" sh -c 'celery -A workers.tasks:app inspect ping --timeout 10 -d cpu@check >/dev/null && echo ok || echo FAIL' 2>/dev/null | tail -1)"
