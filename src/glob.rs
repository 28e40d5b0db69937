//! Redis-style glob matching (`*`, `?`, `[a-z]`, `[^x]`, `\x`) on bytes, as
//! `PSUBSCRIBE` and `COMMAND LIST FILTERBY PATTERN` use it. Iterative with one
//! backtrack point for `*`, so a hostile pattern costs O(pattern × string),
//! not exponential time.

/// True if `s` matches the glob `p`.
pub fn matches(p: &[u8], s: &[u8]) -> bool {
    let (mut pi, mut si) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        if pi < p.len() {
            match p[pi] {
                b'*' => {
                    star = Some((pi, si));
                    pi += 1;
                    continue;
                }
                b'?' => {
                    pi += 1;
                    si += 1;
                    continue;
                }
                b'[' => {
                    if let Some((ok, next)) = class(p, pi, s[si])
                        && ok
                    {
                        pi = next;
                        si += 1;
                        continue;
                    }
                }
                b'\\' if pi + 1 < p.len() => {
                    if p[pi + 1] == s[si] {
                        pi += 2;
                        si += 1;
                        continue;
                    }
                }
                c => {
                    if c == s[si] {
                        pi += 1;
                        si += 1;
                        continue;
                    }
                }
            }
        }
        match star {
            Some((sp, ss)) => {
                pi = sp + 1;
                si = ss + 1;
                star = Some((sp, ss + 1));
            }
            None => return false,
        }
    }
    while pi < p.len() && p[pi] == b'*' {
        pi += 1;
    }
    pi == p.len()
}

/// Matches `c` against the class starting at `p[start] == b'['`; returns
/// whether it matched and the index after the closing `]`.
fn class(p: &[u8], start: usize, c: u8) -> Option<(bool, usize)> {
    let mut i = start + 1;
    let negate = i < p.len() && p[i] == b'^';
    if negate {
        i += 1;
    }
    let mut matched = false;
    loop {
        if i >= p.len() {
            // Unterminated class: Redis treats the rest as the class.
            return Some((matched != negate, i));
        }
        match p[i] {
            b']' => return Some((matched != negate, i + 1)),
            b'\\' if i + 1 < p.len() => {
                matched |= p[i + 1] == c;
                i += 2;
            }
            lo if i + 2 < p.len() && p[i + 1] == b'-' && p[i + 2] != b']' => {
                let hi = p[i + 2];
                let (lo, hi) = if lo <= hi { (lo, hi) } else { (hi, lo) };
                matched |= lo <= c && c <= hi;
                i += 3;
            }
            x => {
                matched |= x == c;
                i += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn glob_cases() {
        let yes = [
            ("*", ""),
            ("*", "abc"),
            ("a*c", "abbbc"),
            ("h?llo", "hello"),
            ("h[ae]llo", "hallo"),
            ("h[^e]llo", "hallo"),
            ("h[a-b]llo", "hbllo"),
            ("__keyevent@0__:*", "__keyevent@0__:expired"),
            ("a\\*b", "a*b"),
            ("*x*y*", "aaxbby"),
        ];
        let no = [("a*c", "abd"), ("h[^e]llo", "hello"), ("h?llo", "hllo"), ("a\\*b", "axb"), ("", "a")];
        for (p, s) in yes {
            assert!(matches(p.as_bytes(), s.as_bytes()), "{p} ~ {s}");
        }
        for (p, s) in no {
            assert!(!matches(p.as_bytes(), s.as_bytes()), "{p} !~ {s}");
        }
    }

    #[test]
    fn hostile_pattern_is_fast() {
        let p = "*a".repeat(50) + "b";
        let s = "a".repeat(5000);
        assert!(!matches(p.as_bytes(), s.as_bytes()));
    }
}
