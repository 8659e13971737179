//! [`Brief`]: the fields that counting and lookup read, borrowed from an event's stored text.
//!
//! The pipeline and the lookup indexer read every stored event again after it is acknowledged.
//! They need a third of its fields, so they parse into this view instead of a full [`Event`]:
//! no field they ignore is decoded or allocated, and the strings they read are borrowed from the
//! chunk (measured: the full parse was the larger part of the pipeline's CPU per event). The
//! fields it has are read by the same tolerant readers as [`Event`]'s, so every text the
//! receiver accepted parses here to the same values.

use std::borrow::Cow;

use serde::Deserialize;

use super::parse::{boolean, int_i64, int_u64, reject, text};
use super::{Event, EventKind, MessageId, decode_rfc2047};

/// What the windows, the campaign counters, the provider classifier and the lookup index read
/// from one event. See [`Event`] for what each field means.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Brief<'a> {
    pub kind: EventKind,
    pub time: Option<i64>,
    pub message_id: MessageId,
    /// `""` when the key was absent or `null`, as in [`Event::email`].
    pub email: Cow<'a, str>,
    pub campaign_id: u64,
    /// `customcampaign` exactly as received; see [`Brief::custom_campaign_decoded`].
    pub custom_campaign: Option<Cow<'a, str>>,
    pub custom_id: Option<Cow<'a, str>>,
    pub hard_bounce: Option<bool>,
    pub error_related_to: Option<Cow<'a, str>>,
    pub error: Option<Cow<'a, str>>,
    pub smtp_reply: Option<Cow<'a, str>>,
}

impl Brief<'_> {
    /// A placeholder that Mailjet's "send test" button posts: `MessageID` 0, no address and no
    /// campaign (see `fixtures/quirks/test-event-*.json`). No real event lacks all three.
    pub fn is_mailjet_test(&self) -> bool {
        self.message_id.0 == 0
            && self.email.is_empty()
            && self.campaign_id == 0
            && self.custom_campaign.as_deref().is_none_or(str::is_empty)
    }

    /// `customcampaign` with RFC 2047 encoded words decoded, computed when asked: most events
    /// carry a campaign id and never need it.
    pub fn custom_campaign_decoded(&self) -> Option<Cow<'_, str>> {
        self.custom_campaign.as_deref().map(decode_rfc2047)
    }
}

/// Where an event's [`Brief`] lies in its raw text, as the receiver's parse found it: the
/// numbers, and the position of each string. The journal keeps it for its newest events (see
/// `journal/recent.rs`), so that the pipeline and the lookup indexer rebuild the brief without
/// parsing the JSON a second and a third time (that parse was two thirds of the pipeline's
/// instructions and nearly half of the indexer's). Built only when every string is a plain slice
/// of the raw text; a string with escapes, or a number kept as text, needs the parse.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BriefAt {
    kind: EventKind,
    hard_bounce: Option<bool>,
    time: Option<i64>,
    message_id: MessageId,
    campaign_id: u64,
    email: Span,
    custom_campaign: Span,
    custom_id: Span,
    error_related_to: Span,
    error: Span,
    smtp_reply: Span,
}

/// A string's bytes `start..start + len` in the raw text; `start == u32::MAX` for an absent one.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Span {
    start: u32,
    len: u32,
}

impl Span {
    const ABSENT: Span = Span {
        start: u32::MAX,
        len: 0,
    };

    /// The span of `value` within `raw`; `None` when it is not a slice of `raw` (it was
    /// unescaped or formatted into a string of its own).
    fn of(value: Option<&Cow<'_, str>>, raw: &str) -> Option<Span> {
        let Some(value) = value else {
            return Some(Span::ABSENT);
        };
        let Cow::Borrowed(value) = value else {
            return None;
        };
        let start = (value.as_ptr() as usize).checked_sub(raw.as_ptr() as usize)?;
        let end = start.checked_add(value.len())?;
        (end <= raw.len()).then_some(Span {
            start: u32::try_from(start).ok()?,
            len: u32::try_from(value.len()).ok()?,
        })
    }

    fn get<'a>(self, raw: &'a str) -> Option<Cow<'a, str>> {
        if self.start == u32::MAX {
            return None;
        }
        let start = self.start as usize;
        raw.get(start..start + self.len as usize).map(Cow::Borrowed)
    }
}

impl BriefAt {
    /// Where the text fields of a brief lie in `raw`, given the numbers already read. `texts`
    /// are, in order: `email`, `customcampaign`, `CustomID`, `error_related_to`, `error` and
    /// `smtp_reply`, each as the wire parse borrowed it from `raw`.
    pub(super) fn locate(
        kind: EventKind,
        time: Option<i64>,
        message_id: MessageId,
        campaign_id: u64,
        hard_bounce: Option<bool>,
        texts: [Option<&Cow<'_, str>>; 6],
        raw: &str,
    ) -> Option<BriefAt> {
        let [
            email,
            custom_campaign,
            custom_id,
            error_related_to,
            error,
            smtp_reply,
        ] = texts;
        Some(BriefAt {
            kind,
            hard_bounce,
            time,
            message_id,
            campaign_id,
            email: Span::of(email, raw)?,
            custom_campaign: Span::of(custom_campaign, raw)?,
            custom_id: Span::of(custom_id, raw)?,
            error_related_to: Span::of(error_related_to, raw)?,
            error: Span::of(error, raw)?,
            smtp_reply: Span::of(smtp_reply, raw)?,
        })
    }

    /// The brief again, borrowing from `raw`, the same text it was located in.
    pub fn brief(self, raw: &str) -> Brief<'_> {
        Brief {
            kind: self.kind,
            time: self.time,
            message_id: self.message_id,
            email: self.email.get(raw).unwrap_or_default(),
            campaign_id: self.campaign_id,
            custom_campaign: self.custom_campaign.get(raw),
            custom_id: self.custom_id.get(raw),
            hard_bounce: self.hard_bounce,
            error_related_to: self.error_related_to.get(raw),
            error: self.error.get(raw),
            smtp_reply: self.smtp_reply.get(raw),
        }
    }
}

/// A brief that owns its strings, for tests that build events from literals.
#[cfg(test)]
pub fn owned_brief(json: &str) -> Brief<'static> {
    let own = |v: Option<Cow<'_, str>>| v.map(|v| Cow::Owned(v.into_owned()));
    let b = parse_brief(json).expect("a valid event");
    Brief {
        kind: b.kind,
        time: b.time,
        message_id: b.message_id,
        email: Cow::Owned(b.email.into_owned()),
        campaign_id: b.campaign_id,
        custom_campaign: own(b.custom_campaign),
        custom_id: own(b.custom_id),
        hard_bounce: b.hard_bounce,
        error_related_to: own(b.error_related_to),
        error: own(b.error),
        smtp_reply: own(b.smtp_reply),
    }
}

impl Event {
    /// This event's [`Brief`], borrowing its strings.
    pub fn brief(&self) -> Brief<'_> {
        fn borrow(v: &Option<String>) -> Option<Cow<'_, str>> {
            v.as_deref().map(Cow::Borrowed)
        }
        Brief {
            kind: self.kind,
            time: self.time,
            message_id: self.message_id,
            email: Cow::Borrowed(&self.email),
            campaign_id: self.campaign_id,
            custom_campaign: borrow(&self.custom_campaign),
            custom_id: borrow(&self.custom_id),
            hard_bounce: self.hard_bounce,
            error_related_to: borrow(&self.error_related_to),
            error: borrow(&self.error),
            smtp_reply: borrow(&self.smtp_reply),
        }
    }
}

/// Parses a JSON array of stored event objects (a journal chunk) into briefs, in one pass.
pub fn parse_brief_array(text: &str) -> Result<Vec<Brief<'_>>, String> {
    serde_json::from_str::<Vec<WireBrief>>(text)
        .map(|wires| wires.into_iter().map(WireBrief::into_brief).collect())
        .map_err(reject)
}

/// Parses one stored event object into its brief.
pub fn parse_brief(text: &str) -> Result<Brief<'_>, String> {
    serde_json::from_str::<WireBrief>(text)
        .map(WireBrief::into_brief)
        .map_err(reject)
}

/// The subset of the wire format a [`Brief`] reads; every other key is skipped unread.
#[derive(Deserialize)]
struct WireBrief<'a> {
    #[serde(borrow)]
    event: Cow<'a, str>,
    #[serde(default, deserialize_with = "int_i64")]
    time: Option<i64>,
    #[serde(rename = "MessageID", default, deserialize_with = "int_u64")]
    message_id: Option<u64>,
    #[serde(default, deserialize_with = "int_u64")]
    mj_message_id: Option<u64>,
    #[serde(borrow, default, deserialize_with = "text")]
    email: Option<Cow<'a, str>>,
    #[serde(default, deserialize_with = "int_u64")]
    mj_campaign_id: Option<u64>,
    #[serde(borrow, default, deserialize_with = "text")]
    customcampaign: Option<Cow<'a, str>>,
    #[serde(rename = "CustomID", borrow, default, deserialize_with = "text")]
    custom_id: Option<Cow<'a, str>>,
    #[serde(default, deserialize_with = "boolean")]
    hard_bounce: Option<bool>,
    #[serde(borrow, default, deserialize_with = "text")]
    error_related_to: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "text")]
    error: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "text")]
    smtp_reply: Option<Cow<'a, str>>,
}

impl<'a> WireBrief<'a> {
    fn into_brief(self) -> Brief<'a> {
        Brief {
            kind: EventKind::from_name(&self.event),
            time: self.time,
            message_id: MessageId(self.message_id.or(self.mj_message_id).unwrap_or(0)),
            email: self.email.unwrap_or_default(),
            campaign_id: self.mj_campaign_id.unwrap_or(0),
            custom_campaign: self.customcampaign,
            custom_id: self.custom_id,
            hard_bounce: self.hard_bounce,
            error_related_to: self.error_related_to,
            error: self.error,
            smtp_reply: self.smtp_reply,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::parse_event;

    /// Every fixture the receiver accepts gives the same brief whether it is parsed directly or
    /// taken from the full event: the two parsers cannot drift apart.
    #[test]
    fn a_brief_says_what_the_full_event_says_for_every_fixture() {
        let events = crate::event::fixture_events();
        for (path, raw) in &events {
            let event = parse_event(raw).unwrap();
            let brief = parse_brief(raw).unwrap();
            assert_eq!(brief, event.brief(), "{}", path.display());
            let array = format!("[{raw},{raw}]");
            let both = parse_brief_array(&array).unwrap();
            assert_eq!(both, vec![event.brief(), event.brief()]);
        }
        assert!(
            events.len() >= 10,
            "only {} fixture events found",
            events.len()
        );
    }

    /// The brief at the receiver's positions, for each event of `body`.
    fn located(body: &str) -> Vec<(String, Option<BriefAt>)> {
        match crate::event::split_body(body.as_bytes()) {
            crate::event::SplitBody::Items(items) => items
                .into_iter()
                .filter_map(|item| match item {
                    crate::event::BodyItem::Event { raw, brief, .. } => {
                        Some((raw.to_string(), brief))
                    }
                    crate::event::BodyItem::Invalid { .. } => None,
                })
                .collect(),
            other => panic!("{other:?}"),
        }
    }

    /// What the journal's readers rebuild from the receiver's positions is what they would have
    /// parsed, for every fixture; and most fixtures need no parse at all.
    #[test]
    fn a_brief_rebuilt_from_its_positions_is_the_parsed_brief_for_every_fixture() {
        let (mut events, mut rebuilt) = (0, 0);
        for path in crate::event::fixture_files() {
            let body = std::fs::read_to_string(&path).unwrap();
            if !matches!(
                crate::event::split_body(body.as_bytes()),
                crate::event::SplitBody::Items(_)
            ) {
                continue;
            }
            for (raw, at) in located(&body) {
                events += 1;
                if let Some(at) = at {
                    rebuilt += 1;
                    assert_eq!(
                        at.brief(&raw),
                        parse_brief(&raw).unwrap(),
                        "{}",
                        path.display()
                    );
                }
            }
        }
        assert!(events >= 10, "only {events} fixture events found");
        assert!(rebuilt * 2 > events, "{rebuilt} of {events} located");
    }

    #[test]
    fn strings_the_parse_had_to_change_are_not_located() {
        for body in [
            // An escape: the string read is not the bytes stored.
            r#"{"event":"open","email":"a\u0040example.com"}"#,
            r#"{"event":"bounce","error":"a \"quoted\" reason"}"#,
            // A number kept as text.
            r#"{"event":"open","CustomID":42}"#,
            r#"{"event":"open","customcampaign":true}"#,
        ] {
            let [(raw, at)] = &located(body)[..] else {
                panic!("{body}")
            };
            assert_eq!(*at, None, "{raw}");
        }
        let body = r#"{"event":"bounce","time":"1700000100","MessageID":19421777835146490,"email":"a@b.c","mj_campaign_id":"7","customcampaign":"=?utf-8?Q?caf=C3=A9?=","CustomID":"","hard_bounce":"true","error_related_to":"recipient","error":"user unknown","smtp_reply":null,"geo":"US"}"#;
        let [(raw, Some(at))] = &located(body)[..] else {
            panic!("not located: {body}")
        };
        let brief = at.brief(raw);
        assert_eq!(brief, parse_brief(raw).unwrap());
        assert_eq!(brief.email, "a@b.c");
        assert_eq!(brief.custom_id.as_deref(), Some(""));
        assert_eq!(brief.smtp_reply, None);
        assert_eq!(brief.message_id, MessageId(19_421_777_835_146_490));
        assert_eq!(brief.campaign_id, 7);
        assert_eq!(brief.hard_bounce, Some(true));
    }

    #[test]
    fn drifted_types_read_as_in_the_full_event() {
        let raw = r#"{"event":"bounce","time":"1700000100","hard_bounce":"true","mj_campaign_id":"","mj_message_id":"19421777835146490","email":null,"CustomID":42,"customcampaign":"=?utf-8?Q?caf=C3=A9?=","geo":"US","extra":{"nested":[1,2]}}"#;
        let brief = parse_brief(raw).unwrap();
        assert_eq!(brief, parse_event(raw).unwrap().brief());
        assert_eq!(brief.time, Some(1_700_000_100));
        assert_eq!(brief.hard_bounce, Some(true));
        assert_eq!(brief.message_id, MessageId(19_421_777_835_146_490));
        assert_eq!(brief.custom_id.as_deref(), Some("42"));
        assert_eq!(brief.custom_campaign_decoded().as_deref(), Some("café"));
    }
}
