//! Jobs as DAGs: job files, data intervals, the executor, the scheduler.

pub mod backfill;
pub mod daemon;
pub mod executor;
pub mod interval;
pub mod job;
pub mod scheduler;

pub use interval::{Grain, Interval};
pub use job::{Job, Task};
