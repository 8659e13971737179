//! RFC 2047 "encoded words" in `customcampaign` (`=?utf-8?Q?Soldes_d=C3=A9t=C3=A9?=`).
//!
//! Decoding is best effort and never fails: a word in a charset we do not know, or one that is
//! malformed, is left exactly as it came, and the raw value is always stored beside this form.

use std::borrow::Cow;

use base64::Engine;

/// Decodes every encoded word in `input`. Whitespace between two adjacent encoded words is
/// dropped, as RFC 2047 section 6.2 requires. Returns the input unchanged when it holds none.
pub fn decode(input: &str) -> Cow<'_, str> {
    if !input.contains("=?") {
        return Cow::Borrowed(input);
    }
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    let mut last_was_word = false;
    while let Some(start) = rest.find("=?") {
        let (before, candidate) = rest.split_at(start);
        match decode_word(candidate) {
            Some((decoded, used)) => {
                if !(last_was_word && before.chars().all(char::is_whitespace)) {
                    out.push_str(before);
                }
                out.push_str(&decoded);
                rest = &candidate[used..];
                last_was_word = true;
            }
            None => {
                out.push_str(before);
                out.push_str("=?");
                rest = &candidate[2..];
                last_was_word = false;
            }
        }
    }
    out.push_str(rest);
    Cow::Owned(out)
}

/// Decodes one `=?charset?enc?text?=` at the start of `s`; returns the text and bytes used.
fn decode_word(s: &str) -> Option<(String, usize)> {
    let body = s.strip_prefix("=?")?;
    let (charset, body) = body.split_once('?')?;
    let (encoding, body) = body.split_once('?')?;
    let end = body.find("?=")?;
    let text = &body[..end];
    if text.contains(char::is_whitespace) {
        return None;
    }
    let used = 2 + charset.len() + 1 + encoding.len() + 1 + end + 2;
    let bytes = match encoding {
        "Q" | "q" => q_decode(text)?,
        "B" | "b" => base64::engine::general_purpose::STANDARD
            .decode(text)
            .ok()?,
        _ => return None,
    };
    // RFC 2231 allows a language suffix: `utf-8*fr`.
    let charset = charset.split('*').next().unwrap_or("").to_ascii_lowercase();
    let decoded = match charset.as_str() {
        "utf-8" | "utf8" | "us-ascii" => String::from_utf8(bytes).ok()?,
        "iso-8859-1" | "latin1" => bytes.iter().map(|&b| char::from(b)).collect(),
        _ => return None,
    };
    Some((decoded, used))
}

fn q_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len());
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'_' => out.push(b' '),
            b'=' => {
                let hex = text.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::decode;

    #[test]
    fn q_and_b_words_decode() {
        assert_eq!(decode("=?utf-8?Q?Soldes_d=C3=A9t=C3=A9?="), "Soldes dété");
        assert_eq!(decode("=?UTF-8?B?U29sZGVzIMOpdMOp?="), "Soldes été");
        assert_eq!(decode("=?iso-8859-1?Q?caf=E9?="), "café");
    }

    #[test]
    fn adjacent_words_join_and_plain_text_stays() {
        assert_eq!(decode("=?utf-8?Q?a?= =?utf-8?Q?b?="), "ab");
        assert_eq!(decode("x =?utf-8?Q?a?= y"), "x a y");
        assert_eq!(decode("spring-sale"), "spring-sale");
    }

    #[test]
    fn malformed_or_unknown_words_are_left_as_they_came() {
        assert_eq!(decode("=?koi8-r?Q?abc?="), "=?koi8-r?Q?abc?=");
        assert_eq!(decode("=?utf-8?Q?bad=ZZ?="), "=?utf-8?Q?bad=ZZ?=");
        assert_eq!(decode("a =? b"), "a =? b");
    }
}
