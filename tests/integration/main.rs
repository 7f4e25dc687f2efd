//! The integration tests: one test binary, one module per area (each once a binary of its
//! own), sharing the helpers in `tests/common`. One link instead of one per area, and the
//! harness's test threads stay busy across areas instead of waiting for each binary's slowest
//! test. Run one area with e.g. `cargo test --release --test integration faults::`.
//!
//! Sharing a process is safe here: every test runs a daemon of its own (in this process on a
//! thread of its own, or the built binary as a child, whose memory, threads and CPU time the
//! tests read from `/proc/PID`), on ports the kernel hands out and on paths no other test uses.
//! Two tests need the process to themselves and are binaries of their own:
//! `tests/threads.rs` counts this process's threads, and `tests/faults_many_clients.rs`
//! raises this process's descriptor limit.

#[path = "../common/mod.rs"]
mod common;

mod access;
mod admin;
mod api;
mod bench_tool;
mod browser;
mod chat;
mod chat_parser;
mod chat_raw;
mod cluster;
mod cluster_chat;
mod cluster_json;
mod crlf;
mod cutoff;
mod daemon;
mod faults;
mod filter;
mod framing;
mod hostile;
mod json_protocol;
mod live;
mod memory;
mod metrics;
mod moderation;
mod operator;
mod proxy;
mod recall;
mod relay;
mod reload;
mod room_moderation;
mod rooms;
mod service;
mod signed_in;
mod telnet;
mod tls;
mod tokens;
mod webapp;
mod websocket;
