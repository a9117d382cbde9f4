//! infergate operator.
//!
//! ```text
//!  main.rs ─▶ cli (crds | render | validate | run)
//!              │                         │
//!   pure:  compile ◀── manifests     run ─▶ reconcile (kube runtime: watch, SSA, Events, leader Lease)
//!          validate (schema + CEL)         admin (/metrics /healthz /readyz), metrics
//! ```
#![deny(rust_2018_idioms)]
#![forbid(unsafe_code)]

pub mod admin;
pub mod cli;
pub mod compile;
pub mod kube_apply;
pub mod leader;
pub mod manifests;
pub mod metrics;
pub mod publish;
pub mod reconcile;
pub mod render;
pub mod run;
pub mod validate;
