//! Generated text of several kinds (prose, code, CJK, a mix) for the tokenizer's accuracy tests and
//! measurements. Deterministic, so every run counts the same texts. Test-only.

/// A small deterministic generator, so every run counts the same texts.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        ((self.0 >> 33) % n as u64) as usize
    }
}

const WORDS: &[&str] = &[
    "the",
    "gateway",
    "counts",
    "tokens",
    "before",
    "billing",
    "every",
    "request",
    "and",
    "it's",
    "model",
    "upstream",
    "don't",
    "quickly",
    "Anthropic",
    "OpenAI",
    "tenant",
    "budget",
    "of",
    "a",
    "is",
    "was",
    "streaming",
    "usage",
    "1024",
    "3.14",
    "e-mail",
    "well-known",
    "naïve",
    "café",
    "résumé",
    "HTTP/2",
];

/// English-like sentences with punctuation, contractions, numbers and accents.
pub fn prose(bytes: usize, seed: u64) -> String {
    let mut r = Lcg(seed);
    let mut s = String::new();
    while s.len() < bytes {
        for i in 0..(5 + r.below(20)) {
            let w = WORDS[r.below(WORDS.len())];
            if i == 0 {
                let mut c = w.chars();
                s.extend(c.next().map(|f| f.to_ascii_uppercase()));
                s.push_str(c.as_str());
            } else {
                s.push(' ');
                s.push_str(w);
            }
            if r.below(12) == 0 {
                s.push(',');
            }
        }
        s.push_str([". ", "! ", "? ", ".\n\n", ": "][r.below(5)]);
    }
    s
}

/// Rust-like source lines with indentation, identifiers, numbers and comments.
pub fn code(bytes: usize, seed: u64) -> String {
    let mut r = Lcg(seed);
    let mut s = String::new();
    while s.len() < bytes {
        let indent = " ".repeat(4 * r.below(4));
        let line = match r.below(6) {
            0 => {
                format!("{indent}let value_{} = compute(&input[{}..], {})?;\n", r.below(99), r.below(64), r.below(1000))
            }
            1 => format!("{indent}if self.count > 0x{:x} {{\n", r.below(65_536)),
            2 => format!("{indent}}}\n"),
            3 => format!(
                "{indent}// Returns the {} of the {} in bytes.\n",
                WORDS[r.below(WORDS.len())],
                WORDS[r.below(8)]
            ),
            4 => format!("{indent}fn handle_{}(req: Request<Body>) -> Result<Response, Error> {{\n", r.below(50)),
            _ => format!("{indent}println!(\"{{}} tokens\", total.saturating_sub({}));\n\n", r.below(9)),
        };
        s.push_str(&line);
    }
    s
}

/// Chinese and Japanese phrases between CJK punctuation, with some line breaks.
pub fn cjk(bytes: usize, seed: u64) -> String {
    const HAN: &str =
        "我们的网关在计费之前统计每个请求的令牌数量模型上游流式使用情况预算租户快速安全可靠服务器客户端数据";
    const KANA: &str = "これはゲートウェイのトークンをかぞえるテストですカタカナひらがな";
    let han: Vec<char> = HAN.chars().collect();
    let kana: Vec<char> = KANA.chars().collect();
    let mut r = Lcg(seed);
    let mut s = String::new();
    while s.len() < bytes {
        let pool = if r.below(4) == 0 { &kana } else { &han };
        for _ in 0..(4 + r.below(25)) {
            s.push(pool[r.below(pool.len())]);
        }
        s.push(['，', '。', '、', '！', '？'][r.below(5)]);
        if r.below(10) == 0 {
            s.push('\n');
        }
    }
    s
}

/// Sections of prose, code and CJK text, one after another.
pub fn mixed(bytes: usize, seed: u64) -> String {
    let part = bytes / 6;
    [
        prose(part, seed),
        code(part, seed + 1),
        cjk(part, seed + 2),
        prose(part, seed + 3),
        cjk(part, seed + 4),
        code(part, seed + 5),
    ]
    .join("\n")
}

/// CPU time this thread has used so far (Linux's per-thread scheduler statistics), for measuring
/// counting work without counting time spent waiting.
pub fn thread_cpu() -> std::time::Duration {
    let nanos = std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|n| n.parse::<u64>().ok()))
        .unwrap_or(0);
    std::time::Duration::from_nanos(nanos)
}
