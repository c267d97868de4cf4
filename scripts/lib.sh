# Shared by the scripts: find the compose tool and the docker build mode this machine has.

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
