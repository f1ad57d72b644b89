//! The bounded queue between the HTTP handlers and the batcher: requests wait here for a slot
//! in the running batch, and a full queue is answered at once (503) instead of piling up.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// Why a request was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// Every batch slot is taken and `max_queue` requests already wait.
    Full,
    /// The server is shutting down.
    Closed,
}

/// Requests (`J`: the batcher's job) waiting for the batcher, and how many it is running.
pub(crate) struct JobQueue<J> {
    state: Mutex<State<J>>,
    arrived: Condvar,
    max_batch: usize,
    max_queue: usize,
    /// Requests in the running batch (set by the batcher).
    active: AtomicUsize,
}

struct State<J> {
    waiting: VecDeque<J>,
    closed: bool,
}

impl<J> JobQueue<J> {
    pub fn new(max_batch: usize, max_queue: usize) -> Self {
        Self {
            state: Mutex::new(State { waiting: VecDeque::new(), closed: false }),
            arrived: Condvar::new(),
            max_batch,
            max_queue,
            active: AtomicUsize::new(0),
        }
    }

    /// Queues a request if a batch slot is free or fewer than `max_queue` wait.
    pub fn push(&self, job: J) -> Result<(), Refused> {
        let mut state = self.lock();
        if state.closed {
            return Err(Refused::Closed);
        }
        if state.waiting.len() + self.active() >= self.max_batch + self.max_queue {
            return Err(Refused::Full);
        }
        state.waiting.push_back(job);
        self.arrived.notify_one();
        Ok(())
    }

    /// Up to `n` waiting requests, oldest first. With `wait`, blocks until one arrives (or the
    /// queue closes); the timeout bounds each wait so the caller can look at the clock.
    pub fn take(&self, n: usize, wait: bool) -> Vec<J> {
        let mut state = self.lock();
        if wait && state.waiting.is_empty() && !state.closed {
            state = match self.arrived.wait_timeout(state, Duration::from_millis(100)) {
                Ok((state, _)) => state,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
        let n = n.min(state.waiting.len());
        // Counted as active before the lock is released, so that a request is never in
        // neither count (the batcher corrects the count once it has admitted them).
        self.active.fetch_add(n, Ordering::Relaxed);
        state.waiting.drain(..n).collect()
    }

    /// Refuses new requests from now on (those already waiting stay, for [`Self::drain`]).
    pub fn close(&self) {
        self.lock().closed = true;
        self.arrived.notify_all();
    }

    /// Takes every waiting request.
    pub fn drain(&self) -> Vec<J> {
        self.lock().waiting.drain(..).collect()
    }

    pub fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// Requests waiting for a slot.
    pub fn waiting(&self) -> usize {
        self.lock().waiting.len()
    }

    /// Requests in the running batch.
    pub fn active(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }

    pub fn set_active(&self, n: usize) {
        self.active.store(n, Ordering::Relaxed);
    }

    // A handler that panicked while holding the lock cannot leave the queue half-changed (every
    // change is one VecDeque call), so a poisoned lock is still usable.
    fn lock(&self) -> MutexGuard<'_, State<J>> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
