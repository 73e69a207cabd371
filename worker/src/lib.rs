//! latentsweep worker library: the training engine (`train`), independent of gRPC.

pub mod agent;
pub mod train;
