//! The request's cookies: a tolerant, bounded parser over every `Cookie` header line, and the
//! rebuild that drops named cookies (`--strip-cookies` for opted-out visitors).
//!
//! The parser runs on every request (the proxy reads its visitor id cookie with it), so it
//! borrows from the headers, allocates nothing, and stops after [`MAX_COOKIE_BYTES`] bytes or
//! [`MAX_COOKIES`] pairs: a request stuffed with cookies costs a bounded amount of work, and a
//! cookie beyond the bound is treated as absent.

use http::HeaderMap;
use http::header::{COOKIE, GetAll, HeaderValue, ValueIter};

/// Bytes of `Cookie` header text examined per request.
pub const MAX_COOKIE_BYTES: usize = 16 * 1024;
/// Cookie pairs examined per request.
pub const MAX_COOKIES: usize = 256;

/// Iterator over `(name, value)` of all `Cookie` headers; see [`cookies`].
pub struct Cookies<'a> {
    lines: ValueIter<'a, HeaderValue>,
    rest: &'a [u8],
    /// Whether `rest` is valid UTF-8: then so is each piece of it cut at ASCII bytes.
    text: bool,
    budget: usize,
    pairs: usize,
}

/// Every cookie of the request as `(name, value)`, in order, across all `Cookie` header lines.
/// Whitespace around names and values and a pair of double quotes around a value are removed.
/// Pairs without `=`, with an empty name, or not valid UTF-8 are skipped.
pub fn cookies(headers: &HeaderMap) -> Cookies<'_> {
    let all: GetAll<'_, HeaderValue> = headers.get_all(COOKIE);
    Cookies {
        lines: all.iter(),
        rest: &[],
        text: true,
        budget: MAX_COOKIE_BYTES,
        pairs: 0,
    }
}

fn trim(b: &[u8]) -> &[u8] {
    let start = b
        .iter()
        .position(|c| !matches!(c, b' ' | b'\t'))
        .unwrap_or(b.len());
    let end = b
        .iter()
        .rposition(|c| !matches!(c, b' ' | b'\t'))
        .map_or(start, |e| e + 1);
    &b[start..end.max(start)]
}

impl<'a> Iterator for Cookies<'a> {
    type Item = (&'a str, &'a str);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.pairs >= MAX_COOKIES {
                return None;
            }
            if self.rest.is_empty() {
                let line = self.lines.next()?.as_bytes();
                if self.budget == 0 {
                    return None;
                }
                // Truncating at the budget may cut the last pair short; it is then parsed as a
                // shorter value, which only matters beyond the documented bound.
                let take = line.len().min(self.budget);
                self.budget -= take;
                self.rest = &line[..take];
                // Checked once for the line rather than twice for each of its pairs.
                self.text = std::str::from_utf8(self.rest).is_ok();
                continue;
            }
            let (pair, rest) = match self.rest.iter().position(|&c| c == b';') {
                Some(i) => (&self.rest[..i], &self.rest[i + 1..]),
                None => (self.rest, &[][..]),
            };
            self.rest = rest;
            self.pairs += 1;
            let Some(eq) = pair.iter().position(|&c| c == b'=') else {
                continue;
            };
            let name = trim(&pair[..eq]);
            let mut value = trim(&pair[eq + 1..]);
            if value.len() >= 2 && value[0] == b'"' && value[value.len() - 1] == b'"' {
                value = &value[1..value.len() - 1];
            }
            if name.is_empty() {
                continue;
            }
            if self.text {
                // SAFETY: `name` and `value` are pieces of `rest`, which is valid UTF-8, cut
                // only next to ASCII bytes (`;`, `=`, blanks, quotes), which are never inside a
                // character's encoding.
                #[allow(unsafe_code)]
                return Some(unsafe {
                    (
                        std::str::from_utf8_unchecked(name),
                        std::str::from_utf8_unchecked(value),
                    )
                });
            }
            if let (Ok(n), Ok(v)) = (std::str::from_utf8(name), std::str::from_utf8(value)) {
                return Some((n, v));
            }
        }
    }
}

/// Pairs a [`Jar`] keeps without allocating: a visitor usually sends a handful.
const JAR_INLINE: usize = 8;

/// The request's cookies parsed once, as [`cookies`] yields them, for every reader on the
/// request's way (privacy signals, then the visitor id). The first eight pairs are
/// kept inline, any more on the heap.
pub struct Jar<'a> {
    inline: [(&'a str, &'a str); JAR_INLINE],
    len: usize,
    more: Vec<(&'a str, &'a str)>,
}

impl<'a> Jar<'a> {
    /// The cookies of `headers`.
    pub fn parse(headers: &'a HeaderMap) -> Self {
        let mut jar = Jar {
            inline: [("", ""); JAR_INLINE],
            len: 0,
            more: Vec::new(),
        };
        for pair in cookies(headers) {
            if jar.len < JAR_INLINE {
                jar.inline[jar.len] = pair;
                jar.len += 1;
            } else {
                jar.more.push(pair);
            }
        }
        jar
    }

    /// The pairs, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&'a str, &'a str)> + '_ {
        self.inline[..self.len].iter().chain(&self.more).copied()
    }
}

/// The `Cookie` header to send upstream without the cookies named in `names`: all `Cookie`
/// lines joined with `"; "`, every other piece kept as it was (junk included, so the upstream
/// sees what it would have seen). `None` when nothing remains, meaning: send no `Cookie` header.
/// Unlike [`cookies`] this has no pair bound: it runs only for opted-out visitors, and its
/// work is linear in header size, which the server already bounds.
pub fn strip_cookies(headers: &HeaderMap, names: &[&str]) -> Option<HeaderValue> {
    let mut out: Vec<u8> = Vec::new();
    for line in headers.get_all(COOKIE) {
        for piece in line.as_bytes().split(|&c| c == b';') {
            let piece = trim(piece);
            if piece.is_empty() {
                continue;
            }
            let name = trim(piece.split(|&c| c == b'=').next().unwrap_or(piece));
            if names.iter().any(|n| n.as_bytes() == name) {
                continue;
            }
            if !out.is_empty() {
                out.extend_from_slice(b"; ");
            }
            out.extend_from_slice(piece);
        }
    }
    if out.is_empty() {
        return None;
    }
    // The pieces come from valid header values and "; " is valid, so this cannot fail; if it
    // somehow did, sending no cookies is the privacy-safe outcome.
    HeaderValue::from_bytes(&out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(lines: &[&[u8]]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for l in lines {
            h.append(COOKIE, HeaderValue::from_bytes(l).unwrap());
        }
        h
    }

    /// A jar holds what the parser yields, in order, past its inline pairs and across lines.
    #[test]
    fn a_jar_holds_the_parsed_pairs() {
        let h = map(&[
            b"a=1; b=2; c=3; d=4; e=5",
            b"f=6; g=7; h=8; i=9; =x; j=\"10\"",
        ]);
        let jar = Jar::parse(&h);
        let parsed: Vec<_> = cookies(&h).collect();
        assert_eq!(parsed.len(), 10);
        assert_eq!(jar.iter().collect::<Vec<_>>(), parsed);
        assert_eq!(jar.iter().last(), Some(("j", "10")));
        assert_eq!(Jar::parse(&HeaderMap::new()).iter().count(), 0);
    }

    /// Cookies from several header lines are all seen, trimmed and unquoted; junk is skipped.
    #[test]
    fn parses_all_lines_and_skips_junk() {
        let h = map(&[
            b"a=1; b = \"two\" ;junk; =x;;c=",
            b"kappe_optout=1",
            b"d=\xff; e=5",
        ]);
        let got: Vec<_> = cookies(&h).collect();
        assert_eq!(
            got,
            vec![
                ("a", "1"),
                ("b", "two"),
                ("c", ""),
                ("kappe_optout", "1"),
                ("e", "5")
            ]
        );
    }

    /// The pairs of some lines as the parser's documentation says, each name and value checked
    /// to be UTF-8 on its own (the parser checks each line once).
    fn reference(lines: &[Vec<u8>]) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for line in lines {
            for pair in line.split(|&c| c == b';') {
                let Some(eq) = pair.iter().position(|&c| c == b'=') else {
                    continue;
                };
                let name = trim(&pair[..eq]);
                let mut value = trim(&pair[eq + 1..]);
                if value.len() >= 2 && value[0] == b'"' && value[value.len() - 1] == b'"' {
                    value = &value[1..value.len() - 1];
                }
                if let (false, Ok(n), Ok(v)) = (
                    name.is_empty(),
                    std::str::from_utf8(name),
                    std::str::from_utf8(value),
                ) {
                    out.push((n.to_owned(), v.to_owned()));
                }
            }
        }
        out
    }

    proptest::proptest! {
        /// Lines of separators, blanks, quotes, a two-byte character's bytes and a byte that is
        /// never UTF-8, in any order: the parser yields what checking each pair would.
        #[test]
        fn pairs_are_those_of_valid_utf8_pieces(
            lines in proptest::collection::vec(
                proptest::collection::vec(
                    proptest::sample::select(
                        &[b'a', b'b', b'=', b';', b' ', b'\t', b'"', 0xc3, 0xa9, 0xff][..]
                    ),
                    0..40,
                ),
                1..4,
            )
        ) {
            let refs: Vec<&[u8]> = lines.iter().map(Vec::as_slice).collect();
            let h = map(&refs);
            let got: Vec<(String, String)> =
                cookies(&h).map(|(n, v)| (n.to_owned(), v.to_owned())).collect();
            proptest::prop_assert_eq!(got, reference(&lines));
        }
    }

    /// No Cookie header means no cookies.
    #[test]
    fn no_header_no_cookies() {
        assert_eq!(cookies(&HeaderMap::new()).count(), 0);
    }

    /// A request stuffed with cookies is examined only up to the pair bound.
    #[test]
    fn pair_count_is_bounded() {
        let line = "x=1; ".repeat(MAX_COOKIES * 4);
        let h = map(&[line.as_bytes(), b"late=1"]);
        assert_eq!(cookies(&h).count(), MAX_COOKIES);
        assert!(!cookies(&h).any(|(n, _)| n == "late"));
    }

    /// Header bytes beyond the byte bound are not examined.
    #[test]
    fn byte_count_is_bounded() {
        let big = format!("pad={}", "a".repeat(MAX_COOKIE_BYTES));
        let h = map(&[big.as_bytes(), b"late=1"]);
        assert!(!cookies(&h).any(|(n, _)| n == "late"));
        assert!(cookies(&h).all(|(_, v)| v.len() < MAX_COOKIE_BYTES));
    }

    /// Stripping removes only the named cookies, across lines, keeping the rest in order.
    #[test]
    fn strip_removes_named_cookies_only() {
        let h = map(&[b"a=1; kappe_vid=abc; b=2", b"kappe_vid=dup; c=3"]);
        let v = strip_cookies(&h, &["kappe_vid"]).unwrap();
        assert_eq!(v.to_str().unwrap(), "a=1; b=2; c=3");
    }

    /// When every cookie is stripped, no Cookie header is to be sent.
    #[test]
    fn strip_everything_means_no_header() {
        let h = map(&[b"kappe_vid=abc; ;"]);
        assert_eq!(strip_cookies(&h, &["kappe_vid"]), None);
        assert_eq!(strip_cookies(&HeaderMap::new(), &["x"]), None);
    }
}
