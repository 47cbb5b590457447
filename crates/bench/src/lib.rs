//! Shared pieces of the Sotto benchmark tool. The load generator itself is
//! the `sotto-bench` binary (`src/main.rs`); this library holds the MLS
//! fixtures that both the criterion benches (`benches/mls.rs`, workload W7)
//! and the report (wire sizes) use.

pub mod mls;
