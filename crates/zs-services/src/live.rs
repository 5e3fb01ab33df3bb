//! A setting a running service reads at each use and an operator may change (a reload).

use std::sync::RwLock;

/// A value that may change while the service runs.
#[derive(Debug, Default)]
pub(crate) struct Live<T: Copy>(RwLock<T>);

impl<T: Copy> Live<T> {
    /// A setting of `value`.
    pub(crate) fn new(value: T) -> Self {
        Live(RwLock::new(value))
    }

    /// The value now.
    pub(crate) fn get(&self) -> T {
        *self.0.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Changes it.
    pub(crate) fn set(&self, value: T) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = value;
    }
}
