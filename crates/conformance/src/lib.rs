//! The conformance suite: what a port must pass to be trusted with training.
//!
//! Levels: L0 runtime, L1 primitives against `ref`, L2 composites (forward and backward)
//! against the default decomposition on `ref`, L3 whole-model goldens written by PyTorch,
//! L4 training behaviour, L5 throughput (reported, never failing). A capability the port lacks
//! is reported `unsupported`, never a panic. Run it with `anychip conform --port NAME` or, from
//! a port crate's own tests, with [`conformance_tests!`].

mod harness;
mod l0_runtime;
mod l1_primitives;
mod l2_composites;
mod l3_golden;
mod l4_training;
mod l5_speed;
mod report;
pub mod tolerance;

pub use report::{Level, Report, Row, Status};

use anychip_port::Port;
use std::sync::Arc;

/// Run `levels` on `port`, comparing against `reference` (normally the `ref` port).
pub fn run(port: &Arc<dyn Port>, reference: &Arc<dyn Port>, levels: &[Level]) -> Report {
    let mut report = Report::new(port.name(), &port.capabilities());
    for level in levels {
        let rows = match level {
            Level::L0 => l0_runtime::run(port.as_ref()),
            Level::L1 => l1_primitives::run(port.as_ref(), reference.as_ref()),
            Level::L2 => l2_composites::run(port.as_ref(), reference.as_ref()),
            Level::L3 => l3_golden::run(port),
            Level::L4 => l4_training::run(port, reference),
            Level::L5 => l5_speed::run(port),
        };
        report.rows.extend(rows);
    }
    report
}

/// Run the suite as a port crate's own tests: one `#[test]` per level, failing with the
/// report's failing rows. `$make` builds an `Arc<dyn Port>` (called once per level).
///
/// ```ignore
/// anychip_conformance::conformance_tests!(std::sync::Arc::new(my_port::new()));
/// ```
#[macro_export]
macro_rules! conformance_tests {
    ($make:expr) => {
        fn __conformance_level(level: $crate::Level) {
            let port: std::sync::Arc<dyn anychip_port::Port> = $make;
            let reference: std::sync::Arc<dyn anychip_port::Port> = std::sync::Arc::new(anychip_port_ref::new());
            let report = $crate::run(&port, &reference, &[level]);
            assert!(report.passed(), "conformance {level:?} failed:\n{}", report.failures_table());
        }
        #[test]
        fn conformance_l0_runtime() {
            __conformance_level($crate::Level::L0)
        }
        #[test]
        fn conformance_l1_primitives() {
            __conformance_level($crate::Level::L1)
        }
        #[test]
        fn conformance_l2_composites() {
            __conformance_level($crate::Level::L2)
        }
        #[test]
        fn conformance_l3_model_goldens() {
            __conformance_level($crate::Level::L3)
        }
        #[test]
        fn conformance_l4_training() {
            __conformance_level($crate::Level::L4)
        }
    };
}
