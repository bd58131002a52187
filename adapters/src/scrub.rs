//! Scrubbing vendor error text before a client or a log line sees it: anything that looks like a
//! credential or an account identifier becomes `[redacted]`, and the text is capped. Pure text
//! work, no I/O; used for client-caused errors that keep the vendor's useful message, and for the
//! operator's log line of every failed attempt.

/// What replaces a scrubbed word.
pub const REDACTED: &str = "[redacted]";

/// Longest scrubbed message, in bytes: enough for any useful vendor explanation, too short to
/// carry a prompt echoed back.
pub const MAX_MESSAGE_BYTES: usize = 512;

/// Prefixes of credentials and account ids: OpenAI/DeepSeek/Moonshot keys (`sk-`), Anthropic
/// (`sk-ant-`), Google (`AIza`), OpenAI organizations and projects, GitHub tokens, xAI keys.
const SECRET_PREFIXES: &[&str] =
    &["sk-", "sk_", "aiza", "org-", "proj_", "pk-", "rk-", "ghp_", "xai-", "key-", "user-"];

/// A run of letters and digits at least this long that mixes both is treated as a token (hex and
/// base64 secrets, session ids); model names split into short pieces by `-` and `.` stay.
const LONG_RUN: usize = 20;

/// `text` with credentials, e-mail addresses, URLs with credentials and account ids replaced by
/// `[redacted]`, every string of `secrets` (the channel's own key) removed wherever it appears,
/// and the result capped at [`MAX_MESSAGE_BYTES`].
pub fn scrub(text: &str, secrets: &[&str]) -> String {
    let mut text = text.to_owned();
    for s in secrets.iter().filter(|s| s.len() >= 4) {
        text = text.replace(s, REDACTED);
    }
    let mut out = String::with_capacity(text.len().min(MAX_MESSAGE_BYTES + 16));
    let mut after_bearer = false;
    let mut rest = text.as_str();
    while !rest.is_empty() {
        let split = rest.find(is_separator).unwrap_or(rest.len());
        let (word, tail) = rest.split_at(split);
        if !word.is_empty() {
            let core = word.trim_end_matches(['.', ',', ':', ';', '!', '?']);
            let trailing = &word[core.len()..];
            if after_bearer || looks_secret(core) {
                out.push_str(REDACTED);
            } else {
                out.push_str(core);
            }
            out.push_str(trailing);
            after_bearer = core.eq_ignore_ascii_case("bearer");
        }
        let sep_len = tail.chars().next().map_or(0, char::len_utf8);
        out.push_str(&tail[..sep_len]);
        if sep_len > 0 && !tail[..sep_len].chars().all(char::is_whitespace) {
            after_bearer = false;
        }
        rest = &tail[sep_len..];
        if out.len() > MAX_MESSAGE_BYTES {
            break;
        }
    }
    cap(out)
}

/// Characters that end a word: whitespace and the quoting and bracketing around values in JSON
/// and prose.
fn is_separator(c: char) -> bool {
    c.is_whitespace() || matches!(c, '"' | '\'' | '`' | '(' | ')' | '[' | ']' | '{' | '}' | '<' | '>' | ',' | ';' | '=')
}

fn looks_secret(word: &str) -> bool {
    if word.is_empty() || word == REDACTED {
        return false;
    }
    let lower = word.to_ascii_lowercase();
    // An e-mail address, or a URL with user:password@ in it.
    if let Some(at) = word.find('@')
        && at > 0
        && word[at + 1..].contains('.')
    {
        return true;
    }
    if SECRET_PREFIXES.iter().any(|p| lower.starts_with(p) && word.len() > p.len()) {
        return true;
    }
    // A masked key as OpenAI echoes it (`sk-abc*****wxyz`).
    if word.contains("***") {
        return true;
    }
    word.split(['-', '.', ':', '/', '_']).any(|piece| {
        piece.len() >= LONG_RUN
            && piece.chars().all(|c| c.is_ascii_alphanumeric() || c == '+')
            && piece.chars().any(|c| c.is_ascii_digit())
            && piece.chars().any(|c| c.is_ascii_alphabetic())
    })
}

fn cap(mut s: String) -> String {
    if s.len() <= MAX_MESSAGE_BYTES {
        return s;
    }
    let mut end = MAX_MESSAGE_BYTES;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
    s.push('…');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_emails_account_ids_and_credentials_in_urls_are_redacted() {
        let cases = [
            ("Incorrect API key provided: sk-proj-abcDEF123. You can find your API key at https://x.y.", "sk-proj"),
            ("invalid x-api-key sk-ant-api03-QWERTY", "sk-ant"),
            ("API key AIzaSyD-1234567890abcdefghijk not valid", "AIza"),
            ("Authorization: Bearer abc.def.ghi was refused", "abc.def"),
            ("Organization org-AbCdEf123 has no access", "org-AbC"),
            ("The account owner alice@example.com must pay", "alice@"),
            ("proxy http://user:pa55@proxy.example:8080 refused", "pa55"),
            ("session 3f9a0c1d2e3b4a5f6e7d8c9b0a1f2e3d expired", "3f9a0c"),
            ("Incorrect API key provided: sk-upstr*****cret.", "sk-upstr"),
        ];
        for (text, secret) in cases {
            let s = scrub(text, &[]);
            assert!(!s.contains(secret), "{text} → {s}");
            assert!(s.contains(REDACTED), "{text} → {s}");
        }
    }

    #[test]
    fn useful_text_and_model_names_survive_and_length_is_capped() {
        let msg = "This model's maximum context length is 128000 tokens. However, your messages resulted in \
                   130000 tokens. Please reduce the length of the messages (model claude-3-5-sonnet-20241022).";
        assert_eq!(scrub(msg, &[]), msg);
        let long = "word ".repeat(1000);
        let s = scrub(&long, &[]);
        assert!(s.len() <= MAX_MESSAGE_BYTES + '…'.len_utf8(), "{}", s.len());
        assert!(s.ends_with('…'));
    }

    #[test]
    fn the_channels_own_key_is_removed_wherever_it_appears() {
        let s = scrub("bad key=\"weird!key!value\" and weird!key!value again", &["weird!key!value"]);
        assert!(!s.contains("weird!key"), "{s}");
        assert_eq!(s.matches(REDACTED).count(), 2, "{s}");
    }
}
