//! Jobs as DAGs: job files, data intervals, the executor, the scheduler.

pub mod backfill;
pub mod catalog;
pub mod daemon;
pub mod executor;
pub mod job;
pub mod params;
pub mod rules;
pub mod scheduler;
pub mod trigger;

pub use crate::interval::{Grain, Interval};
pub use job::{Job, Task};
