//! The runtime: the cluster that starts the timely workers, the one worker loop (harness) that
//! drives the dataflow in every mode, the dataflow's inputs and output collection, checkpoints,
//! metrics, the progress line, signals.

pub mod checkpoint;
pub mod cluster;
pub mod dataflow;
pub mod harness;
pub mod metrics;
pub mod profile;
pub mod progress;
pub mod signals;
