//! A cursor over a command's arguments.
//!
//! Each command pulls its arguments in order with `next_*`; running out of
//! arguments is its own case ([`ParseError::EndOfStream`]) so optional
//! arguments can stop there, and [`Parse::finish`] rejects leftovers. Nothing
//! here panics on client input: every malformed value is an error the command
//! turns into a Redis-style reply.

use bytes::Bytes;
use std::fmt;

/// Why an argument could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    /// No more arguments.
    EndOfStream,
    /// An argument was left over or an option was not recognised.
    Syntax,
    /// A number was expected.
    NotInteger,
    /// Any other message, already in Redis style (`ERR …`).
    Other(String),
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::EndOfStream => f.write_str("ERR syntax error"),
            ParseError::Syntax => f.write_str("ERR syntax error"),
            ParseError::NotInteger => f.write_str("ERR value is not an integer or out of range"),
            ParseError::Other(s) => f.write_str(s),
        }
    }
}

impl std::error::Error for ParseError {}

/// Cursor over the arguments that follow the command name. It borrows the
/// request, which the caller keeps, so that what ran can still be shown
/// afterwards (SLOWLOG, MONITOR) without a copy, and reading an argument
/// costs nothing ([`Parse::next_slice`]); [`Parse::next_bytes`] is for the
/// few values a command keeps.
#[derive(Debug)]
pub struct Parse<'a> {
    args: &'a [Bytes],
    pos: usize,
}

impl<'a> Parse<'a> {
    /// Wraps the arguments (without the command name).
    pub fn new(args: &'a [Bytes]) -> Parse<'a> {
        Parse { args, pos: 0 }
    }

    /// Wraps a whole request, skipping its first element (the command name).
    pub fn after_name(args: &'a [Bytes]) -> Parse<'a> {
        Parse::after(args, 1)
    }

    /// Wraps a whole request, skipping its first `n` elements (the command
    /// name, and the subcommand name for a subcommand).
    pub fn after(args: &'a [Bytes], n: usize) -> Parse<'a> {
        Parse { pos: n.min(args.len()), args }
    }

    /// How many arguments are left.
    pub fn remaining(&self) -> usize {
        self.args.len() - self.pos
    }

    /// The next argument, borrowed.
    pub fn next_slice(&mut self) -> Result<&'a [u8], ParseError> {
        let b = self.args.get(self.pos).ok_or(ParseError::EndOfStream)?;
        self.pos += 1;
        Ok(b)
    }

    /// The next argument as a value to keep (a reference count, no copy).
    pub fn next_bytes(&mut self) -> Result<Bytes, ParseError> {
        let b = self.args.get(self.pos).cloned().ok_or(ParseError::EndOfStream)?;
        self.pos += 1;
        Ok(b)
    }

    /// The next argument as text (invalid UTF-8 is replaced, as for names).
    pub fn next_string(&mut self) -> Result<String, ParseError> {
        let b = self.next_slice()?;
        Ok(String::from_utf8_lossy(b).into_owned())
    }

    /// The next argument upper-cased, for matching keywords.
    pub fn next_keyword(&mut self) -> Result<String, ParseError> {
        let b = self.next_slice()?;
        Ok(String::from_utf8_lossy(b).to_ascii_uppercase())
    }

    /// The next argument as a signed 64-bit integer, with Redis's strictness:
    /// no spaces, no `+`, no leading zeros beyond `0` itself.
    pub fn next_i64(&mut self) -> Result<i64, ParseError> {
        let b = self.next_slice()?;
        parse_i64(b).ok_or(ParseError::NotInteger)
    }

    /// Fails if any argument is left.
    pub fn finish(&mut self) -> Result<(), ParseError> {
        if self.remaining() == 0 { Ok(()) } else { Err(ParseError::Syntax) }
    }
}

/// Parses an integer the way Redis's `string2ll` does: optional `-`, digits,
/// no leading zeros, no surrounding space, no overflow.
pub fn parse_i64(b: &[u8]) -> Option<i64> {
    if b.is_empty() || b.len() > 20 {
        return None;
    }
    let (neg, digits) = match b[0] {
        b'-' => (true, &b[1..]),
        _ => (false, b),
    };
    if digits.is_empty() || (digits.len() > 1 && digits[0] == b'0') || (neg && digits == b"0") {
        return None;
    }
    let mut v: i64 = 0;
    for &c in digits {
        if !c.is_ascii_digit() {
            return None;
        }
        let d = (c - b'0') as i64;
        v = if neg { v.checked_mul(10)?.checked_sub(d)? } else { v.checked_mul(10)?.checked_add(d)? };
    }
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(args: &[&str]) -> Vec<Bytes> {
        args.iter().map(|a| Bytes::copy_from_slice(a.as_bytes())).collect()
    }

    #[test]
    fn integers_follow_redis_rules() {
        assert_eq!(parse_i64(b"0"), Some(0));
        assert_eq!(parse_i64(b"-12"), Some(-12));
        assert_eq!(parse_i64(b"9223372036854775807"), Some(i64::MAX));
        assert_eq!(parse_i64(b"-9223372036854775808"), Some(i64::MIN));
        for bad in [&b""[..], b"-", b"+1", b" 1", b"1 ", b"01", b"-0", b"1.5", b"9223372036854775808", b"abc", b"1e3"] {
            assert_eq!(parse_i64(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn cursor_reports_end_and_leftovers() {
        let (x5, x, nope) = (v(&["x", "5"]), v(&["x"]), v(&["nope"]));
        let mut a = Parse::new(&x5);
        assert_eq!(a.remaining(), 2);
        assert_eq!(a.next_keyword().unwrap(), "X");
        assert_eq!(a.next_i64().unwrap(), 5);
        assert_eq!(a.next_bytes(), Err(ParseError::EndOfStream));
        assert!(a.finish().is_ok());
        let mut b = Parse::new(&x);
        assert_eq!(b.finish(), Err(ParseError::Syntax));
        let mut c = Parse::new(&nope);
        assert_eq!(c.next_i64(), Err(ParseError::NotInteger));
    }
}
