//! One module per data source. Each collector states at the top of its file what failure it catches, what it
//! reads and what it exports.

pub mod tcp;
