# fwdist: one binary serving FTPS to IQs and the admin HTTP API (deploy/README.md).
#
#   docker build -t fwdist .
#   docker run -d --name fwdist \
#     -p 2121:2121 -p 50000-50049:50000-50049 -p 8080:8080 \
#     -e FWDIST_FTPS__PUBLIC_HOST=<address IQs reach> \
#     -v fwdist-data:/var/lib/fwdist -v /srv/fwdist/certs:/etc/fwdist/certs:ro \
#     fwdist
#
# The certificate directory holds server.crt (PEM chain), server.key (PEM key, readable by
# uid 10001) and release-keys/ (the trusted release keys, *.pub). Without a certificate the
# container stops at once and says where to mount one: the image never creates a
# development certificate behind your back (FWDIST_FTPS__SELF_SIGNED=false below).
#
# Stop with a timeout above the server's drain (10 s for transfers, then the queued records):
# `docker stop -t 30`. fwdist limits sessions per client address and records the IQ's
# address: publish ports so the source address survives (Docker's iptables DNAT does; its
# userland proxy, used for connections from the host itself, does not), or use
# --network host. A few passive ports are enough (bench/README.md, "Passive ports").
#
# No container engine runs in this project's CI. deploy/check.py, run by .ci/run, checks
# what can be checked without one: the build command and toolchain are the ones CI tests,
# the dependency stage's files and stub step resolve with Cargo.lock unchanged, the user is
# not root, every ENV below is a configuration key the binary accepts and the ports it yields
# are the ones EXPOSEd, and the binary started with this ENV refuses to run without a
# certificate (saying where to mount one) and, given one, passes the HEALTHCHECK and stops
# cleanly on SIGTERM. Keep every step here in line with what that script checks.

# --- build stage ----------------------------------------------------------------------------
# The toolchain CI tests with (rustc 1.95) on the Debian release the runtime stage uses, so
# the binary links against the same glibc it runs on. deploy/check.py compares both.
FROM rust:1.95-bookworm AS build
WORKDIR /src

# Dependency layer: the manifests and the lock file only, then empty sources in place of
# ours (deploy/stub-sources.sh), and a release build that compiles every dependency. Docker
# reuses this layer until a manifest or Cargo.lock changes, so a source change recompiles
# only fwdist's own three crates. Every workspace member's manifest must be copied here.
COPY Cargo.toml Cargo.lock ./
COPY crates/release/Cargo.toml crates/release/
COPY crates/iq/Cargo.toml crates/iq/
COPY deploy/stub-sources.sh deploy/
RUN deploy/stub-sources.sh .
RUN cargo build --release --locked --bin fwdist

# The real sources (migrations are compiled in by sqlx::migrate!). COPY keeps the files'
# modification times, which may be older than the stub build's outputs: touch them so cargo
# rebuilds our crates instead of keeping the stub binary. Same build command as above, the
# one README "Deploying" gives.
COPY src ./src
COPY crates ./crates
COPY migrations ./migrations
RUN find src crates -name '*.rs' -exec touch {} +
RUN cargo build --release --locked --bin fwdist

# --- runtime stage --------------------------------------------------------------------------
FROM debian:bookworm-slim AS runtime

# Trust roots for what the server dials out to over TLS (postgres://…?sslmode=require, an
# https S3 endpoint) and for `fwdist doctor`. ca-certificates brings openssl, which the
# health check uses when the admin API speaks HTTPS. Nothing else: no curl, no shell tools.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*

# A system user with a fixed uid/gid (10001), so volume ownership is predictable and
# Kubernetes' runAsNonRoot can check the numeric USER below. No login shell.
# /var/lib/fwdist is its own (store, SQLite database, staging). /etc/fwdist/certs stays
# root's: the server only reads its certificate and release keys, and cannot change them.
RUN groupadd --system --gid 10001 fwdist \
 && useradd --system --uid 10001 --gid fwdist --home-dir /var/lib/fwdist --no-create-home \
      --shell /usr/sbin/nologin fwdist \
 && install -d -o fwdist -g fwdist -m 0750 /var/lib/fwdist \
 && install -d -o root -g root -m 0755 /etc/fwdist /etc/fwdist/certs /etc/fwdist/certs/release-keys

COPY --from=build /src/target/release/fwdist /usr/local/bin/fwdist
# GET /healthz on this container's admin API with bash's /dev/tcp (or openssl with TLS).
COPY deploy/healthcheck.sh /usr/local/bin/fwdist-healthcheck

# Configuration from the environment (docs/configuration.md lists every key). Listen on
# every interface of the container; certificate, key and release keys from the certs
# volume; never a self-signed development certificate. The store and the SQLite database
# keep their defaults, firmware-store/ and firmware-store/fwdist.sqlite, relative to the
# working directory /var/lib/fwdist: a node that keeps its releases in object storage
# (FWDIST_STORE__URL) then carries no store.root it does not use. FWDIST_FTPS__PUBLIC_HOST
# has no sensible default here: set it to the address IQs reach.
ENV FWDIST_FTPS__LISTEN=0.0.0.0:2121 \
    FWDIST_ADMIN__LISTEN=0.0.0.0:8080 \
    FWDIST_FTPS__CERT=/etc/fwdist/certs/server.crt \
    FWDIST_FTPS__KEY=/etc/fwdist/certs/server.key \
    FWDIST_FTPS__SELF_SIGNED=false \
    FWDIST_SIGNING__TRUSTED_KEYS=/etc/fwdist/certs/release-keys

USER 10001:10001
WORKDIR /var/lib/fwdist
VOLUME ["/var/lib/fwdist", "/etc/fwdist/certs"]

# The control port, the passive range (ftps.passive_ports' default) and the admin API.
EXPOSE 2121 50000-50049 8080

# /healthz answers 200 when the database answers and the FTPS listener greets.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD ["/usr/local/bin/fwdist-healthcheck"]

# `docker run IMAGE network-requirements` prints the firewall rules for this configuration;
# `docker run IMAGE serve --config /etc/fwdist/fwdist.toml` adds a file (the ENV above still
# win over it: override them with -e).
ENTRYPOINT ["/usr/local/bin/fwdist"]
CMD ["serve"]
