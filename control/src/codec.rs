//! Length-prefixed framing of control messages.
//!
//! ```text
//!  0                   4
//! +-------------------+------------------------------------+
//! | length (u32, BE)  | UTF-8 JSON object, `length` bytes  |
//! +-------------------+------------------------------------+
//! ```
//!
//! The prefix is four bytes, big-endian, although [`MAX_FRAME_LEN`] fits in two: the limit can
//! grow later without changing the framing. `length` counts the body only, must be at least 1
//! and at most [`MAX_FRAME_LEN`]. The body is one message ([`crate::msg`]).
//!
//! # Decoder
//!
//! [`Decoder`] is incremental and sans-IO: feed it stream bytes in any pieces with
//! [`Decoder::push`], take messages out with [`Decoder::poll`]. It never holds more than
//! [`MAX_BUFFER`] bytes (one header plus one maximum body): `push` takes only what fits and
//! says how much it took. A length prefix above the limit is refused as soon as its four bytes
//! are in, before any of the body arrives.
//!
//! **After an error the decoder is poisoned**: the byte stream has lost its framing (or the
//! peer is broken), so `poll` returns [`DecodeError::Poisoned`] and `push` takes nothing from
//! then on. The caller closes the stream, after sending a [`crate::msg::Reject`] built with
//! [`DecodeError::to_reject`] when the error happened during the handshake.
//!
//! No call panics, whatever the input.

use serde::Deserialize;

use crate::msg::{self, Message, PROTOCOL_VERSION, Reject, RejectCode, ValidationError};

/// Bytes in the length prefix.
pub const HEADER_LEN: usize = 4;
/// Largest body (JSON) of one frame, in bytes.
pub const MAX_FRAME_LEN: usize = 16 * 1024;
/// Most bytes a [`Decoder`] buffers.
pub const MAX_BUFFER: usize = HEADER_LEN + MAX_FRAME_LEN;

/// Why a message cannot be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// The JSON is longer than [`MAX_FRAME_LEN`].
    #[error("control message is {len} bytes, more than the {max}-byte limit")]
    TooLong {
        /// Body length.
        len: usize,
        /// [`MAX_FRAME_LEN`].
        max: usize,
    },
    /// serde_json refused the message (cannot happen for [`Message`]; kept so no call panics).
    #[error("control message cannot be serialized: {0}")]
    Serialize(String),
}

/// Appends one frame holding `msg` to `out`. On error `out` is left as it was.
///
/// # Errors
///
/// [`EncodeError::TooLong`] when the JSON exceeds [`MAX_FRAME_LEN`].
pub fn encode_into(msg: &Message, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    let start = out.len();
    out.extend_from_slice(&[0; HEADER_LEN]);
    if let Err(e) = serde_json::to_writer(&mut *out, msg) {
        out.truncate(start);
        return Err(EncodeError::Serialize(e.to_string()));
    }
    let len = out.len() - start - HEADER_LEN;
    if len > MAX_FRAME_LEN {
        out.truncate(start);
        return Err(EncodeError::TooLong {
            len,
            max: MAX_FRAME_LEN,
        });
    }
    // len <= MAX_FRAME_LEN, which fits a u32.
    out[start..start + HEADER_LEN].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(())
}

/// One frame holding `msg`.
///
/// # Errors
///
/// As [`encode_into`].
pub fn encode(msg: &Message) -> Result<Vec<u8>, EncodeError> {
    let mut out = Vec::with_capacity(256);
    encode_into(msg, &mut out)?;
    Ok(out)
}

/// Why the control stream cannot be decoded. Every variant poisons the [`Decoder`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The length prefix is above [`MAX_FRAME_LEN`].
    #[error("control frame of {len} bytes exceeds the {max}-byte limit")]
    TooLong {
        /// The announced length.
        len: u32,
        /// [`MAX_FRAME_LEN`].
        max: usize,
    },
    /// A zero length prefix.
    #[error("empty control frame")]
    Empty,
    /// The body is not UTF-8.
    #[error("control frame is not UTF-8 (valid up to byte {valid_up_to})")]
    NotUtf8 {
        /// Bytes of valid UTF-8 before the first bad one.
        valid_up_to: usize,
    },
    /// The body is not well-formed JSON.
    #[error("control frame is not valid JSON: {reason}")]
    MalformedJson {
        /// serde_json's description.
        reason: String,
    },
    /// The body is JSON but its `"type"` is missing or names no message this version knows.
    #[error("unknown control message type {0:?}")]
    UnknownType(String),
    /// A hello or welcome for another protocol version (checked before its other fields,
    /// which that version may lay out differently).
    #[error("protocol version {theirs} is not supported: this side speaks version {ours}")]
    UnsupportedVersion {
        /// [`PROTOCOL_VERSION`].
        ours: u16,
        /// The message's version.
        theirs: u64,
    },
    /// A known message with a missing field or a field of the wrong JSON type.
    #[error("malformed {kind} message: {reason}")]
    Schema {
        /// The message's `"type"`.
        kind: &'static str,
        /// serde_json's description.
        reason: String,
    },
    /// A field value breaks a protocol rule.
    #[error("invalid {kind} message: {source}")]
    Invalid {
        /// The message's `"type"`.
        kind: &'static str,
        /// The rule.
        source: ValidationError,
    },
    /// An earlier call failed; the stream is unusable.
    #[error("control stream already failed")]
    Poisoned,
}

impl DecodeError {
    /// The reject code the relay answers with when a hello fails this way.
    pub fn reject_code(&self) -> RejectCode {
        match self {
            Self::UnsupportedVersion { .. } => RejectCode::BadVersion,
            Self::Invalid { source, .. } => source.reject_code(),
            _ => RejectCode::BadHello,
        }
    }

    /// The reject the relay sends when the hello fails this way; the reason is this error's
    /// text (which never contains a secret).
    pub fn to_reject(&self) -> Reject {
        Reject::new(self.reject_code(), self.to_string())
    }
}

/// Just enough of a message to name its type and version when the full parse fails.
#[derive(Deserialize)]
struct Probe {
    #[serde(rename = "type")]
    kind: Option<String>,
    version: Option<u64>,
}

fn known_type(name: &str) -> Option<&'static str> {
    Message::TYPES.into_iter().find(|t| *t == name)
}

fn versioned(kind: &str) -> bool {
    kind == "hello" || kind == "welcome"
}

/// Decodes one frame body into a valid message.
///
/// # Errors
///
/// Any [`DecodeError`] except `TooLong`, `Empty` and `Poisoned`.
pub fn decode_body(body: &[u8]) -> Result<Message, DecodeError> {
    let text = std::str::from_utf8(body).map_err(|e| DecodeError::NotUtf8 {
        valid_up_to: e.valid_up_to(),
    })?;
    let raw: msg::raw::RawMessage = match serde_json::from_str(text) {
        Ok(raw) => raw,
        Err(e) if e.classify() == serde_json::error::Category::Data => {
            return Err(explain_data_error(text, e));
        }
        Err(e) => {
            return Err(DecodeError::MalformedJson {
                reason: e.to_string(),
            });
        }
    };
    let version = match &raw {
        msg::raw::RawMessage::Hello(h) => Some(h.version),
        msg::raw::RawMessage::Welcome(w) => Some(w.version),
        _ => None,
    };
    if let Some(v) = version.filter(|v| *v != PROTOCOL_VERSION) {
        return Err(DecodeError::UnsupportedVersion {
            ours: PROTOCOL_VERSION,
            theirs: v.into(),
        });
    }
    let msg = Message::try_from(raw).map_err(|source| DecodeError::Invalid {
        kind: type_of(text),
        source,
    })?;
    msg.validate().map_err(|source| DecodeError::Invalid {
        kind: msg.type_name(),
        source,
    })?;
    Ok(msg)
}

fn type_of(text: &str) -> &'static str {
    serde_json::from_str::<Probe>(text)
        .ok()
        .and_then(|p| p.kind)
        .and_then(|k| known_type(&k))
        .unwrap_or("unknown")
}

/// Well-formed JSON that did not fit the schema: say whether the type is unknown, the
/// version is foreign, or a field is wrong.
fn explain_data_error(text: &str, e: serde_json::Error) -> DecodeError {
    let Ok(probe) = serde_json::from_str::<Probe>(text) else {
        // Not even an object with a string "type" (an array, a number, "type": 5, ...).
        return DecodeError::Schema {
            kind: "unknown",
            reason: redacted(text, e.to_string()),
        };
    };
    let Some(kind) = probe.kind.as_deref().and_then(known_type) else {
        return DecodeError::UnknownType(probe.kind.unwrap_or_default().chars().take(64).collect());
    };
    match probe.version {
        Some(v) if versioned(kind) && v != u64::from(PROTOCOL_VERSION) => {
            DecodeError::UnsupportedVersion {
                ours: PROTOCOL_VERSION,
                theirs: v,
            }
        }
        _ => DecodeError::Schema {
            kind,
            reason: redacted(text, e.to_string()),
        },
    }
}

/// serde_json quotes the offending value in some errors ("invalid type: integer `1234`"); a
/// secret of the wrong JSON type must not reach the reason, which gets logged and sent.
fn redacted(text: &str, mut reason: String) -> String {
    let Ok(serde_json::Value::Object(fields)) = serde_json::from_str::<serde_json::Value>(text)
    else {
        return reason;
    };
    for key in ["secret", "gateway_token"] {
        let shown = match fields.get(key) {
            None | Some(serde_json::Value::Null) => continue,
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
        };
        if !shown.is_empty() && reason.contains(&shown) {
            reason = reason.replace(&shown, "<redacted>");
        }
    }
    reason
}

/// Incremental decoder of a control stream. See the [module docs](self).
#[derive(Debug, Default)]
pub struct Decoder {
    buf: Vec<u8>,
    poisoned: bool,
}

impl Decoder {
    /// An empty decoder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes as many of `bytes` as fit in the buffer ([`MAX_BUFFER`] in all) and returns how
    /// many it took. Call [`Decoder::poll`] until it returns `Ok(None)`, then push the rest.
    /// Takes nothing once poisoned.
    pub fn push(&mut self, bytes: &[u8]) -> usize {
        if self.poisoned {
            return 0;
        }
        let room = MAX_BUFFER - self.buf.len();
        let n = bytes.len().min(room);
        self.buf.extend_from_slice(&bytes[..n]);
        n
    }

    /// The next complete message, `Ok(None)` when more bytes are needed.
    ///
    /// # Errors
    ///
    /// A [`DecodeError`]; the decoder is poisoned from then on.
    pub fn poll(&mut self) -> Result<Option<Message>, DecodeError> {
        if self.poisoned {
            return Err(DecodeError::Poisoned);
        }
        let result = self.poll_inner();
        if result.is_err() {
            self.poisoned = true;
            self.buf = Vec::new();
        }
        result
    }

    fn poll_inner(&mut self) -> Result<Option<Message>, DecodeError> {
        let Some(header) = self.buf.first_chunk::<HEADER_LEN>() else {
            return Ok(None);
        };
        let len = u32::from_be_bytes(*header);
        if len == 0 {
            return Err(DecodeError::Empty);
        }
        if len as usize > MAX_FRAME_LEN {
            return Err(DecodeError::TooLong {
                len,
                max: MAX_FRAME_LEN,
            });
        }
        let end = HEADER_LEN + len as usize;
        if self.buf.len() < end {
            return Ok(None);
        }
        let msg = decode_body(&self.buf[HEADER_LEN..end])?;
        self.buf.drain(..end);
        Ok(Some(msg))
    }

    /// Bytes buffered and not yet decoded.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// True after an error.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::msg::{Disconnect, Stats};

    fn frame(body: &[u8]) -> Vec<u8> {
        let mut v = (body.len() as u32).to_be_bytes().to_vec();
        v.extend_from_slice(body);
        v
    }

    fn decode_one(body: &str) -> Result<Option<Message>, DecodeError> {
        let mut d = Decoder::new();
        assert_eq!(d.push(&frame(body.as_bytes())), body.len() + HEADER_LEN);
        d.poll()
    }

    const HELLO: &str = r#"{"type":"hello","version":1,"role":"client","room":"lan-party",
        "mac":"02:00:00:00:00:01","secret":"correct horse","datagram_budget":1200,"name":"ann"}"#;

    #[test]
    fn encodes_a_big_endian_length_prefix() {
        let msg = Message::Disconnect(Disconnect {
            reason: "bye".into(),
        });
        let bytes = encode(&msg).unwrap();
        let body = br#"{"type":"disconnect","reason":"bye"}"#;
        assert_eq!(&bytes[..4], &(body.len() as u32).to_be_bytes());
        assert_eq!(&bytes[4..], body);
    }

    #[test]
    fn decodes_byte_by_byte() {
        let msgs = [
            Message::Stats(Stats::default()),
            Message::Disconnect(Disconnect { reason: "x".into() }),
        ];
        let mut stream = Vec::new();
        for m in &msgs {
            encode_into(m, &mut stream).unwrap();
        }
        let mut d = Decoder::new();
        let mut out = Vec::new();
        for b in &stream {
            assert_eq!(d.push(std::slice::from_ref(b)), 1);
            while let Some(m) = d.poll().unwrap() {
                out.push(m);
            }
        }
        assert_eq!(out, msgs);
        assert_eq!(d.buffered(), 0);
    }

    #[test]
    fn oversize_prefix_is_refused_before_the_body_arrives() {
        let mut d = Decoder::new();
        d.push(&((MAX_FRAME_LEN + 1) as u32).to_be_bytes());
        assert_eq!(
            d.poll(),
            Err(DecodeError::TooLong {
                len: MAX_FRAME_LEN as u32 + 1,
                max: MAX_FRAME_LEN
            })
        );
        assert_eq!(d.poll(), Err(DecodeError::Poisoned));
        assert_eq!(d.push(b"more"), 0);
        assert!(d.is_poisoned());
    }

    #[test]
    fn push_never_buffers_past_one_frame_and_header() {
        let mut d = Decoder::new();
        let big = vec![b' '; 3 * MAX_BUFFER];
        assert_eq!(d.push(&big), MAX_BUFFER);
        assert_eq!(d.push(&big), 0);
        assert_eq!(d.buffered(), MAX_BUFFER);
    }

    #[test]
    fn a_maximum_size_frame_decodes() {
        // Pad a valid message with whitespace up to exactly MAX_FRAME_LEN.
        let mut body = br#"{"type":"disconnect","reason":"full"}"#.to_vec();
        body.resize(MAX_FRAME_LEN, b' ');
        let bytes = frame(&body);
        let mut d = Decoder::new();
        assert_eq!(d.push(&bytes), MAX_BUFFER);
        assert!(matches!(d.poll(), Ok(Some(Message::Disconnect(_)))));
    }

    #[test]
    fn encode_refuses_oversize_messages() {
        let msg = Message::Disconnect(Disconnect {
            reason: "x".repeat(MAX_FRAME_LEN),
        });
        let mut out = vec![9];
        assert!(matches!(
            encode_into(&msg, &mut out),
            Err(EncodeError::TooLong { .. })
        ));
        assert_eq!(out, [9]);
    }

    #[test]
    fn empty_frame_is_an_error() {
        assert_eq!(decode_one(""), Err(DecodeError::Empty));
    }

    #[test]
    fn malformed_json_is_an_error() {
        assert!(matches!(
            decode_one(r#"{"type":"hello","#),
            Err(DecodeError::MalformedJson { .. })
        ));
        let mut d = Decoder::new();
        d.push(&frame(&[0x7b, 0xff, 0x7d]));
        assert_eq!(d.poll(), Err(DecodeError::NotUtf8 { valid_up_to: 1 }));
    }

    #[test]
    fn unknown_message_types_are_an_error() {
        assert_eq!(
            decode_one(r#"{"type":"teleport","to":"mars"}"#),
            Err(DecodeError::UnknownType("teleport".into()))
        );
        assert_eq!(
            decode_one(r#"{"reason":"no type"}"#),
            Err(DecodeError::UnknownType(String::new()))
        );
        assert!(matches!(
            decode_one("[1,2,3]"),
            Err(DecodeError::Schema { .. })
        ));
    }

    #[test]
    fn unknown_fields_are_ignored() {
        let with_extra = HELLO.replace(r#""name":"ann""#, r#""name":"ann","features":["x"]"#);
        assert!(with_extra.contains("features"));
        let msg = decode_one(&with_extra).unwrap().unwrap();
        assert_eq!(msg, decode_one(HELLO).unwrap().unwrap());
    }

    #[test]
    fn foreign_versions_are_reported_even_when_fields_differ() {
        let v2 = HELLO.replace(r#""version":1"#, r#""version":2"#);
        let err = decode_one(&v2).unwrap_err();
        assert_eq!(err, DecodeError::UnsupportedVersion { ours: 1, theirs: 2 });
        assert_eq!(err.to_reject().code, RejectCode::BadVersion);
        assert!(err.to_reject().reason.contains("version 2"));
        assert!(err.to_reject().reason.contains("version 1"));
        // A version-9 hello that no longer has a "room" field is still a version problem.
        let v9 = r#"{"type":"hello","version":9,"rooms":["a"]}"#;
        assert_eq!(
            decode_one(v9),
            Err(DecodeError::UnsupportedVersion { ours: 1, theirs: 9 })
        );
    }

    #[test]
    fn missing_fields_are_schema_errors() {
        let err = decode_one(r#"{"type":"hello","version":1,"role":"client"}"#).unwrap_err();
        assert!(
            matches!(err, DecodeError::Schema { kind: "hello", .. }),
            "{err}"
        );
        assert_eq!(err.reject_code(), RejectCode::BadHello);
    }

    #[test]
    fn invalid_field_values_are_typed() {
        let cases = [
            (
                r#""room":"lan-party""#,
                r#""room":"a b""#,
                RejectCode::BadRoomCode,
            ),
            (
                r#""mac":"02:00:00:00:00:01""#,
                r#""mac":"ff:ff:ff:ff:ff:ff""#,
                RejectCode::BadMac,
            ),
            (
                r#""mac":"02:00:00:00:00:01""#,
                r#""mac":"nonsense""#,
                RejectCode::BadMac,
            ),
            (
                r#""secret":"correct horse""#,
                r#""secret":"short""#,
                RejectCode::BadSecret,
            ),
            (r#""name":"ann""#, r#""name":"""#, RejectCode::BadHello),
            (
                r#""datagram_budget":1200"#,
                r#""datagram_budget":1099"#,
                RejectCode::BudgetTooSmall,
            ),
        ];
        for (from, to, code) in cases {
            let body = HELLO.replace(from, to);
            assert_ne!(body, HELLO);
            let err = decode_one(&body).unwrap_err();
            assert!(
                matches!(err, DecodeError::Invalid { kind: "hello", .. }),
                "{err}"
            );
            assert_eq!(err.reject_code(), code, "{err}");
        }
    }

    #[test]
    fn schema_errors_never_quote_a_secret_of_the_wrong_type() {
        for (from, to) in [
            (r#""secret":"correct horse""#, r#""secret":987654321"#),
            (r#""secret":"correct horse""#, r#""secret":["hush-hush-1"]"#),
            (
                r#""name":"ann""#,
                r#""name":"ann","gateway_token":123456789"#,
            ),
        ] {
            let body = HELLO.replace(from, to);
            assert_ne!(body, HELLO);
            let err = decode_one(&body).unwrap_err();
            assert!(matches!(err, DecodeError::Schema { .. }), "{err}");
            let text = err.to_string();
            for leak in ["987654321", "hush-hush-1", "123456789"] {
                assert!(!text.contains(leak), "{text}");
            }
        }
    }

    #[test]
    fn reject_reasons_never_contain_the_secret() {
        let body = HELLO.replace(r#""mac":"02:00:00:00:00:01""#, r#""mac":"zz""#);
        let err = decode_one(&body).unwrap_err();
        assert!(!err.to_reject().reason.contains("correct horse"));
    }
}

#[cfg(test)]
mod proptests;
