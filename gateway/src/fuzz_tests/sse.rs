//! The SSE parser every upstream stream goes through ([`SseParser`]; OpenAI, Anthropic and Gemini
//! upstreams alike) on any byte stream: it never panics, the events do not depend on how the
//! bytes were cut into chunks, well-formed streams give exactly the events they carry (CRLF,
//! comments, `event:`/`id:` lines, multi-line `data:`, no trailing blank line, invalid UTF-8 in
//! a payload; fault catalogue rows 7 and 18), and a line longer than [`MAX_LINE`] is refused.

use proptest::prelude::*;

use super::{bytes, config};
use adapters::sse::{LineTooLong, MAX_LINE, SseEvent, SseParser};

/// The events of `chunks` fed one after the other, as the relays read them.
fn events<'a>(chunks: impl IntoIterator<Item = &'a [u8]>) -> Result<Vec<SseEvent>, LineTooLong> {
    let mut p = SseParser::default();
    let mut out = Vec::new();
    for c in chunks {
        p.push(c);
        while let Some(e) = p.next_event()? {
            out.push(e);
        }
    }
    out.extend(p.finish());
    Ok(out)
}

/// `stream` cut at `cuts` (indices into it, in any order).
fn chunked(stream: &[u8], cuts: &[prop::sample::Index]) -> Vec<Vec<u8>> {
    let mut at: Vec<usize> = cuts.iter().map(|i| i.index(stream.len() + 1)).collect();
    at.sort_unstable();
    at.dedup();
    let mut out = Vec::new();
    let mut start = 0;
    for end in at.into_iter().chain([stream.len()]) {
        out.push(stream[start..end].to_vec());
        start = end;
    }
    out
}

/// A payload byte string: anything but line breaks, often JSON-ish, sometimes not UTF-8.
fn payload() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>().prop_filter("no line break", |b| *b != b'\n' && *b != b'\r'), 0..24),
        Just(b"[DONE]".to_vec()),
        Just(br#"{"choices":[{"delta":{"content":"hi"}}]}"#.to_vec()),
        Just(b" leading space".to_vec()),
    ]
}

/// A line that is not data: a comment, a field the parser ignores, or noise.
fn other_line() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(b": ping".to_vec()),
        Just(b":".to_vec()),
        Just(b"event: message_start".to_vec()),
        Just(b"id: 7".to_vec()),
        Just(b"retry: 10".to_vec()),
        Just(b"datum: not data".to_vec()),
    ]
}

/// One event as written: its `data:` lines (with or without the space), other lines mixed in,
/// each line ended by LF or CRLF, then the blank line. Returns the bytes and the expected data.
fn event() -> impl Strategy<Value = (Vec<u8>, Vec<u8>)> {
    let line = (any::<bool>(), payload(), proptest::option::weighted(0.3, other_line()));
    (proptest::collection::vec(line, 1..4), any::<bool>(), any::<bool>()).prop_map(|(lines, crlf, space)| {
        let eol: &[u8] = if crlf { b"\r\n" } else { b"\n" };
        let (mut bytes, mut data) = (Vec::new(), Vec::<u8>::new());
        for (i, (spaced, payload, other)) in lines.into_iter().enumerate() {
            if let Some(o) = other {
                bytes.extend(&o);
                bytes.extend(eol);
            }
            bytes.extend(if spaced || space { &b"data: "[..] } else { &b"data:"[..] });
            bytes.extend(&payload);
            bytes.extend(eol);
            if i > 0 {
                data.push(b'\n');
            }
            // One space after the colon is the separator; a second one is data.
            let shown = if spaced || space { &payload[..] } else { payload.strip_prefix(b" ").unwrap_or(&payload) };
            data.extend(shown);
        }
        bytes.extend(eol);
        (bytes, data)
    })
}

fn expected(data: Vec<u8>) -> SseEvent {
    if data == b"[DONE]" { SseEvent::Done } else { SseEvent::Data(data.into()) }
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn fuzz_sse_events_do_not_depend_on_the_chunking_of_arbitrary_bytes(stream in bytes(600),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..40)) {
        let whole = events([&stream[..]]);
        let parts = chunked(&stream, &cuts);
        prop_assert_eq!(events(parts.iter().map(Vec::as_slice)), whole);
    }

    #[test]
    fn fuzz_sse_well_formed_streams_give_their_events_whatever_the_chunking(
            written in proptest::collection::vec(event(), 0..6),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..40),
            drop_last_blank in any::<bool>(), drop_last_eol in any::<bool>()) {
        let mut stream: Vec<u8> = written.iter().flat_map(|(b, _)| b.iter().copied()).collect();
        let data: Vec<Vec<u8>> = written.into_iter().map(|(_, d)| d).collect();
        let want = || -> Result<Vec<SseEvent>, LineTooLong> { Ok(data.iter().cloned().map(expected).collect()) };
        // A last event without its blank line (and even without its line end) still counts.
        if drop_last_blank && !data.is_empty() {
            for _ in 0..if drop_last_eol { 2 } else { 1 } {
                if stream.ends_with(b"\r\n") {
                    stream.truncate(stream.len() - 2);
                } else if stream.ends_with(b"\n") {
                    stream.pop();
                }
            }
        }
        prop_assert_eq!(events([&stream[..]]), want());
        let parts = chunked(&stream, &cuts);
        prop_assert_eq!(events(parts.iter().map(Vec::as_slice)), want());
        // Byte by byte, the worst chunking a slow upstream can produce.
        prop_assert_eq!(events(stream.chunks(1)), want());
    }
}

/// Also a regression test: the parser used to search the whole buffered line again on every
/// chunk, so an 8 MiB line in 1 KiB chunks took minutes of CPU (a slow-drip upstream's weapon).
#[test]
fn fuzz_sse_a_line_longer_than_the_cap_is_refused_whatever_the_chunking() {
    let mut line = b"data: ".to_vec();
    line.resize(MAX_LINE + 2, b'x');
    for chunk in [1 << 10, 64 << 10, MAX_LINE + 2] {
        assert_eq!(events(line.chunks(chunk)), Err(LineTooLong), "chunks of {chunk} bytes");
    }
    // Just under the cap is an ordinary event.
    let mut ok = b"data: ".to_vec();
    ok.resize(MAX_LINE - 1, b'x');
    ok.push(b'\n');
    assert_eq!(events(ok.chunks(64 << 10)).map(|e| e.len()), Ok(1));
}

/// `data:` lines without a blank line are joined into one event, which is bounded like one line:
/// an upstream cannot grow the joined data past [`MAX_LINE`] with short lines.
#[test]
fn fuzz_sse_multi_line_data_is_bounded_like_a_line() {
    let line = [b"data: ".as_slice(), &[b'x'; 1018], b"\n"].concat();
    // Each line adds its 1,018 payload bytes and one joining newline to the event.
    let lines = MAX_LINE / 1019 + 2;
    let mut p = SseParser::default();
    let mut refused = false;
    for _ in 0..lines {
        p.push(&line);
        match p.next_event() {
            Err(LineTooLong) => {
                refused = true;
                break;
            }
            Ok(e) => assert_eq!(e, None),
        }
    }
    assert!(refused, "{} bytes of data: lines were accumulated without an error", lines * line.len());
}
