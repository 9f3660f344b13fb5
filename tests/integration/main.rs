//! Integration tests against a real `ringxferd`: real kernel, real files, real
//! sockets. Every test starts its own daemon on a socket in a fresh temporary
//! directory (see `support`), so tests run in parallel without sharing state.

mod support;

mod access;
mod archive;
mod cleanup;
mod cli;
mod cli_common;
mod cli_jobs;
mod cli_progress;
mod cli_tree;
mod concurrency;
mod config;
mod connections;
mod copy;
mod copy_range;
mod destinations;
mod direct;
mod durability;
mod engines;
mod failures;
mod fair_users;
mod host_dirs;
mod host_shares;
mod host_stripes;
mod host_to_host;
mod jobcontrol;
mod layers;
mod lifecycle;
mod nothing_lost;
mod pagecache;
mod privileges;
mod protocol_abuse;
mod publish;
mod ratelimit;
mod read_only;
mod reflink;
mod robustness;
mod scheduling;
mod seccomp;
mod signals;
mod sockets;
mod sources;
mod sparse;
mod stalls;
mod stub;
mod systemd;
mod tree_promise;
