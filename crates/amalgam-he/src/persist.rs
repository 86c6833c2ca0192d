//! The typed "persist first" rule: a message that may leave only after the state recording it
//! is durable (a member's signed statement, a site's round seed and update). Restoring a state
//! from before the message left could otherwise re-run the step with different results.

use zeroize::Zeroizing;

/// A message that may leave only after `state()` is persisted: the typed "persist first" rule.
#[must_use = "persist state() durably, then call persisted() to get the message"]
#[derive(Debug)]
pub struct PersistFirst<T> {
    state: Zeroizing<Vec<u8>>,
    message: T,
}

impl<T> PersistFirst<T> {
    /// The state to persist (sealed: it holds seeds) before the message is sent.
    pub fn state(&self) -> &[u8] {
        &self.state
    }

    /// Call once `state()` is durable; yields the message.
    pub fn persisted(self) -> T {
        self.message
    }
}

impl<T> PersistFirst<T> {
    pub(crate) fn new(state: Zeroizing<Vec<u8>>, message: T) -> Self {
        Self { state, message }
    }
}
