//! Bounded token counting: whatever the text, the BPE and its splitting regex only ever see short
//! pieces, and a large text costs a fixed budget of work. Only counting here; no JSON, no I/O.
//!
//! Text is cut where the tokenizer's own regex always splits (before a space that starts a word,
//! after a newline, between a letter or digit and punctuation, between letters and digits), so
//! cutting there changes no count. Where no such place comes for [`MAX_PIECE_BYTES`] (one long
//! word, a run of spaces, a long run of CJK letters) the text is cut anyway at a character
//! boundary, which may add a token per cut. Texts over [`EXACT_BUDGET_BYTES`] are counted by
//! evenly spaced samples, scaled by bytes.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, Ordering};

use tiktoken_rs::CoreBPE;

/// The longest stretch without a natural cut that reaches the BPE in one piece. BPE merging is
/// quadratic in a piece's length (one 256 KB word took 13 s of CPU) and the regex backtracks over
/// whitespace runs (1 MB of spaces overflowed its stack); no real word or CJK phrase between
/// punctuation is this long, so normal text is never cut here.
pub const MAX_PIECE_BYTES: usize = 256;
/// Bytes handed to the tokenizer per call: large enough that the per-call cost vanishes, small
/// enough that the cancellation flag is looked at every few milliseconds.
const CHUNK_BYTES: usize = 16 * 1024;
/// Texts up to this size are counted exactly; larger ones are counted by samples of this many
/// bytes in total. At tiktoken's speed this keeps any text under a tenth of a second of CPU.
pub const EXACT_BUDGET_BYTES: usize = 1 << 20;
/// How many evenly spaced windows a large text is sampled at: enough that a text made of
/// sections of different kinds (prose, code, CJK) is sampled in each section.
const SAMPLES: usize = 64;
/// The count used when the tokenizer cannot count a piece (it panicked): OpenAI's rule of thumb
/// of about four bytes of English per token, rounded up. It never makes a non-empty text free.
pub const FALLBACK_BYTES_PER_TOKEN: u64 = 4;

/// The client who asked for the count has gone; the work was stopped.
#[derive(Debug, PartialEq, Eq)]
pub struct Cancelled;

/// The token count of `text`, bounded in work whatever the text: exact up to
/// [`EXACT_BUDGET_BYTES`], sampled beyond. Never 0 for a non-empty text. Stops with [`Cancelled`]
/// as soon as `cancel` is set (checked between chunks).
pub fn count(bpe: &CoreBPE, text: &str, cancel: &AtomicBool) -> Result<u64, Cancelled> {
    count_with_budget(bpe, text, EXACT_BUDGET_BYTES, cancel)
}

/// [`count`] with the exact budget as a parameter, so tests reach the sampled path cheaply.
pub fn count_with_budget(bpe: &CoreBPE, text: &str, budget: usize, cancel: &AtomicBool) -> Result<u64, Cancelled> {
    if text.is_empty() {
        return Ok(0);
    }
    let n =
        if text.len() <= budget { count_exact(bpe, text, cancel)? } else { count_sampled(bpe, text, budget, cancel)? };
    Ok(n.max(1))
}

/// The bytes-per-token bound for `bytes` bytes, rounded up: the count when counting is impossible.
pub fn fallback(bytes: usize) -> u64 {
    (bytes as u64).div_ceil(FALLBACK_BYTES_PER_TOKEN)
}

fn count_exact(bpe: &CoreBPE, text: &str, cancel: &AtomicBool) -> Result<u64, Cancelled> {
    let mut total = 0;
    let mut start = 0;
    while start < text.len() {
        if cancel.load(Ordering::Relaxed) {
            return Err(Cancelled);
        }
        let end = next_cut(text, start);
        total += encode(bpe, &text[start..end]);
        start = end;
    }
    Ok(total)
}

/// Counts `SAMPLES` windows spread evenly over `text`, `budget` bytes in all, each starting and
/// ending at a natural cut, and scales their tokens per byte to the whole text.
fn count_sampled(bpe: &CoreBPE, text: &str, budget: usize, cancel: &AtomicBool) -> Result<u64, Cancelled> {
    let window = (budget / SAMPLES).max(1);
    let stride = text.len() / SAMPLES;
    let (mut tokens, mut bytes) = (0u64, 0u64);
    for i in 0..SAMPLES {
        let from = snap(text, i * stride + stride.saturating_sub(window) / 2);
        let to = snap(text, from + window).max(from);
        tokens += count_exact(bpe, &text[from..to], cancel)?;
        bytes += (to - from) as u64;
    }
    if bytes == 0 {
        return Ok(fallback(text.len()));
    }
    let scaled = u128::from(tokens) * text.len() as u128 / u128::from(bytes);
    Ok(u64::try_from(scaled).unwrap_or(u64::MAX))
}

/// Tokens in one bounded chunk. A panic inside the tokenizer library counts by the byte bound.
fn encode(bpe: &CoreBPE, chunk: &str) -> u64 {
    catch_unwind(AssertUnwindSafe(|| bpe.encode_ordinary(chunk).len() as u64)).unwrap_or_else(|_| {
        tracing::warn!(bytes = chunk.len(), "The tokenizer failed on a chunk; counted by bytes.");
        fallback(chunk.len())
    })
}

/// The first natural cut at or after byte `at` (rounded up to a character boundary), looking no
/// further than [`MAX_PIECE_BYTES`]; the character boundary itself when there is none.
fn snap(text: &str, at: usize) -> usize {
    let mut at = at.min(text.len());
    while !text.is_char_boundary(at) {
        at += 1;
    }
    let mut chars = text[at..].char_indices();
    let Some((_, mut prev)) = chars.next() else { return at };
    let mut cur = chars.next();
    while let Some((i, c)) = cur {
        if i > MAX_PIECE_BYTES {
            break;
        }
        let next = chars.next();
        if natural_cut(prev, c, next.map(|(_, n)| n)) {
            return at + i;
        }
        prev = c;
        cur = next;
    }
    at
}

/// Where the chunk starting at `start` ends: the first natural cut once the chunk has
/// [`CHUNK_BYTES`], or a forced cut when no natural cut has come for [`MAX_PIECE_BYTES`], or the
/// end of the text.
fn next_cut(text: &str, start: usize) -> usize {
    let mut chars = text[start..].char_indices();
    let Some((_, mut prev)) = chars.next() else { return text.len() };
    let mut last_cut = 0;
    let mut cur = chars.next();
    while let Some((i, c)) = cur {
        let next = chars.next();
        if natural_cut(prev, c, next.map(|(_, n)| n)) {
            if i >= CHUNK_BYTES {
                return start + i;
            }
            last_cut = i;
        } else if i - last_cut >= MAX_PIECE_BYTES {
            return start + i;
        }
        prev = c;
        cur = next;
    }
    text.len()
}

/// Whether the tokenizer's pre-split regex (cl100k and o200k alike) always ends a piece between
/// `prev` and `c` (`next` follows `c`), so counting both sides apart gives the same total.
fn natural_cut(prev: char, c: char, next: Option<char>) -> bool {
    // A space that starts a word: a whitespace run leaves its last space to the next piece.
    (c == ' ' && next.is_some_and(|n| !n.is_whitespace()))
        // After a newline run, before the next word or sign.
        || (prev == '\n' && !c.is_whitespace())
        // Letters and digits never share a piece with punctuation after them (apostrophes
        // excepted: contractions such as 's belong to the word in o200k).
        || (prev.is_alphanumeric() && is_punctuation(c))
        || (prev.is_alphabetic() && !prev.is_numeric() && c.is_numeric() && !c.is_alphabetic())
        || (prev.is_numeric() && !prev.is_alphabetic() && c.is_alphabetic() && !c.is_numeric())
}

/// Punctuation that always starts a new piece after a letter or digit: ASCII signs other than the
/// apostrophe, and the common CJK sentence marks and brackets.
fn is_punctuation(c: char) -> bool {
    (c.is_ascii_punctuation() && c != '\'')
        || matches!(
            c,
            '\u{3001}' | '\u{3002}' | '\u{300C}'
                ..='\u{300F}'
                    | '\u{FF01}'
                    | '\u{FF08}'
                    | '\u{FF09}'
                    | '\u{FF0C}'
                    | '\u{FF1A}'
                    | '\u{FF1B}'
                    | '\u{FF1F}'
        )
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::tokenizer::sample_text::{cjk, code, mixed, prose, thread_cpu};

    fn cl100k() -> &'static CoreBPE {
        tiktoken_rs::cl100k_base_singleton()
    }

    fn o200k() -> &'static CoreBPE {
        tiktoken_rs::o200k_base_singleton()
    }

    fn bounded(bpe: &CoreBPE, text: &str) -> u64 {
        count(bpe, text, &AtomicBool::new(false)).unwrap_or(0)
    }

    fn exact(bpe: &CoreBPE, text: &str) -> u64 {
        bpe.encode_ordinary(text).len() as u64
    }

    fn assert_within(bounded: u64, exact: u64, pct: f64, what: &str) {
        let err = (bounded as f64 - exact as f64).abs() / exact as f64 * 100.0;
        assert!(err <= pct, "{what}: bounded {bounded}, exact {exact}, off by {err:.3} %");
    }

    #[test]
    fn natural_cuts_change_no_count_on_prose_code_and_cjk() {
        for (kind, text) in [
            ("prose", prose(200_000, 1)),
            ("code", code(200_000, 2)),
            ("cjk", cjk(200_000, 3)),
            ("mixed", mixed(200_000, 4)),
        ] {
            for (name, bpe) in [("cl100k", cl100k()), ("o200k", o200k())] {
                // Normal text always has a natural cut within MAX_PIECE_BYTES: the count is exact.
                assert_eq!(bounded(bpe, &text), exact(bpe, &text), "{kind} {name}");
            }
        }
    }

    #[test]
    fn sampled_counts_are_within_one_percent_of_exact() {
        for (kind, text) in [
            ("prose", prose(1 << 20, 5)),
            ("code", code(1 << 20, 6)),
            ("cjk", cjk(1 << 20, 7)),
            ("mixed", mixed(1 << 20, 8)),
        ] {
            for (name, bpe) in [("cl100k", cl100k()), ("o200k", o200k())] {
                let sampled = count_with_budget(bpe, &text, 64 * 1024, &AtomicBool::new(false)).unwrap_or(0);
                assert_within(sampled, exact(bpe, &text), 1.0, &format!("{kind} {name}"));
            }
        }
    }

    #[test]
    fn a_long_word_and_a_long_run_of_spaces_are_counted_quickly_and_never_zero() {
        for text in [
            "a".repeat(256 * 1024),
            "x9".repeat(128 * 1024),
            " ".repeat(1 << 20),
            "\n \t".repeat(1 << 18),
            "我".repeat(100_000),
        ] {
            for bpe in [cl100k(), o200k()] {
                let started = Instant::now();
                let n = bounded(bpe, &text);
                // Unbounded, the word alone took 13 s in a release build; bounded, it is linear.
                assert!(started.elapsed() < Duration::from_secs(3), "{:?} for {} bytes", started.elapsed(), text.len());
                assert!(n >= text.len() as u64 / MAX_PIECE_BYTES as u64, "{n} for {} bytes", text.len());
            }
        }
    }

    #[test]
    fn a_non_empty_text_never_counts_zero() {
        let never = AtomicBool::new(false);
        for text in [" ", "\0", "a", "\u{FEFF}", "\u{301}"] {
            assert!(count(cl100k(), text, &never).is_ok_and(|n| n >= 1), "{text:?}");
        }
        assert_eq!(count(cl100k(), "", &never), Ok(0));
        assert_eq!(fallback(1), 1);
        assert_eq!(fallback(9), 3);
    }

    #[test]
    fn a_set_flag_stops_the_count() {
        let text = prose(4 << 20, 9);
        let cancel = AtomicBool::new(true);
        let bpe = cl100k(); // loading the tables is not counting
        let started = Instant::now();
        assert_eq!(count(bpe, &text, &cancel), Err(Cancelled));
        assert!(started.elapsed() < Duration::from_millis(100));
    }

    #[test]
    fn every_piece_is_short_even_without_natural_cuts() {
        for text in ["a".repeat(10_000), " ".repeat(10_000), "é".repeat(5_000), "\u{1F600}".repeat(3_000)] {
            let mut start = 0;
            while start < text.len() {
                let end = next_cut(&text, start);
                assert!(end > start && end - start <= MAX_PIECE_BYTES + 4, "{start}..{end}");
                start = end;
            }
        }
    }

    /// The 32 MiB figures in BENCHMARKS.md:
    /// `cargo test --release -p gateway --lib -- --ignored --nocapture thirty_two`.
    #[test]
    #[ignore = "a measurement, meaningful only in a release build"]
    fn thirty_two_mib_of_any_kind_is_counted_in_under_a_second_of_cpu() {
        const SIZE: usize = 32 << 20;
        // For comparison, the library unbounded: quadratic on one word, linear but slow on prose.
        for (kind, text) in
            [("unbounded, one 64 KiB word", "a".repeat(64 << 10)), ("unbounded, prose", prose(SIZE, 11))]
        {
            let before = thread_cpu();
            let n = exact(o200k(), &text);
            eprintln!("{kind} o200k: {} bytes -> {n} tokens in {:?} of CPU", text.len(), thread_cpu() - before);
        }
        for (kind, text) in [
            ("prose", prose(SIZE, 11)),
            ("mixed", mixed(SIZE, 12)),
            ("one word", "a".repeat(SIZE)),
            ("spaces", " ".repeat(SIZE)),
            ("CJK without punctuation", "我们".repeat(SIZE / 6)),
        ] {
            for (name, bpe) in [("cl100k", cl100k()), ("o200k", o200k())] {
                let before = thread_cpu();
                let n = bounded(bpe, &text);
                let cpu = thread_cpu() - before;
                eprintln!("{kind} {name}: {} bytes -> {n} tokens in {cpu:?} of CPU", text.len());
                assert!(cpu < Duration::from_secs(1), "{kind} {name}: {cpu:?}");
            }
        }
    }
}
