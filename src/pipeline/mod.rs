//! The pipeline: tails the journal by `seq`, classifies each event's mailbox provider and feeds
//! the windows.
//!
//! This first part holds the classification ([`provider`]): which mailbox provider an address
//! belongs to, from a built-in table of consumer domains, what `sent` events' SMTP replies
//! reveal about custom domains, and the operator's overrides. The tailing task and the windows
//! come next (issue: sliding windows per campaign and provider).

pub mod provider;

pub use provider::{Classifier, Provider, ProvidersConfig};
