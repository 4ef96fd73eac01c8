//! Chip database, training performance model and mixed-fleet planner.
