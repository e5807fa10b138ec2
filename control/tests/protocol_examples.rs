//! Keeps the "Control protocol" section of docs/PROTOCOL.md honest: every `json-example` block
//! decodes into a valid message and re-encodes to the same JSON, every message type has an
//! example, and the reject code table lists exactly the codes the code knows.

use std::collections::BTreeSet;

use lanparty_control::codec::{Decoder, HEADER_LEN, MAX_FRAME_LEN, encode};
use lanparty_control::msg::{Message, RejectCode};

fn control_section() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/PROTOCOL.md");
    let doc = std::fs::read_to_string(path).expect("reading docs/PROTOCOL.md");
    let start = doc
        .find("\n## Control protocol\n")
        .expect("docs/PROTOCOL.md has a '## Control protocol' section");
    let rest = &doc[start + 1..];
    // The section runs to the next level-2 heading.
    let end = rest[3..].find("\n## ").map_or(rest.len(), |i| i + 3);
    rest[..end].to_owned()
}

fn json_examples(section: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in section.lines() {
        match (&mut current, line.trim_end()) {
            (None, "```json-example") => current = Some(String::new()),
            (Some(_), "```") => blocks.push(current.take().unwrap_or_default()),
            (Some(block), text) => {
                block.push_str(text);
                block.push('\n');
            }
            (None, _) => {}
        }
    }
    assert!(current.is_none(), "unterminated json-example block");
    blocks
}

/// Frames `json` and runs it through a fresh decoder, as the relay would.
fn decode(json: &str) -> Message {
    let body = json.as_bytes();
    assert!(body.len() <= MAX_FRAME_LEN);
    let mut bytes = (body.len() as u32).to_be_bytes().to_vec();
    bytes.extend_from_slice(body);
    let mut decoder = Decoder::new();
    assert_eq!(decoder.push(&bytes), bytes.len());
    let msg = decoder
        .poll()
        .unwrap_or_else(|e| panic!("example does not decode: {e}\n{json}"))
        .unwrap_or_else(|| panic!("example is incomplete\n{json}"));
    assert_eq!(decoder.buffered(), 0);
    msg
}

#[test]
fn every_json_example_decodes_validates_and_round_trips() {
    let section = control_section();
    let examples = json_examples(&section);
    assert!(!examples.is_empty(), "no json-example blocks found");
    let mut seen = BTreeSet::new();
    for json in &examples {
        let msg = decode(json);
        msg.validate()
            .unwrap_or_else(|e| panic!("example is invalid: {e}\n{json}"));
        let encoded = encode(&msg).expect("encoding an example");
        let again: serde_json::Value = serde_json::from_slice(&encoded[HEADER_LEN..]).unwrap();
        let original: serde_json::Value = serde_json::from_str(json).unwrap();
        assert_eq!(again, original, "re-encoding changed the example\n{json}");
        seen.insert(msg.type_name());
    }
    let missing: Vec<_> = Message::TYPES
        .into_iter()
        .filter(|t| !seen.contains(t))
        .collect();
    assert!(missing.is_empty(), "no json-example for {missing:?}");
}

#[test]
fn reject_code_table_lists_every_code() {
    let section = control_section();
    let table = &section[section.find("### Reject codes").expect("reject code table")..];
    let documented: BTreeSet<&str> = table
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split('`').next())
        .collect();
    let known: BTreeSet<&str> = RejectCode::ALL
        .into_iter()
        .map(RejectCode::as_str)
        .collect();
    assert_eq!(documented, known);
}

#[test]
fn documented_frame_limit_matches_the_code() {
    let section = control_section();
    assert!(section.contains(&format!("at most {MAX_FRAME_LEN} (`MAX_FRAME_LEN`")));
}
