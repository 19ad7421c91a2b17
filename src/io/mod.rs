//! Input and output: sources (files, Kafka) yield raw messages with positions, sinks receive
//! typed records per closed tick, `format` writes the output records, `kafka` the client setup,
//! `fs` file operations whose errors name the file.

pub mod format;
pub mod fs;
pub mod kafka;
pub mod sink;
pub mod source;
