#!/usr/bin/env bash
# Build the stack's images with no image registry, as an air-gapped build would.
#
#   docker/build-offline.sh            # reuse what is already built (Docker's layer cache)
#   docker/build-offline.sh --fresh    # rebuild everything: new base, no layer cache
#
# 1. mlp/debian:bookworm - a Debian bookworm root file system made by mmdebstrap from the
#    Debian archive, imported with `docker import` (no docker pull anywhere).
# 2. The Python wheels of the exact pins (pyproject.toml + constraints.txt), fetched on the
#    host with `pip download` into a cache keyed by those files; served on loopback while
#    the images build, installed with `pip install --no-index --find-links`.
# 3. mlp-platform:latest from docker/Dockerfile (Python 3.11 from Debian), and the backing
#    services from Debian's packages: mlp/postgres:15-debian, mlp/redis:7-debian, and
#    mlp/s3:moto (moto's S3 server standing in for MinIO, which Debian does not package).
#
# Builds use the host's network (`--network host`): apt-get reaches the Debian archive and
# pip the loopback wheel server, and no traffic goes to a bridge address. Prints one line
# per step with its wall time. Needs: docker (a running engine), mmdebstrap, python3 + pip.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
fresh=0
case "${1:-}" in
    --fresh) fresh=1 ;;
    "") ;;
    *) echo "usage: $0 [--fresh]" >&2; exit 2 ;;
esac

base=${MLP_BASE_IMAGE:-mlp/debian:bookworm}
mirror=${MLP_DEBIAN_MIRROR:-http://deb.debian.org/debian}
security=${MLP_DEBIAN_SECURITY:-http://deb.debian.org/debian-security}
key=$(cat "$repo/pyproject.toml" "$repo/constraints.txt" "$here/s3/requirements.txt" "$0" \
      | sha256sum | cut -c1-16)
wheels=${MLP_WHEELS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/mlp/wheels-$key}
export DOCKER_BUILDKIT=0  # the classic builder: Debian's engine ships no buildx
nocache=()
[ "$fresh" = 1 ] && nocache=(--no-cache)

t0=$(date +%s)
step() { printf '%-44s %5ss\n' "$1" "$(( $(date +%s) - $2 ))"; }
for tool in docker mmdebstrap python3; do
    command -v "$tool" >/dev/null || { echo "build-offline: $tool not found" >&2; exit 1; }
done
docker info >/dev/null 2>&1 || { echo "build-offline: no Docker engine answers" >&2; exit 1; }

# 1. The Debian base.
t=$(date +%s)
if [ "$fresh" = 1 ] || ! docker image inspect "$base" >/dev/null 2>&1; then
    tar=$(mktemp --suffix=.tar)
    trap 'rm -f "$tar"' EXIT
    mmdebstrap --quiet --variant=minbase \
        --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
        --dpkgopt='path-include=/usr/share/doc/*/copyright' \
        --aptopt='APT::Install-Recommends "false"' \
        bookworm "$tar" \
        "deb $mirror bookworm main" "deb $mirror bookworm-updates main" \
        "deb $security bookworm-security main"
    docker import --change 'CMD ["bash"]' --change 'ENV LANG=C.UTF-8' \
        --message "mmdebstrap --variant=minbase bookworm" "$tar" "$base" >/dev/null
    rm -f "$tar"
    step "base $base (mmdebstrap + import)" "$t"
else
    step "base $base (present)" "$t"
fi

# 2. The wheels of the exact pins. The set is resolved (uv) for the image's own Python,
# Debian's 3.11.2, not the host's: environment markers such as redis's
# `async-timeout; python_full_version < "3.11.3"` differ between patch releases.
t=$(date +%s)
if [ ! -f "$wheels/.complete" ]; then
    uv=$(command -v uv || echo "$repo/.venv/bin/uv")
    [ -x "$uv" ] || { echo "build-offline: uv not found (make install provides it)" >&2; exit 1; }
    rm -rf "$wheels.part" && mkdir -p "$wheels.part"
    for what in platform s3; do
        if [ "$what" = platform ]; then src="$repo/pyproject.toml"; else src="$here/s3/requirements.txt"; fi
        "$uv" pip compile --quiet --no-header --no-annotate --python-version 3.11.2 \
            --python-platform x86_64-manylinux_2_36 -c "$repo/constraints.txt" "$src" \
            -o "$wheels.part/$what-lock.txt"
    done
    echo "setuptools>=68" > "$wheels.part/build-lock.txt"
    echo "wheel" >> "$wheels.part/build-lock.txt"
    python3 -m pip download --quiet --disable-pip-version-check --no-deps \
        --only-binary=:all: -d "$wheels.part" -r "$wheels.part/platform-lock.txt" \
        -r "$wheels.part/s3-lock.txt" -r "$wheels.part/build-lock.txt" \
        2> >(grep -v "^WARNING: Location" >&2)
    touch "$wheels.part/.complete"
    rm -rf "$wheels" && mv "$wheels.part" "$wheels"
    if [ -z "${MLP_WHEELS_DIR:-}" ]; then  # the cache keeps the current pins' set only
        find "$(dirname "$wheels")" -maxdepth 1 -name 'wheels-*' ! -path "$wheels" \
            -exec rm -rf {} +
    fi
    step "wheels: $(ls "$wheels"/*.whl | wc -l) fetched" "$t"
else
    step "wheels: $(ls "$wheels"/*.whl | wc -l) cached" "$t"
fi

# The wheel server, on loopback only, for the length of the builds.
# A fixed port by default: the address is part of the build arguments, so a new one would
# miss Docker's layer cache on every build.
port=${MLP_WHEEL_PORT:-28765}
if ! python3 -c "import socket; socket.socket().bind(('127.0.0.1', $port))" 2>/dev/null; then
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    echo "build-offline: port ${MLP_WHEEL_PORT:-28765} is taken; wheels on $port (no layer cache)" >&2
fi
python3 -m http.server --bind 127.0.0.1 --directory "$wheels" "$port" >/dev/null 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 50); do
    python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/')" \
        2>/dev/null && break
    sleep 0.1
done
pip_options="--no-index --find-links http://127.0.0.1:$port/"

build() {  # tag dockerfile context [build args...]
    local tag=$1 file=$2 context=$3 t old log
    shift 3
    t=$(date +%s)
    old=$(docker image inspect -f '{{.Id}}' "$tag" 2>/dev/null || true)
    log=$(mktemp)
    if ! docker build --force-rm --network host "${nocache[@]}" --build-arg "BASE=$base" "$@" \
            -f "$file" -t "$tag" "$context" >"$log" 2>&1; then
        tail -n 60 "$log" >&2
        echo "build-offline: building $tag failed (log above)" >&2
        rm -f "$log"
        exit 1
    fi
    rm -f "$log"
    # The image this tag named before, now untagged, goes (it is 3 GB for the platform).
    if [ -n "$old" ] && [ "$old" != "$(docker image inspect -f '{{.Id}}' "$tag")" ]; then
        docker rmi "$old" >/dev/null 2>&1 || true
    fi
    step "image $tag" "$t"
}

# 3. The images.
build mlp-platform:latest "$here/Dockerfile" "$repo" --build-arg "PIP_OPTIONS=$pip_options"
build mlp/postgres:15-debian "$here/postgres/Dockerfile" "$here/postgres"
build mlp/redis:7-debian "$here/redis/Dockerfile" "$here/redis"
build mlp/s3:moto "$here/s3/Dockerfile" "$here/s3" \
    --build-arg "PIP_OPTIONS=$pip_options -c http://127.0.0.1:$port/s3-lock.txt"
step "all images built" "$t0"
