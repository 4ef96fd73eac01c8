//! Run-time registration of ports: adding a chip never edits the engine.

use crate::{Port, PortError, Result};
use std::sync::Arc;

/// Options every port factory receives.
#[derive(Clone, Debug, Default)]
pub struct PortOptions {
    /// Worker threads for host-side ports (None: the port decides).
    pub threads: Option<usize>,
}

/// Builds a port instance.
pub type PortFactory = Box<dyn Fn(&PortOptions) -> Result<Arc<dyn Port>> + Send + Sync>;

struct Entry {
    name: String,
    about: String,
    factory: PortFactory,
}

/// A table of named port factories.
#[derive(Default)]
pub struct Registry {
    entries: Vec<Entry>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Registry {
        Registry::default()
    }
    /// Add a port under `name`; a later registration of the same name replaces the earlier one.
    pub fn register(&mut self, name: &str, about: &str, factory: PortFactory) {
        self.entries.retain(|e| e.name != name);
        self.entries.push(Entry { name: name.into(), about: about.into(), factory });
    }
    /// Registered (name, description) pairs in registration order.
    pub fn list(&self) -> Vec<(String, String)> {
        self.entries.iter().map(|e| (e.name.clone(), e.about.clone())).collect()
    }
    /// Instantiate the port `name`, or say which names exist.
    pub fn create(&self, name: &str, opts: &PortOptions) -> Result<Arc<dyn Port>> {
        match self.entries.iter().find(|e| e.name == name) {
            Some(e) => (e.factory)(opts),
            None => Err(PortError::Invalid(format!(
                "unknown port '{name}'; registered ports: {} (see `anychip ports`)",
                self.entries.iter().map(|e| e.name.as_str()).collect::<Vec<_>>().join(", ")
            ))),
        }
    }
}
