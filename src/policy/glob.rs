//! Glob patterns for campaign and advertiser ids: `*` matches any run of characters, `?` one
//! character, everything else itself. No character classes, so a pattern cannot be expensive.

/// A compiled glob. Matching is linear-time with at most one backtrack point (the classic
/// wildcard algorithm), so hostile ids cannot make it slow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Glob {
    pattern: String,
}

impl Glob {
    /// Any non-empty string is a valid pattern.
    pub fn new(pattern: &str) -> Option<Self> {
        (!pattern.is_empty()).then(|| Glob {
            pattern: pattern.to_owned(),
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.pattern
    }

    /// How specific the pattern is: the number of literal characters. Used to pick the most
    /// specific of several matching rules.
    pub fn specificity(&self) -> usize {
        self.pattern
            .chars()
            .filter(|c| *c != '*' && *c != '?')
            .count()
    }

    /// True when `text` matches the whole pattern.
    pub fn matches(&self, text: &str) -> bool {
        glob_match(self.pattern.as_bytes(), text.as_bytes())
    }
}

/// Matches `text` against `pat` byte-wise (ids are ASCII in practice; `?` matches one byte).
pub fn glob_match(pat: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pat.len() && (pat[p] == b'?' || pat[p] == text[t]) {
            p += 1;
            t += 1;
        } else if p < pat.len() && pat[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    while p < pat.len() && pat[p] == b'*' {
        p += 1;
    }
    p == pat.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Stars, question marks and literals match as a shell would.
    #[test]
    fn globs_match_like_a_shell() {
        let g = |p: &str, t: &str| Glob::new(p).unwrap().matches(t);
        assert!(g("*", "anything"));
        assert!(g("rt-*", "rt-shoes"));
        assert!(!g("rt-*", "brand-shoes"));
        assert!(g("rt-?hoes", "rt-shoes"));
        assert!(g("*shoes*", "rt-shoes-2"));
        assert!(!g("shoes", "shoes2"));
        assert!(g("a*b*c", "a-b-b-c"));
        assert!(!g("a*b*c", "a-b-b-"));
        assert_eq!(Glob::new("rt-*").unwrap().specificity(), 3);
    }
}
