//! Input and output: sources (files, Kafka) yield raw messages with positions, sinks receive
//! typed records per closed tick, `format` writes the output records, `kafka` the client setup.

pub mod format;
pub mod kafka;
pub mod sink;
pub mod source;
