//! Test-only fault injection for the agent's trainer, so tests can drive a real `worker`
//! process through a training panic end to end. Never set it outside tests.
//!
//! `LATENTSWEEP_TEST_PANIC_AT_STEP=N`: the first attempt this process trains panics as soon as
//! training reports step `N` or later. Only once per process, so the job's retry (on the same
//! worker) can finish and show that the panic cost one attempt and nothing else.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::Trainer;
use crate::train::{CancelToken, Outcome, RunSpec, TrainError, TrainEvent};

/// The environment variable read by `wrap` (the Burn trainer wrapper).
pub(crate) const TEST_PANIC_ENV: &str = "LATENTSWEEP_TEST_PANIC_AT_STEP";

/// `trainer` itself, or `trainer` that panics once at the step [`TEST_PANIC_ENV`] names.
pub(crate) fn wrap(trainer: Arc<dyn Trainer>) -> Arc<dyn Trainer> {
    let Ok(raw) = std::env::var(TEST_PANIC_ENV) else {
        return trainer;
    };
    match raw.trim().parse::<u64>() {
        Ok(at) => {
            tracing::warn!(
                step = at,
                "{TEST_PANIC_ENV} is set: the first attempt will panic (test-only fault injection)"
            );
            Arc::new(PanicOnce {
                inner: trainer,
                at,
                fired: AtomicBool::new(false),
            })
        }
        Err(_) => {
            tracing::warn!(value = %raw, "{TEST_PANIC_ENV} is not a step number; ignored");
            trainer
        }
    }
}

struct PanicOnce {
    inner: Arc<dyn Trainer>,
    at: u64,
    fired: AtomicBool,
}

impl Trainer for PanicOnce {
    fn train(
        &self,
        slot: usize,
        spec: &RunSpec,
        on_event: &mut dyn FnMut(TrainEvent),
        cancel: &CancelToken,
    ) -> Result<Outcome, TrainError> {
        let mut checked = |ev: TrainEvent| {
            if let TrainEvent::Step { step, .. } = &ev
                && *step >= self.at
                && !self.fired.swap(true, Ordering::SeqCst)
            {
                panic!("{TEST_PANIC_ENV}: injected panic at step {step}");
            }
            on_event(ev);
        };
        self.inner.train(slot, spec, &mut checked, cancel)
    }
}
