# synclab's images, built from source. For machines that can pull images from a registry:
#
#   docker compose up --build
#
# Machines without a registry use scripts/build-images instead, which builds the same binaries on the host
# and copies them into an image FROM scratch (docker/offline.Dockerfile): see README.md.
#
# One binary runs every service (invoked under a service's name: the links). It is static (glibc with
# +crt-static; glibc 2.34+ resolves host names with its built-in files and DNS modules), so the runtime
# image holds nothing but it.

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN triple="$(uname -m)-unknown-linux-gnu" \
 && RUSTFLAGS="-C target-feature=+crt-static" CARGO_PROFILE_RELEASE_STRIP=symbols cargo build --release --locked --no-default-features --bin synclab --target "$triple" \
 && mkdir -p /out \
 && cp "target/$triple/release/synclab" /out/ \
 && for service in time-server berkeley-master berkeley-slave election-node; do ln -s synclab "/out/$service"; done \
 && mkdir -p /state

FROM scratch
COPY --from=build /out/ /usr/local/bin/
# Where election nodes keep their term; owned by the user the services run as, so volumes are writable.
COPY --from=build --chown=65534:65534 /state /var/lib/synclab
USER 65534:65534
ENTRYPOINT ["/usr/local/bin/synclab"]
