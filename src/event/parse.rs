//! Tolerant parsing of webhook bodies: Version 1 objects, Version 2 arrays, `[]` and empty.
//!
//! The promise: every byte that arrives either becomes an [`Event`] or comes back as a
//! [`BodyItem::Invalid`] carrying its raw text and a reason, so the caller can quarantine it.
//! Nothing is dropped here. Integers are read as exact `u64`/`i64` and never through a float.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};
use serde_json::value::RawValue;

use super::{BriefAt, Event, EventKind, MessageId, decode_rfc2047};

/// What one webhook body turned into.
#[derive(Debug)]
pub enum SplitBody<'a> {
    /// No bytes, or only whitespace: the Mailjet UI's test button. Answered 200, nothing stored.
    Empty,
    /// A v1 object or the elements of a v2 array, in order. `[]` gives an empty list.
    Items(Vec<BodyItem<'a>>),
    /// Not JSON at all, or JSON that is neither an object nor an array. The whole body is
    /// quarantined with this reason.
    Invalid(String),
}

/// One element of a body.
#[derive(Debug)]
pub enum BodyItem<'a> {
    /// A valid event: what the receiver needs to store and count it, and its exact text.
    Event {
        kind: EventKind,
        dedup_key: crate::event::DedupKey,
        raw: &'a str,
        /// Where its brief lies in `raw`, for the readers of the newest events; `None` when a
        /// string needed unescaping.
        brief: Option<BriefAt>,
    },
    Invalid {
        raw: &'a str,
        reason: String,
    },
}

/// Splits and parses a body. Whatever the Content-Type said, the bytes are read as JSON.
pub fn split_body(body: &[u8]) -> SplitBody<'_> {
    let text = match std::str::from_utf8(body) {
        Ok(t) => t,
        Err(e) => return SplitBody::Invalid(format!("body is not UTF-8: {e}")),
    };
    // A byte order mark, which some proxies and editors put before JSON, is no reason to
    // quarantine a body that is otherwise a good event.
    let text = text.strip_prefix('\u{FEFF}').unwrap_or(text);
    let trimmed = text.trim_matches(|c: char| c.is_ascii_whitespace());
    if trimmed.is_empty() {
        return SplitBody::Empty;
    }
    match trimmed.as_bytes()[0] {
        // A Version 2 array of good events is parsed once, element by element. Anything else
        // in an array (an element that is no event, or JSON that is not valid) takes the
        // careful path, which reads the array first and then each element.
        b'[' => match events_in_one_pass(trimmed) {
            Some(items) => SplitBody::Items(items),
            None => array_carefully(trimmed),
        },
        // A Version 1 object is parsed once, as the event it should be. Only when that fails
        // is it read again, to tell JSON that is not an event from bytes that are not JSON.
        // (A separate validity pass first cost as much as a fifth of a request's parsing.)
        b'{' => match parse_object(trimmed) {
            Ok(item) => SplitBody::Items(vec![item]),
            Err(e) => SplitBody::Invalid(format!("body is not valid JSON: {e}")),
        },
        _ => match serde_json::from_str::<&RawValue>(trimmed) {
            Ok(_) => SplitBody::Invalid(
                "body is JSON but neither an event object nor an array of events".to_string(),
            ),
            Err(e) => SplitBody::Invalid(format!("body is not valid JSON: {e}")),
        },
    }
}

/// How many elements of one array that are not events get a quarantine row each. Past this,
/// the rest share one row: a 32 MiB array of sixteen million `0`s made sixteen million rows,
/// 3.4 GB of journal, 6 GB of memory and a log line each.
pub const MAX_INVALID_ELEMENTS: usize = 100;

/// An array read the careful way: the whole array is checked as JSON, and each element gets
/// its own answer, up to [`MAX_INVALID_ELEMENTS`] elements that are no events; the rest of
/// those come back as one [`BodyItem::Invalid`] that spans them. Elements are handled as they
/// are read, so memory follows the events, not the elements.
fn array_carefully(text: &str) -> SplitBody<'_> {
    struct Elements<'a> {
        text: &'a str,
    }
    impl<'de> Visitor<'de> for Elements<'de> {
        type Value = Vec<BodyItem<'de>>;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an array")
        }

        fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut items = Vec::new();
            let mut invalid = 0usize;
            // The elements past the limit: how many, the first one's reason, and the span of
            // the body from the first to the last of them.
            let mut rest: Option<(usize, String, usize, usize)> = None;
            while let Some(raw) = seq.next_element::<&'de RawValue>()? {
                let item = parse_item(raw);
                let BodyItem::Invalid { raw, reason } = item else {
                    items.push(item);
                    continue;
                };
                invalid += 1;
                if invalid <= MAX_INVALID_ELEMENTS {
                    items.push(BodyItem::Invalid { raw, reason });
                    continue;
                }
                let start = raw.as_ptr() as usize - self.text.as_ptr() as usize;
                let end = start + raw.len();
                match &mut rest {
                    Some((n, _, _, last)) => {
                        *n += 1;
                        *last = end;
                    }
                    None => rest = Some((1, reason, start, end)),
                }
            }
            if let Some((n, first_reason, start, end)) = rest {
                items.push(BodyItem::Invalid {
                    raw: &self.text[start..end],
                    reason: format!(
                        "{n} more array elements are not events (past the first \
                         {MAX_INVALID_ELEMENTS}, quarantined one by one); this holds the body \
                         from the first of them to the last, events between them included \
                         (those are stored too); the first one's reason: {first_reason}"
                    ),
                });
            }
            Ok(items)
        }
    }
    let mut de = serde_json::Deserializer::from_str(text);
    let items = de::Deserializer::deserialize_seq(&mut de, Elements { text })
        .and_then(|items| de.end().map(|()| items));
    match items {
        Ok(items) => SplitBody::Items(items),
        Err(e) => SplitBody::Invalid(format!("body is not valid JSON: {e}")),
    }
}

/// Parses one event object's text, as stored in the journal.
pub fn parse_event(text: &str) -> Result<Event, String> {
    serde_json::from_str::<Wire>(text)
        .map(Wire::into_event)
        .map_err(reject)
}

/// Parses a JSON array of event objects in one pass, as stored in a journal chunk.
pub fn parse_event_array(text: &str) -> Result<Vec<Event>, String> {
    serde_json::from_str::<Vec<Wire>>(text)
        .map(|wires| wires.into_iter().map(Wire::into_event).collect())
        .map_err(reject)
}

pub(super) fn reject(e: serde_json::Error) -> String {
    format!("event object rejected: {e}")
}

fn parse_item(raw: &RawValue) -> BodyItem<'_> {
    let text = raw.get();
    if !text.starts_with('{') {
        return BodyItem::Invalid {
            raw: text,
            reason: "array element is not an event object".to_string(),
        };
    }
    match parse_wire(text) {
        Ok(item) => item,
        Err(e) => BodyItem::Invalid {
            raw: text,
            reason: reject(e),
        },
    }
}

/// The events of an array whose every element is an acceptable event, each parsed once, with
/// the exact text of each as its raw; `None` as soon as anything else turns up, so that the
/// caller reads the array the careful way and gives the same answer it always gave. `text`
/// starts with `[` and has no whitespace around it.
fn events_in_one_pass(text: &str) -> Option<Vec<BodyItem<'_>>> {
    // JSON's whitespace, which is narrower than Rust's.
    let skip_ws = |at: usize| {
        at + text[at..]
            .bytes()
            .take_while(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
            .count()
    };
    let mut items = Vec::new();
    let mut at = skip_ws(1);
    if text.as_bytes().get(at) == Some(&b']') {
        return (at + 1 == text.len()).then_some(items);
    }
    loop {
        let rest = &text[at..];
        if !rest.starts_with('{') {
            return None;
        }
        // An object ends itself: the stream stops right after its `}` and leaves the `,` or `]`.
        let mut stream = serde_json::Deserializer::from_str(rest).into_iter::<Wire>();
        let wire = stream.next()?.ok()?;
        let raw = &rest[..stream.byte_offset()];
        items.push(wire.item(raw));
        at = skip_ws(at + raw.len());
        match text.as_bytes().get(at) {
            Some(b',') => at = skip_ws(at + 1),
            Some(b']') if at + 1 == text.len() => return Some(items),
            _ => return None,
        }
    }
}

/// A whole body that starts with `{`. `Err` only when `text` is not JSON at all; JSON that is
/// not an acceptable event comes back as [`BodyItem::Invalid`], as an array element would.
fn parse_object(text: &str) -> Result<BodyItem<'_>, serde_json::Error> {
    match parse_wire(text) {
        Ok(item) => Ok(item),
        Err(e) => {
            serde_json::from_str::<&RawValue>(text)?;
            Ok(BodyItem::Invalid {
                raw: text,
                reason: reject(e),
            })
        }
    }
}

/// The same full, typed parse as `parse_event`, so exactly the same objects are accepted, but
/// borrowing its strings: the receiver keeps only the kind and the dedup key. `text` must be
/// one JSON value with no whitespace around it, so that it is also the event's raw text.
fn parse_wire(text: &str) -> Result<BodyItem<'_>, serde_json::Error> {
    Ok(serde_json::from_str::<Wire>(text)?.item(text))
}

/// The payload as Mailjet spells it. Every field but `event` is optional, and every non-string
/// field goes through a tolerant reader.
#[derive(Deserialize)]
struct Wire<'a> {
    #[serde(borrow)]
    event: Cow<'a, str>,
    #[serde(default, deserialize_with = "int_i64")]
    time: Option<i64>,
    #[serde(rename = "MessageID", default, deserialize_with = "int_u64")]
    message_id: Option<u64>,
    /// Deprecated string copy of `MessageID`; used only when `MessageID` is absent.
    #[serde(default, deserialize_with = "int_u64")]
    mj_message_id: Option<u64>,
    #[serde(rename = "Message_GUID", borrow, default, deserialize_with = "text")]
    message_guid: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "text")]
    email: Option<Cow<'a, str>>,
    #[serde(default, deserialize_with = "int_u64")]
    mj_campaign_id: Option<u64>,
    #[serde(default, deserialize_with = "int_u64")]
    mj_contact_id: Option<u64>,
    #[serde(borrow, default, deserialize_with = "text")]
    customcampaign: Option<Cow<'a, str>>,
    #[serde(rename = "CustomID", borrow, default, deserialize_with = "text")]
    custom_id: Option<Cow<'a, str>>,
    #[serde(rename = "Payload", borrow, default, deserialize_with = "text")]
    payload: Option<Cow<'a, str>>,
    #[serde(default, deserialize_with = "boolean")]
    blocked: Option<bool>,
    #[serde(default, deserialize_with = "boolean")]
    hard_bounce: Option<bool>,
    #[serde(borrow, default, deserialize_with = "text")]
    error_related_to: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "text")]
    error: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "text")]
    comment: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "text")]
    smtp_reply: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "text")]
    url: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "text")]
    ip: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "text")]
    geo: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "text")]
    agent: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "text")]
    source: Option<Cow<'a, str>>,
    #[serde(default, deserialize_with = "int_u64")]
    mj_list_id: Option<u64>,
}

impl<'a> Wire<'a> {
    /// What the receiver keeps of an accepted event whose exact text is `raw`.
    fn item(&self, raw: &'a str) -> BodyItem<'a> {
        let kind = EventKind::from_name(&self.event);
        BodyItem::Event {
            kind,
            dedup_key: self.dedup_key(),
            raw,
            brief: BriefAt::locate(
                kind,
                self.time,
                self.message_id(),
                self.mj_campaign_id.unwrap_or(0),
                self.hard_bounce,
                [
                    self.email.as_ref(),
                    self.customcampaign.as_ref(),
                    self.custom_id.as_ref(),
                    self.error_related_to.as_ref(),
                    self.error.as_ref(),
                    self.smtp_reply.as_ref(),
                ],
                raw,
            ),
        }
    }

    /// `MessageID`, or its deprecated string copy when it is absent; 0 when both are.
    fn message_id(&self) -> MessageId {
        MessageId(self.message_id.or(self.mj_message_id).unwrap_or(0))
    }

    fn dedup_key(&self) -> crate::event::DedupKey {
        super::dedup_key(
            &self.event,
            self.time,
            self.message_id().0,
            self.email.as_deref().unwrap_or(""),
            self.url.as_deref().unwrap_or(""),
        )
    }

    fn into_event(self) -> Event {
        let own = |v: Option<Cow<'_, str>>| v.map(Cow::into_owned);
        let decoded = self
            .customcampaign
            .as_deref()
            .map(|raw| decode_rfc2047(raw).into_owned());
        let message_id = self.message_id();
        Event {
            kind: EventKind::from_name(&self.event),
            event_name: self.event.into_owned(),
            time: self.time,
            message_id,
            message_guid: own(self.message_guid),
            email: own(self.email).unwrap_or_default(),
            campaign_id: self.mj_campaign_id.unwrap_or(0),
            contact_id: self.mj_contact_id.unwrap_or(0),
            custom_campaign: own(self.customcampaign),
            custom_campaign_decoded: decoded,
            custom_id: own(self.custom_id),
            payload: own(self.payload),
            blocked: self.blocked,
            hard_bounce: self.hard_bounce,
            error_related_to: own(self.error_related_to),
            error: own(self.error),
            comment: own(self.comment),
            smtp_reply: own(self.smtp_reply),
            url: own(self.url),
            ip: own(self.ip),
            geo: own(self.geo),
            agent: own(self.agent),
            source: own(self.source),
            list_id: self.mj_list_id,
        }
    }
}

/// The part every tolerant reader shares: `null` (and an absent value) means absent, and a
/// present value is read by the visitor's own methods.
macro_rules! null_is_absent {
    () => {
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_any(self)
        }
    };
}

/// Reads an unsigned integer from a JSON integer or a decimal string. `""` and `null` mean
/// absent. Anything else (a word, a negative number, a fraction) is an error that names it.
pub(super) fn int_u64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    d.deserialize_any(Int::new(
        "an unsigned integer, a decimal string, \"\" or null",
    ))
}

/// Reads a signed integer (Unix seconds) with the same tolerance as [`int_u64`].
pub(super) fn int_i64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    d.deserialize_any(Int::new(
        "Unix seconds as an integer or a decimal string, \"\" or null",
    ))
}

/// The tolerant integer reader behind [`int_u64`] and [`int_i64`]: exact, never via a float.
struct Int<T> {
    expecting: &'static str,
    target: std::marker::PhantomData<T>,
}

impl<T> Int<T> {
    fn new(expecting: &'static str) -> Int<T> {
        Int {
            expecting,
            target: std::marker::PhantomData,
        }
    }
}

impl<'de, T> Visitor<'de> for Int<T>
where
    T: TryFrom<u64> + TryFrom<i64> + std::str::FromStr,
{
    type Value = Option<T>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.expecting)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        T::try_from(v)
            .map(Some)
            .map_err(|_| E::invalid_value(de::Unexpected::Unsigned(v), &self))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        T::try_from(v)
            .map(Some)
            .map_err(|_| E::invalid_value(de::Unexpected::Signed(v), &self))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        let v = v.trim();
        if v.is_empty() {
            return Ok(None);
        }
        v.parse()
            .map(Some)
            .map_err(|_| E::invalid_value(de::Unexpected::Str(v), &self))
    }
    null_is_absent!();
}

/// Reads a boolean from `true`/`false`, `"true"`/`"false"`, `1`/`0` (number or string).
/// `""` and `null` mean absent.
pub(super) fn boolean<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Option<bool>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a boolean, \"true\"/\"false\", 0/1, \"\" or null")
        }
        fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
            Ok(Some(v))
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
            match v {
                0 => Ok(Some(false)),
                1 => Ok(Some(true)),
                _ => Err(E::invalid_value(de::Unexpected::Unsigned(v), &self)),
            }
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
            Err(E::invalid_value(de::Unexpected::Signed(v), &self))
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            match v.trim().to_ascii_lowercase().as_str() {
                "" => Ok(None),
                "true" | "1" => Ok(Some(true)),
                "false" | "0" => Ok(Some(false)),
                _ => Err(E::invalid_value(de::Unexpected::Str(v), &self)),
            }
        }
        null_is_absent!();
    }
    d.deserialize_any(V)
}

/// Reads free text, borrowing it from the body when it has no escapes. `null` means absent; a
/// number or boolean is kept as its JSON text, because a `Payload` or `CustomID` that drifted to
/// a number is still the caller's data.
pub(super) fn text<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Cow<'de, str>>, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Option<Cow<'de, str>>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a string, a number, a boolean or null")
        }
        fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
            Ok(Some(Cow::Borrowed(v)))
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok(Some(Cow::Owned(v.to_owned())))
        }
        fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
            Ok(Some(Cow::Owned(v)))
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
            Ok(Some(Cow::Owned(v.to_string())))
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
            Ok(Some(Cow::Owned(v.to_string())))
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
            Ok(Some(Cow::Owned(v.to_string())))
        }
        fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
            Ok(Some(Cow::Owned(v.to_string())))
        }
        null_is_absent!();
    }
    d.deserialize_any(V)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(body: &str) -> Result<Event, String> {
        match split_body(body.as_bytes()) {
            SplitBody::Items(mut items) if items.len() == 1 => match items.remove(0) {
                BodyItem::Event { raw, dedup_key, .. } => {
                    let event = parse_event(raw).expect("accepted items parse");
                    assert_eq!(event.dedup_key(), dedup_key, "one definition of the key");
                    Ok(event)
                }
                BodyItem::Invalid { reason, .. } => Err(reason),
            },
            other => panic!("expected one item, got {other:?}"),
        }
    }

    #[test]
    fn ids_above_2_pow_53_stay_exact() {
        let e =
            one(r#"{"event":"sent","MessageID":1152921505370435123,"mj_campaign_id":5591678702}"#)
                .unwrap();
        assert_eq!(e.message_id, MessageId(1_152_921_505_370_435_123));
        assert_eq!(e.campaign_id, 5_591_678_702);
        let max = one(r#"{"event":"sent","MessageID":18446744073709551615}"#).unwrap();
        assert_eq!(max.message_id.0, u64::MAX);
    }

    #[test]
    fn drifted_types_are_absorbed() {
        let e = one(
            r#"{"event":"bounce","time":"1700000100","blocked":"true","hard_bounce":"","mj_list_id":"","MessageID":null,"email":null,"Payload":42}"#,
        )
        .unwrap();
        assert_eq!(e.time, Some(1_700_000_100));
        assert_eq!(e.blocked, Some(true));
        assert_eq!(e.hard_bounce, None);
        assert_eq!(e.list_id, None);
        assert_eq!(e.message_id.0, 0);
        assert_eq!(e.email, "");
        assert_eq!(e.payload.as_deref(), Some("42"));
    }

    #[test]
    fn mj_message_id_fills_in_for_a_missing_message_id() {
        let e = one(r#"{"event":"sent","mj_message_id":"19421777835146490"}"#).unwrap();
        assert_eq!(e.message_id.0, 19_421_777_835_146_490);
    }

    #[test]
    fn wrong_types_are_rejected_with_the_reason() {
        let reason = one(r#"{"event":"open","time":"yesterday","MessageID":"abc"}"#).unwrap_err();
        assert!(reason.contains("yesterday"), "{reason}");
        let reason = one(r#"{"time":1}"#).unwrap_err();
        assert!(reason.contains("missing field `event`"), "{reason}");
        let reason = one(r#"{"event":"open","MessageID":1.5}"#).unwrap_err();
        assert!(reason.contains("1.5"), "{reason}");
    }

    #[test]
    fn unknown_types_are_kept() {
        let e = one(r#"{"event":"typofix","time":1}"#).unwrap();
        assert_eq!(e.kind, EventKind::Unknown);
        assert_eq!(e.event_name, "typofix");
    }

    #[test]
    fn a_byte_order_mark_before_the_json_is_skipped() {
        let e = one("\u{FEFF}{\"event\":\"sent\",\"MessageID\":7}").unwrap();
        assert_eq!(e.message_id.0, 7);
        match split_body("\u{FEFF}[{\"event\":\"open\"}]".as_bytes()) {
            SplitBody::Items(items) => {
                assert!(matches!(
                    items[..],
                    [BodyItem::Event {
                        raw: r#"{"event":"open"}"#,
                        ..
                    }]
                ))
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            split_body("\u{FEFF}".as_bytes()),
            SplitBody::Empty
        ));
    }

    #[test]
    fn bodies_split_by_shape() {
        assert!(matches!(split_body(b""), SplitBody::Empty));
        assert!(matches!(split_body(b" \r\n"), SplitBody::Empty));
        assert!(matches!(split_body(b"[]"), SplitBody::Items(v) if v.is_empty()));
        assert!(matches!(split_body(b"42"), SplitBody::Invalid(r) if r.contains("neither")));
        assert!(
            matches!(split_body(b"event=open"), SplitBody::Invalid(r) if r.contains("not valid JSON"))
        );
        assert!(matches!(split_body(b"{\"event\":"), SplitBody::Invalid(_)));
        assert!(matches!(split_body(&[0xff, 0xfe]), SplitBody::Invalid(r) if r.contains("UTF-8")));
        match split_body(br#"[{"event":"sent"}, 7, {"nope":1}]"#) {
            SplitBody::Items(items) => {
                assert!(matches!(
                    items[0],
                    BodyItem::Event {
                        raw: r#"{"event":"sent"}"#,
                        ..
                    }
                ));
                assert!(matches!(items[1], BodyItem::Invalid { raw: "7", .. }));
                assert!(matches!(
                    items[2],
                    BodyItem::Invalid {
                        raw: r#"{"nope":1}"#,
                        ..
                    }
                ));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_version_1_object_that_is_json_but_no_event_is_its_own_invalid_item() {
        // Not an event: the body splits into one invalid item with the parser's reason.
        match split_body(b" {\"nope\":1}\n") {
            SplitBody::Items(items) => match &items[..] {
                [BodyItem::Invalid { raw, reason }] => {
                    assert_eq!(*raw, r#"{"nope":1}"#);
                    assert!(reason.contains("missing field `event`"), "{reason}");
                }
                other => panic!("{other:?}"),
            },
            other => panic!("{other:?}"),
        }
        // Not JSON after the object: the whole body is invalid, as bytes that are not JSON.
        for body in [&br#"{"event":"open"} x"#[..], br#"{"event":"open"}{"a":1}"#] {
            assert!(
                matches!(split_body(body), SplitBody::Invalid(r) if r.contains("not valid JSON")),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        // An accepted object's raw text is the object, without the whitespace around it.
        match split_body(b"\t{\"event\":\"open\"} \r\n") {
            SplitBody::Items(items) => {
                assert!(matches!(
                    items[..],
                    [BodyItem::Event {
                        raw: r#"{"event":"open"}"#,
                        kind: EventKind::Open,
                        ..
                    }]
                ));
            }
            other => panic!("{other:?}"),
        }
    }

    /// Past [`MAX_INVALID_ELEMENTS`] elements that are no events, the rest share one item that
    /// spans them; the events among them are still events.
    #[test]
    fn elements_that_are_no_events_past_the_limit_share_one_item() {
        let mut elements: Vec<String> = (0..MAX_INVALID_ELEMENTS + 150)
            .map(|i| i.to_string())
            .collect();
        elements.insert(3, r#"{"event":"sent","MessageID":1}"#.into());
        elements.insert(200, r#"{"event":"open","MessageID":2}"#.into());
        let body = format!("[{}]", elements.join(","));
        let SplitBody::Items(items) = split_body(body.as_bytes()) else {
            panic!("not items");
        };
        let events = items
            .iter()
            .filter(|i| matches!(i, BodyItem::Event { .. }))
            .count();
        let invalid: Vec<(&str, &str)> = items
            .iter()
            .filter_map(|i| match i {
                BodyItem::Invalid { raw, reason } => Some((*raw, reason.as_str())),
                _ => None,
            })
            .collect();
        assert_eq!(events, 2);
        assert_eq!(invalid.len(), MAX_INVALID_ELEMENTS + 1);
        assert_eq!(invalid[0], ("0", "array element is not an event object"));
        let (raw, reason) = invalid[MAX_INVALID_ELEMENTS];
        assert!(reason.starts_with("150 more array elements"), "{reason}");
        // The span runs from the 101st bad element to the last, the open event included.
        let first = MAX_INVALID_ELEMENTS.to_string();
        let last = (MAX_INVALID_ELEMENTS + 149).to_string();
        assert!(raw.starts_with(&format!("{first},")), "{raw}");
        assert!(raw.ends_with(&format!(",{last}")), "{raw}");
        assert!(raw.contains(r#"{"event":"open","MessageID":2}"#));
        // Not JSON after all: the whole body, as before.
        let broken = format!("{},", &body[..body.len() - 1]);
        assert!(matches!(
            split_body(broken.as_bytes()),
            SplitBody::Invalid(_)
        ));
    }

    /// What the careful path (the whole array, then each element) makes of an array body.
    fn careful(text: &str) -> String {
        format!("{:?}", array_carefully(text))
    }

    #[test]
    fn an_array_of_good_events_is_read_in_one_pass_with_the_same_result() {
        let mut good = vec![
            r#"[{"event":"sent","MessageID":1},{"event":"open","time":2,"url":"a]b,c}"}]"#
                .to_string(),
            " [ {\"event\":\"x\",\"a\":[1,{\"b\":\"]\"}]} ,\r\n\t{\"event\":\"sent\\\"\"} ] "
                .to_string(),
        ];
        let mut other = vec![
            r#"[{"event":"sent"},]"#.to_string(),
            r#"[{"event":"sent"}]]"#.to_string(),
            r#"[{"event":"sent"} {"event":"open"}]"#.to_string(),
            r#"[{"event":"sent"},7,{"nope":1}]"#.to_string(),
            r#"[{"event":"sent"},{"time":"soon","event":"open"}]"#.to_string(),
            r#"[{"event":"sent"},{"event":"open""#.to_string(),
            "[\u{c}{\"event\":\"sent\"}]".to_string(),
        ];
        // Every fixture event, alone and twice with whitespace between; every fixture body.
        for path in crate::event::fixture_files() {
            let body = String::from_utf8(std::fs::read(&path).unwrap()).unwrap();
            let trimmed = body.trim_matches(|c: char| c.is_ascii_whitespace());
            if trimmed.starts_with('{') && parse_wire(trimmed).is_ok() {
                good.push(format!("[{trimmed}]"));
                good.push(format!("[ {trimmed} ,\n{trimmed}\t]"));
            }
            if trimmed.starts_with('[') {
                other.push(trimmed.to_string());
            }
        }
        assert!(good.len() > 20, "only {} good arrays", good.len());
        for body in good.iter().chain(&other) {
            let text = body.trim_matches(|c: char| c.is_ascii_whitespace());
            let fast = events_in_one_pass(text);
            if good.contains(body) {
                assert!(fast.is_some(), "not read in one pass: {body}");
            }
            if let Some(items) = fast {
                assert_eq!(
                    format!("{:?}", SplitBody::Items(items)),
                    careful(text),
                    "{body}"
                );
            }
            let split = format!("{:?}", split_body(body.as_bytes()));
            assert_eq!(split, careful(text), "{body}");
        }
    }

    #[test]
    fn dedup_key_ignores_fields_outside_the_identity() {
        let a =
            one(r#"{"event":"open","time":1,"MessageID":2,"email":"a@b","agent":"x"}"#).unwrap();
        let b =
            one(r#"{"agent":"y","email":"a@b","MessageID":2,"time":1,"event":"open"}"#).unwrap();
        let c = one(r#"{"event":"open","time":2,"MessageID":2,"email":"a@b"}"#).unwrap();
        assert_eq!(a.dedup_key(), b.dedup_key());
        assert_ne!(a.dedup_key(), c.dedup_key());
        // The time leads the key, then the message, so keys of one second sort together and,
        // within it, by MessageID.
        assert_eq!(&c.dedup_key()[..4], &2u32.to_be_bytes());
        assert_eq!(&c.dedup_key()[4..12], &2u64.to_be_bytes());
        let later = one(r#"{"event":"open","time":2,"MessageID":3,"email":"a@b"}"#).unwrap();
        let next_second = one(r#"{"event":"open","time":3,"MessageID":1,"email":"a@b"}"#).unwrap();
        assert!(c.dedup_key() < later.dedup_key());
        assert!(later.dedup_key() < next_second.dedup_key());
    }
}
