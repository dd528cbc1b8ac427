# syntax=docker/dockerfile:1.7
#
# One image, one binary: every service is `medlake <subcommand>`
# (parser, sink, ftp-connector, api-connector, serve, topics ensure,
# maintain, ...).
#
#   docker build -t medlake:dev .
#   docker run --rm medlake:dev --help
#
# Stage 1 builds the release binary with librdkafka's build dependencies
# (rdkafka-sys compiles librdkafka from source: C toolchain, perl, zlib;
# aws-lc-sys needs cmake). Stage 2 is a slim Debian with the binary, the
# data set definitions, the report definitions and the example
# configuration, run as a non-root user.

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-slim-${DEBIAN_RELEASE} AS builder
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
        build-essential cmake pkg-config perl zlib1g-dev ca-certificates \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# Cache mounts keep the crate registry and the target dir between builds;
# the binary is copied out of the (mounted) target dir.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p medlake \
 && install -D -m 0755 target/release/medlake /out/medlake

FROM debian:${DEBIAN_RELEASE}-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates zlib1g \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 medlake \
 && useradd --system --uid 10001 --gid medlake --home-dir /opt/medlake --shell /usr/sbin/nologin medlake
COPY --from=builder /out/medlake /usr/local/bin/medlake
# The working directory holds the defaults `schemas_dir: schemas`,
# `facilities_file: config/facilities.yaml`, `serve.reports_dir: reports` and
# `serve.customers_file: config/customers.yaml`; deployments mount their own.
WORKDIR /opt/medlake
COPY schemas/ schemas/
COPY reports/ reports/
COPY config/ config/
# The repository's customer registry holds the digests of the published demo
# tokens, one of them an analyst's that reads every facility. The image keeps
# the default location but lists no customer: `serve` run without a registry
# of its own lets nobody in, rather than whoever knows a demo token.
COPY <<EOF config/customers.yaml
# The image's customer registry: empty. Mount yours over
# /opt/medlake/config/customers.yaml or set serve.customers_file.
customers: []
EOF
ENV MEDLAKE_CONFIG=/opt/medlake/config/medlake.yaml \
    RUST_LOG=info
USER 10001:10001
# 9400: admin (/metrics, /healthz, /readyz); 8080: the api-connector's push
# API; 8090: serve's portal and SQL API.
EXPOSE 9400 8080 8090
ENTRYPOINT ["medlake"]
CMD ["--help"]
