//! medlake's integration tests: one binary, one module per area, against a
//! real broker (see the harness in `integration-tests/src/lib.rs`).

mod api;
mod api_limits;
mod api_tls;
mod e2e;
mod ftp;
mod kafka;
mod parse_cli;
mod parser;
mod parser_caps;
mod serve;
mod sink;
mod spark;
