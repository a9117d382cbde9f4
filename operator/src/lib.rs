//! infergate operator.
//!
//! ```text
//!  main.rs ─▶ cli (crds | render | validate | run)
//!              │                         │
//!   pure:  infergate_compile             run ─▶ reconcile (kube runtime: watch, SSA, Events, leader Lease)
//!          (compile, manifests, publish)       admin (/metrics /healthz /readyz), metrics
//!          validate (schema + CEL)
//! ```
//! The pure compile step lives in the `infergate-compile` crate, so the agent's standalone mode links it
//! without this crate's kube client, runtime and CEL evaluator.
#![deny(rust_2018_idioms)]
#![forbid(unsafe_code)]

pub mod admin;
pub mod cli;
pub mod kube_apply;
pub mod leader;
pub mod metrics;
pub mod reconcile;
pub mod render;
pub mod run;
pub mod validate;
