# The offline image: the host-built static binaries in an image FROM scratch. No registry is needed;
# scripts/build-images builds the binaries and runs this with a context holding only them.
FROM scratch
# One static binary; the services are links to it (it runs the service it is invoked as).
COPY bin/ /usr/local/bin/
# Where election nodes keep their term; owned by the user the services run as, so volumes are writable.
COPY --chown=65534:65534 state /var/lib/synclab
USER 65534:65534
ENTRYPOINT ["/usr/local/bin/synclab"]
