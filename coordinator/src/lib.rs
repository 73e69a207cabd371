//! latentsweep coordinator: sweep submission, the SQLite store, job leasing over gRPC and the dashboard.

pub mod cli;
pub mod report;
pub mod store;
