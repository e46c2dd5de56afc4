//! Jobs as DAGs: job files, data intervals and (later) the executor.

pub mod executor;
pub mod interval;
pub mod job;

pub use interval::{Grain, Interval};
pub use job::{Job, Task};
