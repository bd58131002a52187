//! Server-sent events from an upstream (every adapter's streams: OpenAI-compatible, Anthropic,
//! Gemini `alt=sse`), split into `data:` payloads.
//! Tolerates `: comment` lines, CRLF line endings, multi-line `data:` and a last event without
//! its blank line. Zero-copy for the usual single-line event. No JSON and no I/O here.

use bytes::{Bytes, BytesMut};

/// Longest line we buffer; a longer one is a protocol error (bounds memory on a hostile upstream).
pub const MAX_LINE: usize = 8 * 1024 * 1024;

/// One SSE event's data.
#[derive(Debug, PartialEq, Eq)]
pub enum SseEvent {
    /// A `data:` payload (JSON for OpenAI).
    Data(Bytes),
    /// `data: [DONE]`.
    Done,
}

/// Why the byte stream is not SSE.
#[derive(Debug, PartialEq, Eq)]
pub struct LineTooLong;

/// Incremental SSE parser.
#[derive(Default)]
pub struct SseParser {
    buf: BytesMut,
    data: Option<Bytes>,
    multi: Option<BytesMut>,
    /// How much of `buf` is known to hold no line end, so a long line arriving in small chunks
    /// is searched once, not once per chunk (which was quadratic in the line's length).
    scanned: usize,
}

impl SseParser {
    /// Adds bytes from the upstream.
    pub fn push(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
    }

    /// The next complete event, if any.
    pub fn next_event(&mut self) -> Result<Option<SseEvent>, LineTooLong> {
        while let Some(pos) = memchr_newline(&self.buf[self.scanned..]).map(|p| p + self.scanned) {
            self.scanned = 0;
            let mut line = self.buf.split_to(pos + 1).freeze();
            line.truncate(line.len() - 1);
            if line.last() == Some(&b'\r') {
                line.truncate(line.len() - 1);
            }
            if line.is_empty() {
                if let Some(ev) = self.dispatch() {
                    return Ok(Some(ev));
                }
                continue;
            }
            if line[0] == b':' {
                continue;
            }
            if let Some(rest) = line.strip_prefix(b"data:") {
                let start = line.len() - rest.len() + usize::from(rest.first() == Some(&b' '));
                self.add_data(line.slice(start..));
                // An event's `data:` lines are joined; the whole event is bounded like one line.
                if self.multi.as_ref().is_some_and(|m| m.len() > MAX_LINE) {
                    self.multi = None;
                    return Err(LineTooLong);
                }
            }
            // `event:`, `id:`, `retry:` carry nothing OpenAI uses.
        }
        self.scanned = self.buf.len();
        if self.buf.len() > MAX_LINE {
            return Err(LineTooLong);
        }
        Ok(None)
    }

    /// At end of input: the last event even without its blank line.
    pub fn finish(&mut self) -> Option<SseEvent> {
        if !self.buf.is_empty() {
            self.scanned = 0;
            let rest = self.buf.split().freeze();
            let rest = rest.strip_suffix(b"\r").map(Bytes::copy_from_slice).unwrap_or(rest);
            if let Some(r) = rest.strip_prefix(b"data:") {
                let r = r.strip_prefix(b" ").unwrap_or(r);
                self.add_data(Bytes::copy_from_slice(r));
            }
        }
        self.dispatch()
    }

    fn add_data(&mut self, d: Bytes) {
        if let Some(m) = &mut self.multi {
            m.extend_from_slice(b"\n");
            m.extend_from_slice(&d);
        } else if let Some(first) = self.data.take() {
            let mut m = BytesMut::with_capacity(first.len() + d.len() + 1);
            m.extend_from_slice(&first);
            m.extend_from_slice(b"\n");
            m.extend_from_slice(&d);
            self.multi = Some(m);
        } else {
            self.data = Some(d);
        }
    }

    fn dispatch(&mut self) -> Option<SseEvent> {
        let data = match self.multi.take() {
            Some(m) => m.freeze(),
            None => self.data.take()?,
        };
        if data.as_ref() == b"[DONE]" { Some(SseEvent::Done) } else { Some(SseEvent::Data(data)) }
    }
}

fn memchr_newline(b: &[u8]) -> Option<usize> {
    b.iter().position(|&c| c == b'\n')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(input: &[&[u8]]) -> Vec<SseEvent> {
        let mut p = SseParser::default();
        let mut out = Vec::new();
        for chunk in input {
            p.push(chunk);
            while let Ok(Some(e)) = p.next_event() {
                out.push(e);
            }
        }
        out.extend(p.finish());
        out
    }

    #[test]
    fn splits_events_across_chunks_with_comments_and_crlf() {
        let got = all(&[b": ping\r\n\r\ndata: {\"a\"", b":1}\r\n\r\n", b"data: [DONE]\n\n"]);
        assert_eq!(got, vec![SseEvent::Data(Bytes::from_static(b"{\"a\":1}")), SseEvent::Done]);
    }

    #[test]
    fn joins_multi_line_data_and_keeps_a_last_event_without_blank_line() {
        let got = all(&[b"data: {\"a\":\ndata: 1}\n\ndata:{\"b\":2}"]);
        assert_eq!(
            got,
            vec![SseEvent::Data(Bytes::from_static(b"{\"a\":\n1}")), SseEvent::Data(Bytes::from_static(b"{\"b\":2}"))]
        );
    }
}
