//! latentsweep coordinator: sweep submission, the SQLite store, job leasing over gRPC and the dashboard.

pub mod cli;
pub mod conn;
pub mod export;
pub mod grpc;
pub mod local;
pub mod monitor;
pub mod progress;
pub mod sched;
pub mod serve;
pub mod slurm;
pub mod store;
pub mod tables;
pub mod web;
