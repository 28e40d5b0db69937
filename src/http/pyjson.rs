//! Where and why Python's `json.loads` rejects a body: FastAPI reports a
//! body it cannot decode as a 422 whose `loc` is the character position
//! and whose `ctx.error` is the decoder's message, and the old service's
//! clients may match on either. serde_json tells *that* a body is invalid
//! but with its own wording and positions, so this is a validator that
//! walks the text the way CPython's `json` scanner does (3.11, C
//! accelerated) and fails where it fails, with its messages.
//!
//! Only errors are computed here; a valid body is parsed by serde_json.

/// The first error Python's decoder finds in `s`: (character position,
/// message). None if Python would accept it.
pub fn error(s: &str) -> Option<(usize, &'static str)> {
    let chars: Vec<char> = s.chars().collect();
    let p = Scanner { s: &chars };
    let end = match p.value(p.ws(0)) {
        Ok(end) => end,
        Err(e) => return Some(e),
    };
    let end = p.ws(end);
    if end != chars.len() { Some((end, "Extra data")) } else { None }
}

type Res = Result<usize, (usize, &'static str)>;

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

    /// A value at `i` (no leading whitespace); the position after it.
    fn value(&self, i: usize) -> Res {
        match self.at(i) {
            Some('"') => self.string(i + 1),
            Some('{') => self.object(i + 1),
            Some('[') => self.array(i + 1),
            Some('n') if self.starts(i, "null") => Ok(i + 4),
            Some('t') if self.starts(i, "true") => Ok(i + 4),
            Some('f') if self.starts(i, "false") => Ok(i + 5),
            Some('N') if self.starts(i, "NaN") => Ok(i + 3),
            Some('I') if self.starts(i, "Infinity") => Ok(i + 8),
            Some('-') if self.starts(i, "-Infinity") => Ok(i + 9),
            Some('-' | '0'..='9') => self.number(i),
            _ => Err((i, "Expecting value")),
        }
    }

    /// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?`; a fraction or an
    /// exponent without digits is simply not part of the number.
    fn number(&self, i: usize) -> Res {
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
            _ => return Err((i, "Expecting value")),
        }
        if self.at(j) == Some('.') && matches!(self.at(j + 1), Some('0'..='9')) {
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
                j = k;
            }
        }
        Ok(j)
    }

    /// A string whose opening quote is at `i - 1`.
    fn string(&self, i: usize) -> Res {
        let start = i - 1;
        let mut j = i;
        loop {
            match self.at(j) {
                None => return Err((start, "Unterminated string starting at")),
                Some('"') => return Ok(j + 1),
                Some('\\') => match self.at(j + 1) {
                    None => return Err((start, "Unterminated string starting at")),
                    Some('"' | '\\' | '/' | 'b' | 'f' | 'n' | 'r' | 't') => j += 2,
                    Some('u') => {
                        let hex = (2..6).all(|k| self.at(j + k).is_some_and(|c| c.is_ascii_hexdigit()));
                        if !hex {
                            return Err((j + 1, "Invalid \\uXXXX escape"));
                        }
                        j += 6;
                    }
                    Some(_) => return Err((j, "Invalid \\escape")),
                },
                Some(c) if (c as u32) < 0x20 => return Err((j, "Invalid control character at")),
                Some(_) => j += 1,
            }
        }
    }

    /// An object whose `{` is at `i - 1`.
    fn object(&self, i: usize) -> Res {
        let mut j = self.ws(i);
        if self.at(j) == Some('}') {
            return Ok(j + 1);
        }
        loop {
            if self.at(j) != Some('"') {
                return Err((j, "Expecting property name enclosed in double quotes"));
            }
            j = self.ws(self.string(j + 1)?);
            if self.at(j) != Some(':') {
                return Err((j, "Expecting ':' delimiter"));
            }
            j = self.ws(self.value(self.ws(j + 1))?);
            match self.at(j) {
                Some('}') => return Ok(j + 1),
                Some(',') => j = self.ws(j + 1),
                _ => return Err((j, "Expecting ',' delimiter")),
            }
        }
    }

    /// An array whose `[` is at `i - 1`.
    fn array(&self, i: usize) -> Res {
        let mut j = self.ws(i);
        if self.at(j) == Some(']') {
            return Ok(j + 1);
        }
        loop {
            j = self.ws(self.value(j)?);
            match self.at(j) {
                Some(']') => return Ok(j + 1),
                Some(',') => j = self.ws(j + 1),
                _ => return Err((j, "Expecting ',' delimiter")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::error;

    #[test]
    fn valid_json_is_accepted() {
        for ok in
            ["{}", "[]", " {\"a\": [1, -2.5e3, true, false, null, \"x\\u00e9\\n\"]} ", "NaN", "-Infinity", "0", "\"\""]
        {
            assert_eq!(error(ok), None, "{ok}");
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
            ("\"a\u{1}b\"", 2, "Invalid control character at"),
            ("-", 0, "Expecting value"),
            ("01", 1, "Extra data"),
            ("1.5e", 3, "Extra data"),
            ("{\"token\": \"é\", \"x\": }", 20, "Expecting value"),
        ];
        for (input, pos, msg) in cases {
            assert_eq!(error(input), Some((pos, msg)), "{input:?}");
        }
    }
}
