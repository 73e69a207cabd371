//! latentsweep worker library: the training engine (`train`), independent of gRPC.

pub mod agent;
pub mod train;

/// mimalloc for every process that links the training engine (the worker, the coordinator's
/// local workers, tests and benchmarks).
///
/// A training step allocates and frees tens of megabytes of activations and gradients. glibc's
/// malloc serves blocks that large with fresh `mmap`s and unmaps them on free, so every step
/// page-faults its buffers in again, which cost about a quarter of a CPU step (BENCHMARKS.md).
/// mimalloc reuses freed pages. (jemalloc was tried and measured no faster: it returns blocks
/// over 8 MiB to the system at once by default.)
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
