//! The overlay test vectors of docs/PROTOCOL.md ("## Overlay datagrams", blocks tagged
//! `vector`) against the code, so the document cannot drift from it. The line syntax is
//! described in the document, under "Test vectors".

use std::time::Instant;

use bytes::{Bytes, BytesMut};
use lanparty_datapath::budget::Budget;
use lanparty_datapath::frag::{Fragmenter, Reassembler, ReassemblyConfig};
use lanparty_datapath::wire::overlay::{Datagram, Error, Header};

/// At least: whole frame, fragment 0, last fragment, bad version, bad numbering, truncated.
const MIN_VECTORS: usize = 6;

#[derive(Debug, Default)]
struct Vector {
    name: String,
    datagrams: Vec<Vec<u8>>,
    header: Option<String>,
    payload: Option<Vec<u8>>,
    error: Option<String>,
    frames: Vec<Vec<u8>>,
    budget: Option<usize>,
    origin: Option<u16>,
    frame_id: Option<u16>,
}

fn overlay_section(doc: &str) -> &str {
    let start = doc
        .find("\n## Overlay datagrams")
        .expect("PROTOCOL.md has an overlay section");
    let rest = &doc[start + 1..];
    let end = rest[3..].find("\n## ").map_or(rest.len(), |i| i + 3);
    &rest[..end]
}

fn blocks(section: &str) -> Vec<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut current: Option<Vec<(String, String)>> = None;
    for line in section.lines() {
        match &mut current {
            None if line.trim() == "```vector" => current = Some(Vec::new()),
            None => {}
            Some(fields) if line.trim() == "```" => {
                out.push(std::mem::take(fields));
                current = None;
            }
            Some(fields) if line.starts_with([' ', '\t']) => {
                let (_, value) = fields.last_mut().expect("continuation line after a key");
                value.push(' ');
                value.push_str(line.trim());
            }
            Some(fields) => {
                let (key, value) = line
                    .split_once(':')
                    .unwrap_or_else(|| panic!("vector line without a key: {line:?}"));
                fields.push((key.trim().to_owned(), value.trim().to_owned()));
            }
        }
    }
    assert!(current.is_none(), "unterminated vector block");
    out
}

fn unhex(s: &str) -> Vec<u8> {
    let digits: String = s.split_whitespace().collect();
    hex::decode(&digits).unwrap_or_else(|e| panic!("bad hex {s:?}: {e}"))
}

fn parse(fields: Vec<(String, String)>) -> Vector {
    let mut v = Vector::default();
    for (key, value) in fields {
        match key.as_str() {
            "name" => v.name = value,
            "datagram" => v.datagrams.push(unhex(&value)),
            "header" => v.header = Some(value),
            "payload" => v.payload = Some(unhex(&value)),
            "error" => v.error = Some(value),
            "frame" => v.frames.push(unhex(&value)),
            "budget" => v.budget = Some(value.parse().expect("budget is a number")),
            "origin" => v.origin = Some(hex_u16(&key, &value)),
            "frame_id" => v.frame_id = Some(hex_u16(&key, &value)),
            other => panic!("unknown vector key {other:?}"),
        }
    }
    assert!(!v.name.is_empty(), "vector without a name: {v:?}");
    v
}

fn hex_u16(key: &str, value: &str) -> u16 {
    let hex = value
        .strip_prefix("0x")
        .unwrap_or_else(|| panic!("{key} is 0x-prefixed hex"));
    u16::from_str_radix(hex, 16).unwrap_or_else(|e| panic!("{key} is a u16: {e}"))
}

/// Reads `key=value` pairs with numbers in decimal or 0x-hex.
fn field(spec: &str, key: &str) -> u16 {
    let value = spec
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("{key}= missing in {spec:?}"));
    match value.strip_prefix("0x") {
        Some(hex) => u16::from_str_radix(hex, 16).expect("hex number"),
        None => value.parse().expect("decimal number"),
    }
}

fn parse_header(spec: &str) -> Header {
    if spec == "whole" {
        return Header::Whole;
    }
    assert!(spec.starts_with("fragment "), "unknown header {spec:?}");
    Header::Fragment {
        origin: field(spec, "origin"),
        frame_id: field(spec, "frame_id"),
        index: field(spec, "index") as u8,
        count: field(spec, "count") as u8,
        total_len: field(spec, "total_len"),
    }
}

fn describe(err: Error) -> String {
    match err {
        Error::Truncated { need, have } => format!("truncated need={need} have={have}"),
        Error::VersionMismatch { theirs, .. } => format!("version-mismatch theirs={theirs}"),
        Error::UnknownKind(kind) => format!("unknown-kind {kind:#x}"),
        Error::BadFragment { index, count } => format!("bad-fragment index={index} count={count}"),
        Error::Empty => "empty".to_owned(),
        other => panic!("no vector syntax for {other:?}"),
    }
}

fn check_decoding(v: &Vector) {
    let [datagram] = &v.datagrams[..] else {
        panic!("{}: a decoding vector has one datagram", v.name);
    };
    match (&v.error, &v.header, &v.payload) {
        (Some(error), None, None) => {
            let err = Datagram::new_checked(&datagram[..]).expect_err(&v.name);
            assert_eq!(&describe(err), error, "{}", v.name);
        }
        (None, Some(header), Some(payload)) => {
            let d =
                Datagram::new_checked(&datagram[..]).unwrap_or_else(|e| panic!("{}: {e}", v.name));
            let header = parse_header(header);
            assert_eq!(d.header(), header, "{}", v.name);
            assert_eq!(d.payload(), &payload[..], "{}", v.name);
            let mut encoded = vec![0; header.len()];
            header.emit(&mut encoded);
            encoded.extend_from_slice(payload);
            assert_eq!(&encoded, datagram, "{}: re-encoding", v.name);
        }
        _ => panic!("{}: give either error, or header and payload", v.name),
    }
}

/// Feeds the datagrams, in order, to one reassembler as if they all came in on one
/// connection; they must yield the frames in order, the last one on the last datagram.
fn check_reassembly(v: &Vector) {
    let mut r = Reassembler::new(ReassemblyConfig::default());
    let now = Instant::now();
    let mut done = Vec::new();
    for (i, d) in v.datagrams.iter().enumerate() {
        if let Some(frame) = r.handle_fragment(now, 0u8, Bytes::copy_from_slice(d)) {
            done.push((i, frame.to_vec()));
        }
    }
    let frames: Vec<_> = done.iter().map(|(_, f)| f.clone()).collect();
    assert_eq!(frames, v.frames, "{}: reassembled frames", v.name);
    assert_eq!(
        done.last().map(|(i, _)| i + 1),
        Some(v.datagrams.len()),
        "{}: the last frame completes on the last datagram",
        v.name
    );
    assert_eq!(r.counters().completed, v.frames.len() as u64, "{}", v.name);
    assert_eq!(r.counters().malformed, 0, "{}", v.name);
}

fn check_fragmenter(v: &Vector, frame: &[u8], budget: usize) {
    let origin = v.origin.expect("budget: needs origin:");
    let frame_id = v.frame_id.expect("budget: needs frame_id:");
    let mut f = Fragmenter::with_first_id(origin, frame_id);
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let budget = Budget::new(budget).expect("a valid budget");
    f.fragment(frame, budget, &mut buf, |d| out.push(d.to_vec()))
        .unwrap_or_else(|e| panic!("{}: {e}", v.name));
    assert_eq!(out, v.datagrams, "{}: fragmenter output", v.name);
}

#[test]
fn overlay_vectors_match_the_code() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/PROTOCOL.md");
    let doc = std::fs::read_to_string(path).expect("read docs/PROTOCOL.md");
    let vectors: Vec<Vector> = blocks(overlay_section(&doc))
        .into_iter()
        .map(parse)
        .collect();
    assert!(
        vectors.len() >= MIN_VECTORS,
        "only {} overlay vectors in PROTOCOL.md",
        vectors.len()
    );
    let (mut decoding, mut reassembly, mut fragmenter, mut interleaved) = (0, 0, 0, 0);
    for v in &vectors {
        match (&v.frames[..], v.budget) {
            ([], _) => {
                check_decoding(v);
                decoding += 1;
            }
            (frames, budget) => {
                check_reassembly(v);
                reassembly += 1;
                if frames.len() > 1 {
                    interleaved += 1;
                }
                if let Some(budget) = budget {
                    let [frame] = frames else {
                        panic!("{}: a fragmenter vector has one frame", v.name);
                    };
                    check_fragmenter(v, frame, budget);
                    fragmenter += 1;
                }
            }
        }
    }
    assert!(decoding >= MIN_VECTORS, "{decoding} decoding vectors");
    assert!(reassembly >= 1 && fragmenter >= 1);
    assert!(interleaved >= 1, "no vector interleaves two origins");
}

#[test]
fn the_vector_syntax_rejects_what_it_does_not_know() {
    let doc = "# x\n## Overlay datagrams\n```vector\nname: x\ndatagram: 10\n  aa bb\n```\n\
               ## Control protocol\n```vector\nname: control\n```\n";
    let blocks = blocks(overlay_section(doc));
    assert_eq!(blocks.len(), 1, "vectors of other sections are not read");
    let v = parse(blocks.into_iter().next().unwrap());
    assert_eq!(v.datagrams, vec![vec![0x10, 0xaa, 0xbb]]);
    let unknown = std::panic::catch_unwind(|| parse(vec![("colour".into(), "red".into())]));
    assert!(unknown.is_err());
}
