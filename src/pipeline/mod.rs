//! The pipeline: tails the journal by `seq`, classifies each event's mailbox provider and feeds
//! the windows.
//!
//! - [`provider`]: which mailbox provider an address belongs to, from a built-in table of
//!   consumer domains, what `sent` events' SMTP replies reveal about custom domains, and the
//!   operator's overrides.
//! - [`tail`]: the thread that reads the journal after its checkpoint and feeds the windows.
//! - [`state`]: the checkpoint, saved together with a snapshot of the windows and what the
//!   classifier learned, so a restart counts every event exactly once.

pub mod provider;
pub mod state;
pub mod tail;

pub use provider::{Classifier, Provider, ProvidersConfig};
pub use tail::{Pipeline, PipelineError, Shared};
