//! Fuzzes kappe's HTTP/1 head reader against httparse: the input is read as a request head and
//! as a response head, with at most four fields, by `kappe::head` and by httparse. They must
//! agree on whether the head is complete, incomplete, malformed or has too many fields, and on
//! what a complete head holds, once kappe's caller has checked that each name is a token (see
//! `kappe::head`). The one allowed difference is that documented there: while a head with a bad
//! name is incomplete, httparse refuses it and kappe waits, refusing it once the head ends.
#![no_main]

use kappe::head::{HeadError, Spans, read_request, read_response};
use libfuzzer_sys::fuzz_target;

const MAX: usize = 4;

/// A verdict on a head, comparable between the two parsers.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// Length, minor version, the first line's parts, the fields.
    Complete(usize, u8, Vec<u8>, Vec<(Vec<u8>, Vec<u8>)>),
    Partial,
    TooMany,
    Malformed,
}

fn kappe(buf: &[u8], request: bool) -> Verdict {
    let mut spans = Spans::new();
    let read = if request {
        read_request(buf, MAX, &mut spans).map(|r| {
            r.map(|l| {
                let (m, t) = (l.method, l.target);
                let first = [&buf[m.0..m.0 + m.1], b" ", &buf[t.0..t.0 + t.1]].concat();
                (l.len, l.minor, first)
            })
        })
    } else {
        read_response(buf, MAX, &mut spans)
            .map(|r| r.map(|l| (l.len, l.minor, l.code.to_string().into_bytes())))
    };
    let names_ok = spans
        .iter()
        .all(|s| http::HeaderName::from_bytes(&buf[s.0..s.0 + s.1]).is_ok());
    match read {
        Ok(Some((len, minor, first))) if names_ok => {
            let fields = spans
                .iter()
                .map(|s| (buf[s.0..s.0 + s.1].to_vec(), buf[s.2..s.2 + s.3].to_vec()))
                .collect();
            Verdict::Complete(len, minor, first, fields)
        }
        Ok(None) => Verdict::Partial,
        Err(HeadError::TooManyFields) if names_ok => Verdict::TooMany,
        Ok(Some(_)) | Err(_) => Verdict::Malformed,
    }
}

fn httparse(buf: &[u8], request: bool) -> Verdict {
    let mut headers = [httparse::EMPTY_HEADER; MAX];
    let (parsed, version, first, fields) = if request {
        let mut req = httparse::Request::new(&mut headers);
        let parsed = req.parse(buf);
        let first = format!("{} {}", req.method.unwrap_or(""), req.path.unwrap_or(""));
        (parsed, req.version, first, fields_of(req.headers))
    } else {
        let mut resp = httparse::Response::new(&mut headers);
        let parsed = resp.parse(buf);
        let first = resp.code.unwrap_or(0).to_string();
        (parsed, resp.version, first, fields_of(resp.headers))
    };
    match parsed {
        Ok(httparse::Status::Complete(len)) => {
            Verdict::Complete(len, version.unwrap_or(9), first.into_bytes(), fields)
        }
        Ok(httparse::Status::Partial) => Verdict::Partial,
        Err(httparse::Error::TooManyHeaders) => Verdict::TooMany,
        Err(_) => Verdict::Malformed,
    }
}

fn fields_of(headers: &[httparse::Header<'_>]) -> Vec<(Vec<u8>, Vec<u8>)> {
    headers
        .iter()
        .map(|h| (h.name.as_bytes().to_vec(), h.value.to_vec()))
        .collect()
}

fuzz_target!(|data: &[u8]| {
    for request in [true, false] {
        let (ours, theirs) = (kappe(data, request), httparse(data, request));
        if ours == theirs {
            continue;
        }
        let whole = [data, b"\r\n\r\n"].concat();
        assert!(
            ours == Verdict::Partial
                && theirs == Verdict::Malformed
                && kappe(&whole, request) == Verdict::Malformed,
            "request {request}: kappe {ours:?}, httparse {theirs:?}"
        );
    }
});
