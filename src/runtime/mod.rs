//! The runtime: the timely worker loop that drives the dataflow, checkpoints, metrics and the
//! progress line.

pub mod checkpoint;
pub mod metrics;
pub mod progress;
pub mod stream;
pub mod worker;
