//! Where a campaign or advertiser id is read from an ad server's answer: a response header, a JSON
//! pointer into the body (OpenRTB and Prebid Server answers), or a regular expression with one
//! capture group (an ad tag's click URL, a VAST `<Ad id="...">`).

use http::HeaderName;
use regex::bytes::Regex;

/// Longest id kappe accepts; longer ids are treated as absent so that a hostile upstream cannot
/// grow the campaign table with huge keys.
pub const MAX_ID_LEN: usize = 128;

/// One place to read an id from.
#[derive(Clone, Debug)]
pub enum Source {
    Header(HeaderName),
    Json(String),
    Regex(Regex),
}

/// Why a source did not parse.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("expected header:NAME, json:/pointer or regex:PATTERN")]
    Kind,
    #[error("invalid header name")]
    Header,
    #[error("a JSON pointer starts with /")]
    Pointer,
    #[error("invalid regex: {0}")]
    Regex(String),
    #[error("the regex must have exactly one capture group")]
    Groups,
}

impl Source {
    /// Parses `header:NAME`, `json:/pointer` or `regex:PATTERN`.
    ///
    /// # Errors
    /// [`SourceError`] naming what is wrong.
    pub fn parse(s: &str) -> Result<Self, SourceError> {
        let (kind, rest) = s.split_once(':').ok_or(SourceError::Kind)?;
        match kind {
            "header" => HeaderName::from_bytes(rest.trim().as_bytes())
                .map(Source::Header)
                .map_err(|_| SourceError::Header),
            "json" if rest.starts_with('/') => Ok(Source::Json(rest.to_owned())),
            "json" => Err(SourceError::Pointer),
            "regex" => {
                let re = regex::bytes::RegexBuilder::new(rest)
                    .size_limit(1 << 20)
                    .build()
                    .map_err(|e| SourceError::Regex(e.to_string()))?;
                if re.captures_len() != 2 {
                    return Err(SourceError::Groups);
                }
                Ok(Source::Regex(re))
            }
            _ => Err(SourceError::Kind),
        }
    }

    /// True when this source needs the response body.
    pub fn needs_body(&self) -> bool {
        !matches!(self, Source::Header(_))
    }

    /// The source as written.
    pub fn describe(&self) -> String {
        match self {
            Source::Header(h) => format!("header:{h}"),
            Source::Json(p) => format!("json:{p}"),
            Source::Regex(r) => format!("regex:{}", r.as_str()),
        }
    }

    /// Reads the id from the response field `field` finds by name (header sources only),
    /// borrowed from the field's value.
    pub fn from_field<'a>(
        &self,
        field: impl FnOnce(&http::HeaderName) -> Option<&'a http::HeaderValue>,
    ) -> Option<&'a str> {
        match self {
            Source::Header(name) => field(name).and_then(|v| id_in(v.as_bytes())),
            _ => None,
        }
    }

    /// Reads the id from a complete body (body sources only). `json` is the body parsed once by the
    /// caller, if it parsed.
    pub fn from_body(&self, body: &[u8], json: Option<&serde_json::Value>) -> Option<String> {
        match self {
            Source::Header(_) => None,
            Source::Json(pointer) => match json?.pointer(pointer)? {
                serde_json::Value::String(s) => valid_id(s.as_bytes()),
                serde_json::Value::Number(n) => valid_id(n.to_string().as_bytes()),
                _ => None,
            },
            Source::Regex(re) => valid_id(re.captures(body)?.get(1)?.as_bytes()),
        }
    }
}

/// An id is 1 to [`MAX_ID_LEN`] visible ASCII characters without commas (commas separate ids in
/// kappe's own headers).
pub fn valid_id(raw: &[u8]) -> Option<String> {
    id_in(raw).map(str::to_owned)
}

/// As [`valid_id`], borrowing the id from `raw`.
fn id_in(raw: &[u8]) -> Option<&str> {
    let raw = raw.trim_ascii();
    let ok = !raw.is_empty()
        && raw.len() <= MAX_ID_LEN
        && raw.iter().all(|b| b.is_ascii_graphic() && *b != b',');
    // Visible ASCII only, so the conversion never fails.
    if ok {
        std::str::from_utf8(raw).ok()
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// OpenRTB answers give the campaign by JSON pointer, ad tags by regex, and headers directly.
    #[test]
    fn sources_read_ids_from_headers_json_and_regex() {
        let json = br#"{"seatbid":[{"bid":[{"cid":"rt-42","adomain":["shop.example"]}]}]}"#;
        let parsed = serde_json::from_slice(json).ok();
        let s = Source::parse("json:/seatbid/0/bid/0/cid").unwrap();
        assert_eq!(s.from_body(json, parsed.as_ref()).as_deref(), Some("rt-42"));
        let s = Source::parse(r"regex:campaignid=(\d+)").unwrap();
        let tag = b"<a href='https://ads.example/click?campaignid=123&z=1'>";
        assert_eq!(s.from_body(tag, None).as_deref(), Some("123"));
        let s = Source::parse(r#"regex:<Ad id="([^"]+)""#).unwrap();
        assert_eq!(
            s.from_body(br#"<VAST><Ad id="v-9">"#, None).as_deref(),
            Some("v-9")
        );
        let mut h = http::HeaderMap::new();
        h.insert("x-campaign-id", "rt-shoes".parse().unwrap());
        let s = Source::parse("header:X-Campaign-Id").unwrap();
        assert_eq!(s.from_field(|n| h.get(n)), Some("rt-shoes"));
    }

    /// Malformed sources and hostile ids are refused.
    #[test]
    fn bad_sources_and_ids_are_refused() {
        assert!(Source::parse("body:/x").is_err());
        assert!(Source::parse("json:seatbid").is_err());
        assert!(Source::parse("regex:(a)(b)").is_err());
        assert!(Source::parse("regex:nogroup").is_err());
        assert!(Source::parse("regex:(").is_err());
        assert!(valid_id(&[b'a'; 200]).is_none());
        assert!(valid_id(b"a,b").is_none());
        assert!(valid_id(b"  ").is_none());
    }
}
