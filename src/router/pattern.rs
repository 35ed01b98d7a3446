//! Wildcard patterns for policy lists and mission filters: `*` (any run), `?` (one
//! character), `[abc]`, `[a-z]` and `[!abc]` (one character in / not in the set).
//! Matching is on characters, case-sensitive, and anchored at both ends.

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Lit(char),
    Any,
    Star,
    Class { neg: bool, items: Vec<(char, char)> },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Pattern {
    toks: Vec<Tok>,
    /// The pattern has no wildcard: plain string comparison.
    literal: Option<String>,
}

impl Pattern {
    pub fn new(p: &str) -> Result<Pattern, String> {
        let mut toks = vec![];
        let mut it = p.chars().peekable();
        while let Some(c) = it.next() {
            match c {
                '*' => {
                    if toks.last() != Some(&Tok::Star) {
                        toks.push(Tok::Star)
                    }
                }
                '?' => toks.push(Tok::Any),
                '[' => {
                    let neg = it.peek() == Some(&'!');
                    if neg {
                        it.next();
                    }
                    let mut items = vec![];
                    let mut first = true;
                    loop {
                        let Some(c) = it.next() else { return Err("unclosed '['".into()) };
                        if c == ']' && !first {
                            break;
                        }
                        first = false;
                        if it.peek() == Some(&'-') {
                            let mut look = it.clone();
                            look.next();
                            match look.peek() {
                                Some(&hi) if hi != ']' => {
                                    it.next();
                                    it.next();
                                    if hi < c {
                                        return Err(format!("bad range {c}-{hi}"));
                                    }
                                    items.push((c, hi));
                                    continue;
                                }
                                _ => {}
                            }
                        }
                        items.push((c, c));
                    }
                    toks.push(Tok::Class { neg, items });
                }
                c => toks.push(Tok::Lit(c)),
            }
        }
        let literal = toks.iter().all(|t| matches!(t, Tok::Lit(_))).then(|| p.to_owned());
        Ok(Pattern { toks, literal })
    }

    pub fn as_literal(&self) -> Option<&str> {
        self.literal.as_deref()
    }

    fn one(t: &Tok, c: char) -> bool {
        match t {
            Tok::Lit(l) => *l == c,
            Tok::Any => true,
            Tok::Class { neg, items } => items.iter().any(|(lo, hi)| (*lo..=*hi).contains(&c)) != *neg,
            Tok::Star => false,
        }
    }

    pub fn matches(&self, s: &str) -> bool {
        if let Some(l) = &self.literal {
            return l == s;
        }
        let chars: Vec<char> = s.chars().collect();
        let (mut p, mut i) = (0usize, 0usize);
        let mut back: Option<(usize, usize)> = None;
        while i < chars.len() {
            if p < self.toks.len() && self.toks[p] == Tok::Star {
                back = Some((p, i));
                p += 1;
            } else if p < self.toks.len() && Self::one(&self.toks[p], chars[i]) {
                p += 1;
                i += 1;
            } else if let Some((bp, bi)) = back {
                p = bp + 1;
                i = bi + 1;
                back = Some((bp, bi + 1));
            } else {
                return false;
            }
        }
        while p < self.toks.len() && self.toks[p] == Tok::Star {
            p += 1;
        }
        p == self.toks.len()
    }
}

/// A list of patterns; matches when any pattern does.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PatternList(pub Vec<Pattern>);

impl PatternList {
    pub fn new(items: &[String]) -> Result<PatternList, String> {
        items.iter().map(|s| Pattern::new(s)).collect::<Result<_, _>>().map(PatternList)
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    pub fn any(&self, s: &str) -> bool {
        self.0.iter().any(|p| p.matches(s))
    }
    /// CoT type matching: a literal entry matches the type itself and its sub-types
    /// (`a-f` matches `a-f` and `a-f-G-U-C`, not `a-fx`); a wildcard entry matches whole.
    pub fn any_type(&self, t: &str) -> bool {
        self.0.iter().any(|p| match p.as_literal() {
            Some(l) => t == l || (t.starts_with(l) && (l.ends_with('-') || t.as_bytes().get(l.len()) == Some(&b'-'))),
            None => p.matches(t),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, s: &str) -> bool {
        Pattern::new(p).unwrap().matches(s)
    }

    #[test]
    fn wildcards() {
        assert!(m("ops-*", "ops-alpha"));
        assert!(m("ops-*", "ops-"));
        assert!(!m("ops-*", "op"));
        assert!(m("*", ""));
        assert!(m("a?c", "abc") && !m("a?c", "ac"));
        assert!(m("team[12]", "team1") && !m("team[12]", "team3"));
        assert!(m("team[!12]", "team3") && !m("team[!12]", "team1"));
        assert!(m("x[a-c]y", "xby") && !m("x[a-c]y", "xdy"));
        assert!(m("*-exercise-*", "red-exercise-2026"));
        assert!(m("a*b*c", "aXXbYYc") && !m("a*b*c", "aXXbYY"));
        assert!(m("[]]", "]"));
        assert!(m("Б*", "Браво"));
        assert!(Pattern::new("[abc").is_err());
    }

    #[test]
    fn type_prefixes() {
        let l = PatternList::new(&["a-f".into(), "b-t-f".into()]).unwrap();
        assert!(l.any_type("a-f-G-U-C") && l.any_type("a-f") && l.any_type("b-t-f"));
        assert!(!l.any_type("a-fx") && !l.any_type("a-h-G") && !l.any_type("b-t"));
        let w = PatternList::new(&["a-?-A*".into()]).unwrap();
        assert!(w.any_type("a-h-A-M-F") && !w.any_type("a-h-G"));
    }
}
