//! Config rendering, as consul-template does it: templates in Go's text/template language
//! (the `gotmpl` engine, `engine.rs`, with the block check it lacks in `blocks.rs`) with consul-template's functions (`funcs/`), fed by one
//! watcher per distinct query (`deps.rs` says what a query is and how its reply reads,
//! `watcher.rs` runs the blocking reads, `brain.rs` keeps the answers), and a runner
//! (`runner.rs`) that re-renders after the quiescence wait and writes files atomically with
//! their guards (`write.rs`). `config.rs` reads consul-template's config files and the
//! `-template` flag; `report.rs` makes each template's state a check. `muster template` is
//! `cli/template.rs`; the agent's own `template` blocks start in `agent.rs`.
//!
//! Guards consul-template lacks: nothing renders before every query has answered once; a
//! failed or denied read keeps the last file; `min_instances` and `minimum N`; a reset
//! cluster's empty answers are held (`brain.rs`); `check_command` validates the candidate.

pub mod agent;
pub mod blocks;
pub mod brain;
pub mod config;
pub mod deps;
pub mod engine;
pub mod exec;
pub mod funcs;
pub mod report;
pub mod runner;
pub mod value;
pub mod watcher;
pub mod write;

pub use config::{RunnerConfig, TemplateConfig};
pub use engine::{Engine, Options, Outcome};
