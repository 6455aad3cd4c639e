//! Rust closures called from C: the state behind the `void *arg` of librbd callbacks.
//!
//! librbd may call a callback from its own threads (flatten progress comes from the
//! object-copy completions), possibly from several at once, and a panic must never unwind
//! into C. So the closure lives in a [`CallbackCell`]:
//! - a `Mutex` serialises the calls (so an `FnMut` is sound whatever librbd does);
//! - each call runs under `catch_unwind`; the first panic is stored, the closure is not
//!   called again, and the caller re-raises it with [`CallbackCell::finish`] once the C
//!   function has returned — on the caller's thread, as if the closure had run there.
//!
//! The closure must be `Send` because it may run on another thread; the cell is only
//! borrowed by C for the duration of the blocking librbd call that receives it.

use std::any::Any;
use std::panic::{self, AssertUnwindSafe};
use std::sync::{Mutex, PoisonError};

struct Inner<F> {
    f: F,
    panic: Option<Box<dyn Any + Send + 'static>>,
}

/// A closure shared with C for the length of one blocking call.
pub(crate) struct CallbackCell<F> {
    inner: Mutex<Inner<F>>,
}

impl<F> CallbackCell<F> {
    pub(crate) fn new(f: F) -> Self {
        Self {
            inner: Mutex::new(Inner { f, panic: None }),
        }
    }

    /// Runs `call` with the closure; `None` if it panicked now or earlier (the panic is kept).
    pub(crate) fn with<R>(&self, call: impl FnOnce(&mut F) -> R) -> Option<R> {
        // The lock is never poisoned (panics are caught below while it is held), but a
        // poisoned lock would still hold a usable closure.
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if inner.panic.is_some() {
            return None;
        }
        // AssertUnwindSafe: after a panic the closure is never called again, so no
        // half-updated state of it is ever observed.
        match panic::catch_unwind(AssertUnwindSafe(|| call(&mut inner.f))) {
            Ok(value) => Some(value),
            Err(payload) => {
                inner.panic = Some(payload);
                None
            }
        }
    }

    /// Ends the cell's life: re-raises the closure's panic, if any, on this thread.
    pub(crate) fn finish(self) {
        let inner = self
            .inner
            .into_inner()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(payload) = inner.panic {
            panic::resume_unwind(payload);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn with_when_closure_panics_then_none_and_not_called_again() {
        // Arrange
        let mut calls = 0;
        let cell = CallbackCell::new(|n: u32| {
            calls += 1;
            assert!(n < 1, "boom");
        });

        // Act
        let first = cell.with(|f| f(0));
        let second = cell.with(|f| f(1));
        let third = cell.with(|f| f(2));
        let finished = panic::catch_unwind(AssertUnwindSafe(|| cell.finish()));

        // Assert
        assert_eq!(first, Some(()));
        assert_eq!(second, None);
        assert_eq!(third, None);
        assert!(finished.is_err(), "the stored panic is re-raised by finish");
        assert_eq!(calls, 2);
    }

    #[test]
    fn finish_when_no_panic_then_returns() {
        // Arrange
        let cell = CallbackCell::new(|| 7);

        // Act
        let value = cell.with(|f| f());
        cell.finish();

        // Assert
        assert_eq!(value, Some(7));
    }
}
