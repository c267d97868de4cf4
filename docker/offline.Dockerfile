# The offline image: the host-built static binaries in an image FROM scratch. No registry is needed;
# scripts/build-images builds the binaries and runs this with a context holding only them.
FROM scratch
COPY synclab time-server berkeley-master berkeley-slave /usr/local/bin/
USER 65534:65534
ENTRYPOINT ["/usr/local/bin/synclab"]
