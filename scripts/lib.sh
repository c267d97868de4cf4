# Shared by the scripts: find the compose tool and the docker build mode this machine has; how busy the
# machine's CPUs are.

# The compose command: the v2 plugin (`docker compose`) if present, else the standalone `docker-compose`.
compose_cmd() {
  if docker compose version >/dev/null 2>&1; then
    COMPOSE=(docker compose)
  elif command -v docker-compose >/dev/null 2>&1; then
    COMPOSE=(docker-compose)
  else
    echo "error: neither 'docker compose' nor 'docker-compose' is installed" >&2
    return 1
  fi
}

# Without the buildx plugin, `docker build` must use the classic builder (with DOCKER_BUILDKIT=1 it fails).
docker_build_env() {
  if ! docker buildx version >/dev/null 2>&1; then
    export DOCKER_BUILDKIT=0
  fi
}

# cpu_ticks: the machine's busy and idle CPU time so far (all CPUs, /proc/stat ticks), as "BUSY IDLE".
cpu_ticks() { awk '/^cpu /{print $2+$3+$4+$6+$7+$8, $5}' /proc/stat; }
# busy_percent "BUSY IDLE" "BUSY IDLE": the share of all CPUs busy between two cpu_ticks readings. A ratio
# of ticks to ticks, so the tick rate (`getconf CLK_TCK`) cancels out and is never assumed.
busy_percent() {
  local b1 i1 b2 i2
  read -r b1 i1 <<<"$1"; read -r b2 i2 <<<"$2"
  awk -v b=$((b2 - b1)) -v i=$((i2 - i1)) 'BEGIN { printf "%.1f", 100 * b / (b + i) }'
}
