//! The subcommands: each file turns one validated configuration into a run.

pub mod config;
pub mod explain;
pub mod gen;
pub mod produce;
pub mod replay;
pub mod run;
