//! A request body as Python's `json.loads` reads it. FastAPI reports a
//! body it cannot decode as a 422 whose `loc` is the character position
//! and whose `ctx.error` is the decoder's message, and the old service's
//! clients may match on either; it answers 400 for a body it cannot read
//! at all. serde_json differs from Python in both directions (its own
//! wording and positions; no `NaN`, `Infinity`, numbers beyond `f64` or
//! lone surrogates, which Python accepts), so this walks the text the way
//! CPython's `json` scanner does (3.11, C accelerated), fails where it
//! fails with its messages, and builds the value it would.

use serde_json::{Map, Number, Value};
use std::borrow::Cow;

/// How deep containers may nest. Python's scanner takes a level of its
/// recursion limit (1000) per `[` or `{`, less the frames above
/// `json.loads`: FastAPI 0.115 under uvicorn reads 964 levels and answers
/// 400 to 965 (measured).
pub const MAX_DEPTH: usize = 964;

/// Python's `sys.get_int_max_str_digits()` default.
const PY_INT_MAX_DIGITS: usize = 4300;

/// Why Python's `json.loads` raises.
#[derive(Debug, PartialEq)]
pub enum Bad {
    /// A `JSONDecodeError`: the character position and the message.
    Decode(usize, &'static str),
    /// Any other error: bytes that do not decode in the encoding Python
    /// detects, or nesting beyond [`MAX_DEPTH`] (`RecursionError`).
    Unreadable,
}

/// `json.loads(body)` for a body of bytes: its encoding detected, decoded,
/// parsed. `NaN` and the infinities become null (JSON cannot carry them;
/// FastAPI itself fails, with a 500, where it would echo one).
pub fn loads(body: &[u8]) -> Result<Value, Bad> {
    parse(&decode(body).ok_or(Bad::Unreadable)?)
}

/// The text of `b` as `json.loads` decodes bytes: the encoding its
/// `detect_encoding` names (UTF-8, with or without a BOM; UTF-16 and
/// UTF-32 by their BOM or their zero bytes), lone surrogates let through
/// (here as U+FFFD); None where Python's decoding fails.
pub fn decode(b: &[u8]) -> Option<Cow<'_, str>> {
    const BOM8: &[u8] = b"\xef\xbb\xbf";
    let utf16 = |b: &[u8], be: bool| -> Option<Cow<'_, str>> {
        if !b.len().is_multiple_of(2) {
            return None;
        }
        let units =
            b.chunks(2).map(|c| if be { u16::from_be_bytes([c[0], c[1]]) } else { u16::from_le_bytes([c[0], c[1]]) });
        Some(Cow::Owned(char::decode_utf16(units).map(|c| c.unwrap_or('\u{fffd}')).collect()))
    };
    let utf32 = |b: &[u8], be: bool| -> Option<Cow<'_, str>> {
        if !b.len().is_multiple_of(4) {
            return None;
        }
        let mut s = String::with_capacity(b.len() / 4);
        for c in b.chunks(4) {
            let u = if be {
                u32::from_be_bytes([c[0], c[1], c[2], c[3]])
            } else {
                u32::from_le_bytes([c[0], c[1], c[2], c[3]])
            };
            match char::from_u32(u) {
                Some(ch) => s.push(ch),
                None if (0xd800..0xe000).contains(&u) => s.push('\u{fffd}'),
                None => return None,
            }
        }
        Some(Cow::Owned(s))
    };
    match b {
        [0, 0, 0xfe, 0xff, rest @ ..] => utf32(rest, true),
        [0xff, 0xfe, 0, 0, rest @ ..] => utf32(rest, false),
        [0xfe, 0xff, rest @ ..] => utf16(rest, true),
        [0xff, 0xfe, rest @ ..] => utf16(rest, false),
        _ if b.starts_with(BOM8) => utf8(&b[3..]),
        [0, b1, _, _, ..] => {
            if *b1 != 0 {
                utf16(b, true)
            } else {
                utf32(b, true)
            }
        }
        [_, 0, b2, b3, ..] => {
            if *b2 != 0 || *b3 != 0 {
                utf16(b, false)
            } else {
                utf32(b, false)
            }
        }
        [0, _] => utf16(b, true),
        [_, 0] => utf16(b, false),
        _ => utf8(b),
    }
}

/// UTF-8 with `surrogatepass`: a surrogate's three bytes (`ED A0..BF
/// 80..BF`, which strict UTF-8 refuses) are a lone surrogate, here U+FFFD.
fn utf8(b: &[u8]) -> Option<Cow<'_, str>> {
    let mut rest = match std::str::from_utf8(b) {
        Ok(s) => return Some(Cow::Borrowed(s)),
        Err(_) => b,
    };
    let mut out = String::with_capacity(b.len());
    loop {
        match std::str::from_utf8(rest) {
            Ok(s) => {
                out.push_str(s);
                return Some(Cow::Owned(out));
            }
            Err(e) => {
                let (good, bad) = rest.split_at(e.valid_up_to());
                out.push_str(std::str::from_utf8(good).ok()?);
                match bad {
                    [0xed, 0xa0..=0xbf, 0x80..=0xbf, tail @ ..] => {
                        out.push('\u{fffd}');
                        rest = tail;
                    }
                    _ => return None,
                }
            }
        }
    }
}

/// `json.loads(s)` for a string. The walk keeps its open containers in a
/// vector rather than on the call stack: the stack is bounded whatever
/// the nesting, in debug builds too.
pub fn parse(s: &str) -> Result<Value, Bad> {
    let chars: Vec<char> = s.chars().collect();
    Scanner { s: &chars }.parse()
}

/// `v` as Starlette's `JSONResponse` writes it: `json.dumps` with
/// `ensure_ascii=False` and no spaces. serde_json's compact form is the
/// same (members in order, the same escapes) but for floats, which Python
/// writes as `repr` does.
pub fn dumps(v: &Value) -> String {
    // serde_json::to_string's first buffer.
    let mut out = Vec::with_capacity(128);
    let mut ser = serde_json::Serializer::with_formatter(&mut out, PyFloats);
    match serde::Serialize::serialize(v, &mut ser) {
        Ok(()) => String::from_utf8(out).unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// serde_json's compact formatter with Python's floats.
struct PyFloats;

impl serde_json::ser::Formatter for PyFloats {
    fn write_f64<W: ?Sized + std::io::Write>(&mut self, w: &mut W, x: f64) -> std::io::Result<()> {
        w.write_all(repr(x).as_bytes())
    }
}

/// A finite float as Python's `repr` writes it: the fewest digits that
/// read back the same, positional from 1e-4 up to below 1e16 and with at
/// least one digit after the point (`100.0`, `0.0001`), with an exponent
/// of two digits or more outside (`1e-05`, `1.5e+16`): CPython's
/// `float_repr_style` 'short'. Of the strings with that many digits that
/// read back the same, Python takes the nearest, and of two equally near
/// the even one, where Rust's `{:e}` takes the upper (1658206780088562.25:
/// Python `…562.2`, `{:e}` `…562.3`, about one float in 10,000). So the
/// digits are the value rounded half to even to `{:e}`'s count, unless
/// that does not read back (the nearest string can lie outside the
/// narrower half of a power of two's interval: 2^-44), when they are
/// `{:e}`'s.
pub fn repr(x: f64) -> String {
    let shortest = format!("{:e}", x.abs());
    let n = shortest.split_once('e').map_or(1, |(m, _)| m.chars().filter(char::is_ascii_digit).count());
    let nearest = format!("{:.*e}", n.saturating_sub(1), x.abs());
    let sci = if nearest.parse::<f64>() == Ok(x.abs()) { nearest } else { shortest };
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let n = digits.len() as i32;
    // Where the point goes: the value is 0.<digits> times 10^point.
    let point = exp + 1;
    let sign = if x.is_sign_negative() { "-" } else { "" };
    if point <= -4 || point > 16 {
        let (first, rest) = digits.split_at(1);
        let dot = if rest.is_empty() { "" } else { "." };
        let esign = if exp < 0 { '-' } else { '+' };
        format!("{sign}{first}{dot}{rest}e{esign}{:02}", exp.unsigned_abs())
    } else if point <= 0 {
        format!("{sign}0.{}{digits}", "0".repeat(point.unsigned_abs() as usize))
    } else if point >= n {
        format!("{sign}{digits}{}.0", "0".repeat((point - n) as usize))
    } else {
        let (int, frac) = digits.split_at(point as usize);
        format!("{sign}{int}.{frac}")
    }
}

/// A container being read: an array's items so far, or an object's
/// members so far and the key whose value comes next.
enum Open {
    Array(Vec<Value>),
    Object(Map<String, Value>, String),
}

type Res<T> = Result<(usize, T), Bad>;

fn fail<T>(pos: usize, msg: &'static str) -> Res<T> {
    Err(Bad::Decode(pos, msg))
}

struct Scanner<'a> {
    s: &'a [char],
}

impl Scanner<'_> {
    fn at(&self, i: usize) -> Option<char> {
        self.s.get(i).copied()
    }

    /// Skips JSON whitespace (space, tab, newline, carriage return).
    fn ws(&self, mut i: usize) -> usize {
        while matches!(self.at(i), Some(' ' | '\t' | '\n' | '\r')) {
            i += 1;
        }
        i
    }

    fn starts(&self, i: usize, word: &str) -> bool {
        word.chars().enumerate().all(|(k, c)| self.at(i + k) == Some(c))
    }

    /// The whole text as one value.
    fn parse(&self) -> Result<Value, Bad> {
        let mut open: Vec<Open> = Vec::new();
        let mut i = self.ws(0);
        loop {
            // A value at `i`: a scalar or an empty container is complete;
            // any other container is opened, and its first value read next.
            let opens = matches!(self.at(i), Some('[' | '{'));
            if opens && open.len() >= MAX_DEPTH {
                return Err(Bad::Unreadable);
            }
            let (mut j, mut v) = match self.at(i) {
                Some('"') => self.string(i + 1).map(|(j, s)| (j, Value::String(s)))?,
                Some('[') => {
                    let j = self.ws(i + 1);
                    if self.at(j) == Some(']') {
                        (j + 1, Value::Array(Vec::new()))
                    } else {
                        open.push(Open::Array(Vec::new()));
                        i = j;
                        continue;
                    }
                }
                Some('{') => {
                    let j = self.ws(i + 1);
                    if self.at(j) == Some('}') {
                        (j + 1, Value::Object(Map::new()))
                    } else {
                        let (j, key) = self.key(j)?;
                        open.push(Open::Object(Map::new(), key));
                        i = j;
                        continue;
                    }
                }
                Some('n') if self.starts(i, "null") => (i + 4, Value::Null),
                Some('t') if self.starts(i, "true") => (i + 4, Value::Bool(true)),
                Some('f') if self.starts(i, "false") => (i + 5, Value::Bool(false)),
                Some('N') if self.starts(i, "NaN") => (i + 3, Value::Null),
                Some('I') if self.starts(i, "Infinity") => (i + 8, Value::Null),
                Some('-') if self.starts(i, "-Infinity") => (i + 9, Value::Null),
                Some('-' | '0'..='9') => self.number(i)?,
                _ => return Err(Bad::Decode(i, "Expecting value")),
            };
            // The value is complete: it goes into the innermost open
            // container, which then closes (and is itself complete) or
            // expects its next value.
            loop {
                let Some(top) = open.last_mut() else {
                    let end = self.ws(j);
                    return if end != self.s.len() { Err(Bad::Decode(end, "Extra data")) } else { Ok(v) };
                };
                j = self.ws(j);
                let (close, next) = match top {
                    Open::Array(items) => {
                        items.push(v);
                        (']', None)
                    }
                    // A repeated key keeps its first place and its last
                    // value, as in a Python dict.
                    Open::Object(map, key) => {
                        map.insert(std::mem::take(key), v);
                        ('}', Some(key))
                    }
                };
                match self.at(j) {
                    Some(c) if c == close => {
                        v = match open.pop() {
                            Some(Open::Array(items)) => Value::Array(items),
                            Some(Open::Object(map, _)) => Value::Object(map),
                            None => Value::Null,
                        };
                        j += 1;
                    }
                    Some(',') => {
                        i = self.ws(j + 1);
                        if let Some(key) = next {
                            (i, *key) = self.key(i)?;
                        }
                        break;
                    }
                    _ => return Err(Bad::Decode(j, "Expecting ',' delimiter")),
                }
            }
        }
    }

    /// An object's key at `i` and the `:` after it; the position of its
    /// value, and the key.
    fn key(&self, i: usize) -> Res<String> {
        if self.at(i) != Some('"') {
            return fail(i, "Expecting property name enclosed in double quotes");
        }
        let (j, key) = self.string(i + 1)?;
        let j = self.ws(j);
        if self.at(j) != Some(':') {
            return fail(j, "Expecting ':' delimiter");
        }
        Ok((self.ws(j + 1), key))
    }

    /// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?`; a fraction or an
    /// exponent without digits is simply not part of the number. An
    /// integer is Python's `int` (here an `i64` or `u64` where it fits, as
    /// serde_json reads it, else a float), the rest a float (null if it
    /// overflows to an infinity).
    fn number(&self, i: usize) -> Res<Value> {
        let mut j = i;
        if self.at(j) == Some('-') {
            j += 1;
        }
        match self.at(j) {
            Some('0') => j += 1,
            Some('1'..='9') => {
                while matches!(self.at(j), Some('0'..='9')) {
                    j += 1;
                }
            }
            _ => return fail(i, "Expecting value"),
        }
        let mut integer = true;
        if self.at(j) == Some('.') && matches!(self.at(j + 1), Some('0'..='9')) {
            integer = false;
            j += 1;
            while matches!(self.at(j), Some('0'..='9')) {
                j += 1;
            }
        }
        if matches!(self.at(j), Some('e' | 'E')) {
            let mut k = j + 1;
            if matches!(self.at(k), Some('+' | '-')) {
                k += 1;
            }
            if matches!(self.at(k), Some('0'..='9')) {
                while matches!(self.at(k), Some('0'..='9')) {
                    k += 1;
                }
                integer = false;
                j = k;
            }
        }
        let text: String = self.s[i..j].iter().collect();
        // Python's `int` refuses more than 4300 digits (a ValueError, not a
        // decode error).
        if integer && text.trim_start_matches('-').len() > PY_INT_MAX_DIGITS {
            return Err(Bad::Unreadable);
        }
        let n = match (integer, text.parse::<i64>(), text.parse::<u64>()) {
            (true, Ok(n), _) => Some(Number::from(n)),
            (true, _, Ok(n)) => Some(Number::from(n)),
            _ => text.parse::<f64>().ok().and_then(Number::from_f64),
        };
        Ok((j, n.map_or(Value::Null, Value::Number)))
    }

    /// Four hex digits at `i`, as a code unit.
    fn hex4(&self, i: usize) -> Option<u32> {
        (i..i + 4).try_fold(0, |u, k| Some(u * 16 + self.at(k)?.to_digit(16)?))
    }

    /// A string whose opening quote is at `i - 1`.
    fn string(&self, i: usize) -> Res<String> {
        let start = i - 1;
        let mut out = String::new();
        let mut j = i;
        loop {
            match self.at(j) {
                None => return fail(start, "Unterminated string starting at"),
                Some('"') => return Ok((j + 1, out)),
                Some('\\') => {
                    let c = match self.at(j + 1) {
                        None => return fail(start, "Unterminated string starting at"),
                        Some(c @ ('"' | '\\' | '/')) => c,
                        Some('b') => '\u{8}',
                        Some('f') => '\u{c}',
                        Some('n') => '\n',
                        Some('r') => '\r',
                        Some('t') => '\t',
                        Some('u') => {
                            // Python wants a character after the four
                            // digits (its check is `end >= len`).
                            if j + 6 >= self.s.len() {
                                return fail(j + 1, "Invalid \\uXXXX escape");
                            }
                            let Some(u) = self.hex4(j + 2) else { return fail(j + 1, "Invalid \\uXXXX escape") };
                            j += 6;
                            // A surrogate pair written as two escapes is one
                            // character, as in Python; a lone surrogate
                            // (which Python keeps) cannot be in a Rust
                            // string.
                            let low = match (self.at(j), self.at(j + 1)) {
                                (Some('\\'), Some('u')) if (0xd800..0xdc00).contains(&u) && j + 6 < self.s.len() => {
                                    self.hex4(j + 2).filter(|l| (0xdc00..0xe000).contains(l))
                                }
                                _ => None,
                            };
                            let c = match low {
                                Some(l) => {
                                    j += 6;
                                    char::from_u32(0x10000 + ((u - 0xd800) << 10) + (l - 0xdc00))
                                }
                                None => char::from_u32(u),
                            };
                            out.push(c.unwrap_or('\u{fffd}'));
                            continue;
                        }
                        Some(_) => return fail(j, "Invalid \\escape"),
                    };
                    out.push(c);
                    j += 2;
                }
                Some(c) if (c as u32) < 0x20 => return fail(j, "Invalid control character at"),
                Some(c) => {
                    out.push(c);
                    j += 1;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Bad, MAX_DEPTH, decode, loads, parse};
    use serde_json::json;

    #[test]
    fn valid_json_is_accepted() {
        for ok in
            ["{}", "[]", " {\"a\": [1, -2.5e3, true, false, null, \"x\\u00e9\\n\"]} ", "NaN", "-Infinity", "0", "\"\""]
        {
            assert!(parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn errors_are_pythons() {
        // Each as CPython 3.11's json.loads reports it (see
        // tests/fixtures/fastapi/ for the same cases through FastAPI).
        let cases = [
            ("hello", 0, "Expecting value"),
            ("{\"token\": ", 10, "Expecting value"),
            ("{\"token\": \"x\"", 13, "Expecting ',' delimiter"),
            ("{token: 1}", 1, "Expecting property name enclosed in double quotes"),
            ("{\"a\": 1} x", 9, "Extra data"),
            ("\"abc", 0, "Unterminated string starting at"),
            ("{\"a\": 1,}", 8, "Expecting property name enclosed in double quotes"),
            ("  \n {\"a\" 1}", 9, "Expecting ':' delimiter"),
            ("[", 1, "Expecting value"),
            ("[1,]", 3, "Expecting value"),
            ("[1 2]", 3, "Expecting ',' delimiter"),
            ("nul", 0, "Expecting value"),
            ("{", 1, "Expecting property name enclosed in double quotes"),
            ("{\"a\":1", 6, "Expecting ',' delimiter"),
            ("\"a\\qb\"", 2, "Invalid \\escape"),
            ("\"a\\u12\"", 3, "Invalid \\uXXXX escape"),
            // Python wants a character after an escape's four digits.
            ("\"\\u0041", 2, "Invalid \\uXXXX escape"),
            ("\"\\ud83d\\ude00", 8, "Invalid \\uXXXX escape"),
            ("\"\\ud83d\\ude0", 8, "Invalid \\uXXXX escape"),
            ("\"\\ud83d\\uZZZZ\"x", 8, "Invalid \\uXXXX escape"),
            ("\"a\u{1}b\"", 2, "Invalid control character at"),
            ("-", 0, "Expecting value"),
            ("01", 1, "Extra data"),
            ("1.5e", 3, "Extra data"),
            ("{\"token\": \"é\", \"x\": }", 20, "Expecting value"),
        ];
        for (input, pos, msg) in cases {
            assert_eq!(parse(input), Err(Bad::Decode(pos, msg)), "{input:?}");
        }
    }

    #[test]
    fn values_are_pythons() {
        let v = parse(
            r#"{"b": [1, -2, 18446744073709551615, 1e400, 2.5, 1E2, 123456789012345678901234567890],
                "a": NaN, "c": "x\u00e9\ud83d\ude00\ud800\n\/", "b": -Infinity, "d": {"e": [true, null]}}"#,
        )
        .unwrap();
        // A repeated key keeps its first place and its last value. An
        // integer beyond u64 is a float here, where Python keeps it exact
        // (a known difference: only a 422's echo shows it).
        assert_eq!(v, json!({"b": null, "a": null, "c": "xé😀\u{fffd}\n/", "d": {"e": [true, null]}}));
        assert_eq!(
            parse("[1, -2, 18446744073709551615, 1e400, 2.5, 1E2, 123456789012345678901234567890]").unwrap(),
            json!([1, -2, 18446744073709551615u64, null, 2.5, 100.0, 1.2345678901234568e29])
        );
    }

    #[test]
    fn nesting_beyond_pythons_limit_is_unreadable() {
        let nested = |d: usize| format!("{}{}", "[".repeat(d), "]".repeat(d));
        assert!(parse(&nested(MAX_DEPTH)).is_ok());
        assert_eq!(parse(&nested(MAX_DEPTH + 1)), Err(Bad::Unreadable));
        // Found on the way in, before the missing brackets.
        assert_eq!(parse(&"[".repeat(1_000_000)), Err(Bad::Unreadable));
        assert_eq!(parse(&"[".repeat(10)), Err(Bad::Decode(10, "Expecting value")));
        let object = |d: usize| format!("{}1{}", "{\"a\": ".repeat(d), "}".repeat(d));
        assert!(parse(&object(MAX_DEPTH)).is_ok());
        assert_eq!(parse(&object(MAX_DEPTH + 1)), Err(Bad::Unreadable));
        // A value nested to the limit is echoed in a 422 (serialized, by
        // recursion) and dropped (by recursion) on a thread with a tokio
        // worker's stack.
        let deep = object(MAX_DEPTH - 1);
        let echoed = std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(move || serde_json::to_string(&json!({"input": parse(&deep).unwrap()})).unwrap().len())
            .unwrap()
            .join()
            .unwrap();
        assert!(echoed > 6 * MAX_DEPTH, "{echoed}");
    }

    #[test]
    fn bodies_decode_as_python_detects_their_encoding() {
        let text = r#"{"token": "é"}"#;
        let utf16 = |be: bool| -> Vec<u8> {
            text.encode_utf16().flat_map(|u| if be { u.to_be_bytes() } else { u.to_le_bytes() }).collect()
        };
        let utf32 = |be: bool| -> Vec<u8> {
            text.chars().flat_map(|c| if be { (c as u32).to_be_bytes() } else { (c as u32).to_le_bytes() }).collect()
        };
        let with = |bom: &[u8], body: Vec<u8>| [bom, &body].concat();
        for body in [
            text.as_bytes().to_vec(),
            with(b"\xef\xbb\xbf", text.as_bytes().to_vec()),
            utf16(true),
            utf16(false),
            with(&[0xfe, 0xff], utf16(true)),
            with(&[0xff, 0xfe], utf16(false)),
            utf32(true),
            utf32(false),
            with(&[0, 0, 0xfe, 0xff], utf32(true)),
            with(&[0xff, 0xfe, 0, 0], utf32(false)),
        ] {
            assert_eq!(decode(&body).as_deref(), Some(text), "{body:?}");
            assert_eq!(loads(&body), Ok(json!({"token": "é"})));
        }
        // Python's decoding fails: FastAPI answers 400.
        for bad in [&b"\xff"[..], b"{\"a\": \"\xc3\"}", b"\xfe\xff\x00", b"\x00\x00\x00{\x00"] {
            assert_eq!(loads(bad), Err(Bad::Unreadable), "{bad:?}");
        }
        assert_eq!(decode(b"").as_deref(), Some(""));
        // surrogatepass: a surrogate's UTF-8 bytes are a lone surrogate;
        // a cut one is not.
        assert_eq!(loads(b"{\"a\": \"x\xed\xb0\x80y\"}"), Ok(json!({"a": "x\u{fffd}y"})));
        assert_eq!(loads(b"\"\xed\xa0\""), Err(Bad::Unreadable));
    }

    #[test]
    fn floats_are_written_as_python_writes_them() {
        // Each as CPython 3.11's repr() writes it.
        for (x, py) in [
            (0.0, "0.0"),
            (-0.0, "-0.0"),
            (1.0, "1.0"),
            (100.0, "100.0"),
            (-2.5, "-2.5"),
            (0.1, "0.1"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (5.253474246e-05, "5.253474246e-05"),
            (1e15, "1000000000000000.0"),
            (1e16, "1e+16"),
            (1.5e16, "1.5e+16"),
            (123456789012345680.0, "1.2345678901234568e+17"),
            (1e100, "1e+100"),
            (1.7976931348623157e308, "1.7976931348623157e+308"),
            (5e-324, "5e-324"),
            (2.0f64.powi(53) + 2.0, "9007199254740994.0"),
            // A tie between two shortest strings: Python takes the even.
            (1_658_206_780_088_562.0 + 0.25, "1658206780088562.2"),
            (233_115_890_514_796.0 + 0.125, "233115890514796.12"),
            // A power of two whose nearest 16 digits read back as the float
            // below it.
            (2.0f64.powi(-44), "5.684341886080802e-14"),
        ] {
            assert_eq!(super::repr(x), py, "{x:e}");
        }
        // Every power of two (the intervals where the nearest digits can
        // miss) and its neighbours read back as themselves.
        for k in -1074..=1023 {
            let p = 2.0f64.powi(k);
            for x in [p, f64::from_bits(p.to_bits() + 1), f64::from_bits(p.to_bits().saturating_sub(1))] {
                assert_eq!(super::repr(x).parse::<f64>(), Ok(x), "{x:e}");
            }
        }
        assert_eq!(
            super::dumps(&json!({"a": [1.0, 1e-7, -3, "é\n\u{1}"], "b": null})),
            "{\"a\":[1.0,1e-07,-3,\"é\\n\\u0001\"],\"b\":null}"
        );
    }

    #[test]
    fn integers_past_pythons_digit_limit_are_unreadable() {
        let digits = |n: usize| "1".repeat(n);
        assert!(parse(&digits(4300)).is_ok());
        assert!(parse(&format!("-{}", digits(4300))).is_ok());
        assert_eq!(parse(&digits(4301)), Err(Bad::Unreadable));
        assert_eq!(parse(&format!("[{}]", digits(4301))), Err(Bad::Unreadable));
        // A float of as many digits is a float (inf: null) in Python too.
        assert_eq!(parse(&format!("{}.0", digits(4301))), Ok(serde_json::Value::Null));
    }
}
