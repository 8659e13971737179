//! bouncewatch: the Mailjet event webhook receiver that keeps every event, counts it once, and
//! tells you when your sending goes wrong.
//!
//! The modules follow the path of one event:
//!
//! ```text
//! http (auth, limits, parse v1/v2) -> journal (durable append, group commit, dedup)
//!   -> pipeline -> windows -> metrics -> alerts -> notify
//! ```
//!
//! `event` holds the domain types every stage shares; `config` assembles each stage's section.

pub mod alerts;
pub mod config;
pub mod event;
pub mod http;
pub mod journal;
pub mod logging;
pub mod mailjet;
pub mod metrics;
pub mod notify;
pub mod pipeline;
pub mod shutdown;
pub mod windows;
