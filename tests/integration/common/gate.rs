//! A test-wide gate: a test that loads the machine on purpose (the reload
//! under load) runs alone among the tests that start a server, so their
//! timing assertions are not measured against it. With one test binary
//! those tests share its two test threads; with one binary per file they
//! never overlapped.
//!
//! Every [`Server`](super::Server) holds a [`shared`] guard; the heavy test
//! takes [`exclusive`] first. A thread that already holds a guard gets
//! another one at once (a test may start several servers), and the guards
//! are not `Send`, so the count per thread stays right. Waits are bounded
//! by [`GATE_WITHIN`].

use std::cell::Cell;
use std::marker::PhantomData;
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// The longest a test waits for the gate (the heavy test takes about a
/// minute on a loaded two-core machine).
pub(crate) const GATE_WITHIN: Duration = Duration::from_secs(600);

#[derive(Default)]
struct State {
    /// Threads holding a shared guard.
    shared: usize,
    /// Whether the exclusive guard is held.
    exclusive: bool,
    /// Threads waiting for the exclusive guard (new shared guards wait
    /// behind them, so the heavy test is not starved).
    waiting: usize,
}

static STATE: Mutex<State> = Mutex::new(State {
    shared: 0,
    exclusive: false,
    waiting: 0,
});
static CHANGED: Condvar = Condvar::new();

thread_local! {
    /// Guards this thread holds, and whether they stand for the exclusive
    /// place. The thread's place is taken with its first guard and given
    /// back with its last, in whatever order they are dropped.
    static HELD: Cell<(usize, bool)> = const { Cell::new((0, false)) };
}

/// A place in the gate, given back when this thread's last guard is dropped.
#[must_use = "the gate is released when the guard is dropped"]
pub(crate) struct Guard {
    _not_send: PhantomData<*const ()>,
}

/// Run alongside other shared holders, never alongside [`exclusive`].
pub(crate) fn shared() -> Guard {
    acquire(false)
}

/// Run with no [`shared`] holder; take it before starting anything.
pub(crate) fn exclusive() -> Guard {
    acquire(true)
}

/// The gate state (a panicking test does not poison it for the others).
fn lock() -> MutexGuard<'static, State> {
    STATE.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Take a place (or nest in this thread's), waiting at most [`GATE_WITHIN`].
fn acquire(exclusive: bool) -> Guard {
    let guard = Guard {
        _not_send: PhantomData,
    };
    let (held, mode) = HELD.get();
    if held > 0 {
        assert!(
            mode || !exclusive,
            "exclusive() after this test took a shared place"
        );
        HELD.set((held + 1, mode));
        return guard;
    }
    let deadline = Instant::now() + GATE_WITHIN;
    let mut st = lock();
    if exclusive {
        st.waiting += 1;
    }
    loop {
        let blocked = if exclusive {
            st.exclusive || st.shared > 0
        } else {
            st.exclusive || st.waiting > 0
        };
        if !blocked {
            break;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            if exclusive {
                st.waiting -= 1;
            }
            drop(st);
            // No guard was given: nothing to give back.
            std::mem::forget(guard);
            panic!("waited {GATE_WITHIN:?} for the test gate");
        }
        st = CHANGED
            .wait_timeout(st, left)
            .unwrap_or_else(PoisonError::into_inner)
            .0;
    }
    if exclusive {
        st.waiting -= 1;
        st.exclusive = true;
    } else {
        st.shared += 1;
    }
    HELD.set((1, exclusive));
    guard
}

impl Drop for Guard {
    fn drop(&mut self) {
        let (held, exclusive) = HELD.get();
        HELD.set((held.saturating_sub(1), exclusive));
        if held != 1 {
            return;
        }
        let mut st = lock();
        if exclusive {
            st.exclusive = false;
        } else {
            st.shared -= 1;
        }
        drop(st);
        CHANGED.notify_all();
    }
}
