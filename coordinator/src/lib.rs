//! latentsweep coordinator: sweep submission, the SQLite store, job leasing over gRPC and the dashboard.

pub mod cli;
pub mod conn;
pub mod export;
pub mod grpc;
pub mod local;
pub mod monitor;
pub mod obs;
pub mod progress;
pub mod retention;
pub mod sched;
pub mod serve;
pub mod slurm;
pub mod store;
pub mod tables;
pub mod tls;
pub mod token;
pub mod web;
