//! Reading an HTTP/1 head in one pass, a visitor's request ([`read_request`]) or an upstream's
//! answer ([`read_response`]): its first line, and where each field's name and value lie in
//! the buffer ([`Spans`]), ready for the proxy's `wire::fields_map`.
//!
//! A head is accepted exactly when httparse, in its default configuration, accepts it: the
//! rules kappe applied before it read heads itself, and the ones the visitor connection's framing
//! guard (`server::framing`) follows.
//! - empty lines before the first line are skipped; a line ends in CRLF or a bare LF, and a CR
//!   not followed by LF is an error;
//! - a request line is a method of token characters, one space, a target of visible ASCII and
//!   bytes from 0x80 that is UTF-8, one space, and `HTTP/1.0` or `HTTP/1.1`;
//! - a status line is `HTTP/1.0` or `HTTP/1.1`, one space, three digits, then the end of the
//!   line or a space and a reason of tab, space, visible ASCII and bytes from 0x80;
//! - a field name is one or more token characters directly followed by `:` (no space before
//!   the colon, no line folding, no leading space);
//! - a value is tab, space, visible ASCII and bytes from 0x80, with the spaces and tabs around
//!   it left out;
//! - a head with more fields than the caller allows is an error once the first field too many
//!   has been read whole.
//!
//! One check is left to the caller: here a name is visible ASCII up to the colon, and that it
//! is made of token characters is checked where it is looked up, when `fields_map` turns it
//! into a `HeaderName` (or finds it among the names it has already checked), and refuses the
//! head otherwise. A head with a bad name is therefore refused once it is whole, where httparse
//! refused it as soon as it saw the byte. A NUL, a control byte or a space in a name is still
//! refused at once.
//!
//! The tests, and the `head` fuzz target, hold both readers, with that name check, to httparse's
//! verdicts on generated heads.
//! The scan is what makes them cheaper: names, values and targets are checked eight bytes at a
//! time, and the spans are written as the fields are found, not worked out afterwards from
//! slices.

/// Where each field of a head lies in the buffer it was read from: offsets and lengths of name
/// and value, so that they can be sliced out of the head once it is split off and frozen.
pub type Spans = Vec<(usize, usize, usize, usize)>;

/// An answer's status line, and the length of the whole head in the buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StatusLine {
    /// The minor version: 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor: u8,
    pub code: u16,
    /// The bytes from the start of the buffer to the end of the empty line closing the head.
    pub len: usize,
}

/// Why a head could not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeadError {
    /// A byte where the rules above allow none.
    Malformed,
    /// More fields than the caller allows.
    TooManyFields,
}

/// `Ok(None)`: the buffer ends before the head does (and nothing read so far is wrong).
type Read<T> = Result<Option<T>, HeadError>;

/// Whether a byte may stand in a field value or a reason: tab, space, visible ASCII, and bytes
/// from 0x80 (obs-text).
fn is_value_byte(b: u8) -> bool {
    b == b'\t' || (b' '..=0x7e).contains(&b) || b >= 0x80
}

/// Reads an answer's head at the start of `buf`, putting the spans of its fields into `spans`
/// (cleared first). At most `max_fields` fields are accepted. The names are not yet checked to
/// be tokens: that is the caller's part (see the module documentation).
///
/// # Errors
/// [`HeadError::Malformed`] for a byte the rules refuse, [`HeadError::TooManyFields`] for a
/// head with more fields than `max_fields` (`spans` then holds the fields read, the one too
/// many included, for the caller to check their names first if it wants httparse's verdict).
pub fn read_response(buf: &[u8], max_fields: usize, spans: &mut Spans) -> Read<StatusLine> {
    spans.clear();
    let Some(at) = skip_empty_lines(buf)? else {
        return Ok(None);
    };
    let Some((minor, code, at)) = status_line(buf, at)? else {
        return Ok(None);
    };
    Ok(fields(buf, at, max_fields, spans)?.map(|len| StatusLine { minor, code, len }))
}

/// A request's head as [`read_request`] found it: where its method and target lie in the
/// buffer, its version, and the length of the whole head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestLine {
    /// Offset and length of the method, token characters.
    pub method: (usize, usize),
    /// Offset and length of the request target: visible ASCII and UTF-8 from 0x80.
    pub target: (usize, usize),
    /// The minor version: 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor: u8,
    /// The bytes from the start of the buffer to the end of the empty line closing the head.
    pub len: usize,
}

/// Reads a request's head at the start of `buf`, as [`read_response`] reads an answer's, with
/// httparse's request line: a method of token characters, one space, a target of visible ASCII
/// and bytes from 0x80 that is UTF-8, one space, `HTTP/1.0` or `HTTP/1.1`, and the line's end.
///
/// # Errors
/// As [`read_response`].
pub fn read_request(buf: &[u8], max_fields: usize, spans: &mut Spans) -> Read<RequestLine> {
    spans.clear();
    let Some(at) = skip_empty_lines(buf)? else {
        return Ok(None);
    };
    let Some(line) = request_line(buf, at)? else {
        return Ok(None);
    };
    Ok(fields(buf, line.len, max_fields, spans)?.map(|len| RequestLine { len, ..line }))
}

/// The position of the first byte after the empty lines at the start of `buf`.
fn skip_empty_lines(buf: &[u8]) -> Read<usize> {
    let mut at = 0;
    loop {
        match buf.get(at) {
            None => return Ok(None),
            Some(b'\r') => match line_feed(buf, at + 1)? {
                Some(next) => at = next,
                None => return Ok(None),
            },
            Some(b'\n') => at += 1,
            Some(_) => return Ok(Some(at)),
        }
    }
}

/// The field lines from `at` on, into `spans`, up to the empty line that ends the head: the
/// position after that line.
fn fields(buf: &[u8], mut at: usize, max_fields: usize, spans: &mut Spans) -> Read<usize> {
    loop {
        let Some(&first) = buf.get(at) else {
            return Ok(None);
        };
        // The empty line that ends the head.
        if first == b'\r' || first == b'\n' {
            return line_end(buf, at);
        }
        let Some((span, next)) = field(buf, at)? else {
            return Ok(None);
        };
        // The field too many is kept too, for the caller to check its name like the others.
        spans.push(span);
        if spans.len() > max_fields {
            return Err(HeadError::TooManyFields);
        }
        at = next;
    }
}

/// The position after the LF that must stand at `at`, following a CR.
fn line_feed(buf: &[u8], at: usize) -> Result<Option<usize>, HeadError> {
    match buf.get(at) {
        None => Ok(None),
        Some(b'\n') => Ok(Some(at + 1)),
        Some(_) => Err(HeadError::Malformed),
    }
}

/// The position after the line end (CRLF or LF) that must start at `at`.
fn line_end(buf: &[u8], at: usize) -> Read<usize> {
    match buf.get(at) {
        None => Ok(None),
        Some(b'\r') => line_feed(buf, at + 1),
        Some(b'\n') => Ok(Some(at + 1)),
        Some(_) => Err(HeadError::Malformed),
    }
}

/// The HTTP version of a head's `minor` version, as [`read_request`] and [`read_response`]
/// give it (0 or 1).
#[must_use]
pub fn version_of(minor: u8) -> http::Version {
    if minor == 0 {
        http::Version::HTTP_10
    } else {
        http::Version::HTTP_11
    }
}

/// The minor version of the `HTTP/1.x` at `at`.
fn version(buf: &[u8], at: usize) -> Read<u8> {
    const PREFIX: &[u8; 7] = b"HTTP/1.";
    let rest = &buf[at.min(buf.len())..];
    if rest.len() < 8 {
        // Too short to tell the version: wrong already, or perhaps right once more arrives.
        return if PREFIX.starts_with(rest) {
            Ok(None)
        } else {
            Err(HeadError::Malformed)
        };
    }
    match &rest[..8] {
        b"HTTP/1.0" => Ok(Some(0)),
        b"HTTP/1.1" => Ok(Some(1)),
        _ => Err(HeadError::Malformed),
    }
}

/// The status line starting at `at`: minor version, code, and the position after its end.
fn status_line(buf: &[u8], at: usize) -> Read<(u8, u16, usize)> {
    let Some(minor) = version(buf, at)? else {
        return Ok(None);
    };
    let mut i = at + 8;
    match buf.get(i) {
        None => return Ok(None),
        Some(b' ') => i += 1,
        Some(_) => return Err(HeadError::Malformed),
    }
    let mut code = 0u16;
    for _ in 0..3 {
        match buf.get(i) {
            None => return Ok(None),
            Some(d @ b'0'..=b'9') => code = code * 10 + u16::from(d - b'0'),
            Some(_) => return Err(HeadError::Malformed),
        }
        i += 1;
    }
    match buf.get(i) {
        None => Ok(None),
        Some(b' ') => {
            i += 1;
            loop {
                match buf.get(i) {
                    None => return Ok(None),
                    Some(b'\r' | b'\n') => break,
                    Some(&b) if is_value_byte(b) => i += 1,
                    Some(_) => return Err(HeadError::Malformed),
                }
            }
            Ok(line_end(buf, i)?.map(|end| (minor, code, end)))
        }
        Some(b'\r' | b'\n') => Ok(line_end(buf, i)?.map(|end| (minor, code, end))),
        Some(_) => Err(HeadError::Malformed),
    }
}

/// Token characters (RFC 9110 section 5.6.2), which a method is made of.
static TOKEN: [bool; 256] = {
    let mut map = [false; 256];
    let mut i = 0;
    while i < 256 {
        map[i] = matches!(i as u8,
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9'
            | b'!' | b'#' | b'$' | b'%' | b'&' | b'\'' | b'*' | b'+'
            | b'-' | b'.' | b'^' | b'_' | b'`' | b'|' | b'~');
        i += 1;
    }
    map
};

/// The request line starting at `at`, its `len` the position after the line's end.
fn request_line(buf: &[u8], at: usize) -> Read<RequestLine> {
    let mut i = at;
    loop {
        match buf.get(i) {
            None => return Ok(None),
            Some(b' ') if i > at => break,
            Some(&b) if TOKEN[usize::from(b)] => i += 1,
            Some(_) => return Err(HeadError::Malformed),
        }
    }
    let method = (at, i - at);
    let start = i + 1;
    i = target_end(buf, start);
    match buf.get(i) {
        None => return Ok(None),
        Some(b' ') if i > start => {}
        Some(_) => return Err(HeadError::Malformed),
    }
    let target = &buf[start..i];
    if !target.is_ascii() && std::str::from_utf8(target).is_err() {
        return Err(HeadError::Malformed);
    }
    let Some(minor) = version(buf, i + 1)? else {
        return Ok(None);
    };
    Ok(line_end(buf, i + 9)?.map(|len| RequestLine {
        method,
        target: (start, i - start),
        minor,
        len,
    }))
}

/// The field line starting at `at` (whose first byte is neither CR nor LF): its span and the
/// position after its end.
fn field(buf: &[u8], at: usize) -> Read<((usize, usize, usize, usize), usize)> {
    // The name: visible ASCII up to the colon (token characters, checked by the caller).
    let mut i = name_end(buf, at);
    match buf.get(i) {
        None => return Ok(None),
        Some(b':') if i > at => {}
        Some(_) => return Err(HeadError::Malformed),
    }
    let name = (at, i - at);
    i += 1;
    // Spaces and tabs before the value.
    while let Some(b' ' | b'\t') = buf.get(i) {
        i += 1;
    }
    let start = i;
    i = value_end(buf, i);
    let Some(next) = line_end(buf, i)? else {
        return Ok(None);
    };
    // Spaces and tabs after it.
    let mut end = i;
    while end > start && matches!(buf[end - 1], b' ' | b'\t') {
        end -= 1;
    }
    Ok(Some(((name.0, name.1, start, end - start), next)))
}

/// Eight bytes from `at` as one word, the first byte lowest; `None` near the buffer's end.
fn word(buf: &[u8], at: usize) -> Option<u64> {
    let bytes: [u8; 8] = buf.get(at..at + 8)?.try_into().ok()?;
    Some(u64::from_le_bytes(bytes))
}

const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);

/// The high bit of each byte of `x` equal to `b`. Borrows run only towards higher bytes, so the
/// lowest bit set always marks a byte that is `b` (higher ones may be false).
fn equal(x: u64, b: u8) -> u64 {
    let y = x ^ (ONES * u64::from(b));
    y.wrapping_sub(ONES) & !y & HIGHS
}

/// The high bit of each byte of `x` below `n` (`n` at most 0x80), with [`equal`]'s caveat.
fn below(x: u64, n: u8) -> u64 {
    x.wrapping_sub(ONES * u64::from(n)) & !x & HIGHS
}

/// The first position from `at` on whose byte is `:` or not visible ASCII (or the buffer's
/// end), eight bytes at a time.
fn name_end(buf: &[u8], mut at: usize) -> usize {
    while let Some(x) = word(buf, at) {
        let flagged = below(x, 0x21) | (x & HIGHS) | equal(x, b':') | equal(x, 0x7f);
        if flagged != 0 {
            return at + (flagged.trailing_zeros() / 8) as usize;
        }
        at += 8;
    }
    while let Some(&b) = buf.get(at) {
        if b == b':' || !b.is_ascii_graphic() {
            break;
        }
        at += 1;
    }
    at
}

/// The first position from `at` on whose byte is a space, a control byte or 0x7f (or the
/// buffer's end), eight bytes at a time: what may stand in a request target.
fn target_end(buf: &[u8], mut at: usize) -> usize {
    while let Some(x) = word(buf, at) {
        let flagged = below(x, 0x21) | equal(x, 0x7f);
        if flagged != 0 {
            return at + (flagged.trailing_zeros() / 8) as usize;
        }
        at += 8;
    }
    while let Some(&b) = buf.get(at) {
        if b <= b' ' || b == 0x7f {
            break;
        }
        at += 1;
    }
    at
}

/// The first position from `at` on whose byte may not stand in a value (or the buffer's end).
/// Eight bytes at a time: a word with no byte below 0x20 and none equal to 0x7f is all value
/// bytes; otherwise it goes on byte by byte from its first such byte (a tab may stand in a
/// value).
fn value_end(buf: &[u8], mut at: usize) -> usize {
    while let Some(x) = word(buf, at) {
        let flagged = below(x, 0x20) | equal(x, 0x7f);
        if flagged == 0 {
            at += 8;
            continue;
        }
        at += (flagged.trailing_zeros() / 8) as usize;
        if buf[at] != b'\t' {
            return at;
        }
        at += 1;
    }
    while let Some(&b) = buf.get(at) {
        if !is_value_byte(b) {
            break;
        }
        at += 1;
    }
    at
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A verdict on a head, comparable between this reader and httparse.
    #[derive(Debug, PartialEq, Eq)]
    enum Verdict {
        Complete {
            len: usize,
            minor: u8,
            /// The status code, or the method and the target.
            first: Vec<u8>,
            fields: Vec<(Vec<u8>, Vec<u8>)>,
        },
        Partial,
        TooMany,
        Malformed,
    }

    /// Whether `name` is one a `HeaderName` takes, the check `fields_map` applies to each name.
    fn token(name: &[u8]) -> bool {
        http::HeaderName::from_bytes(name).is_ok()
    }

    /// The verdict of a reader's result, with the caller's name check applied: a head with a
    /// name that is not a token is refused, also when it has too many fields. `first` is what
    /// tells the first line apart: the status code, or the method and target.
    fn verdict(buf: &[u8], spans: &Spans, read: Read<(usize, u8, Vec<u8>)>) -> Verdict {
        let names_ok = spans.iter().all(|s| token(&buf[s.0..s.0 + s.1]));
        match read {
            Ok(Some((len, minor, first))) if names_ok => Verdict::Complete {
                len,
                minor,
                first,
                fields: spans
                    .iter()
                    .map(|s| (buf[s.0..s.0 + s.1].to_vec(), buf[s.2..s.2 + s.3].to_vec()))
                    .collect(),
            },
            Ok(None) => Verdict::Partial,
            Err(HeadError::TooManyFields) if names_ok => Verdict::TooMany,
            Ok(Some(_)) | Err(_) => Verdict::Malformed,
        }
    }

    /// [`read_response`]'s verdict.
    fn ours(buf: &[u8], max: usize) -> Verdict {
        let mut spans = Spans::new();
        let read = read_response(buf, max, &mut spans);
        let read = read.map(|r| r.map(|l| (l.len, l.minor, l.code.to_string().into_bytes())));
        verdict(buf, &spans, read)
    }

    /// [`read_request`]'s verdict.
    fn ours_request(buf: &[u8], max: usize) -> Verdict {
        let mut spans = Spans::new();
        let read = read_request(buf, max, &mut spans);
        let read = read.map(|r| {
            r.map(|l| {
                let (m, t) = (l.method, l.target);
                let first = [&buf[m.0..m.0 + m.1], b" ", &buf[t.0..t.0 + t.1]].concat();
                (l.len, l.minor, first)
            })
        });
        verdict(buf, &spans, read)
    }

    /// httparse's verdict on the same bytes.
    fn theirs(buf: &[u8], max: usize) -> Verdict {
        let mut fields = vec![httparse::EMPTY_HEADER; max];
        let mut resp = httparse::Response::new(&mut fields);
        match resp.parse(buf) {
            Ok(httparse::Status::Complete(len)) => Verdict::Complete {
                len,
                minor: resp.version.unwrap_or(9),
                first: resp.code.unwrap_or(0).to_string().into_bytes(),
                fields: httparse_fields(resp.headers),
            },
            Ok(httparse::Status::Partial) => Verdict::Partial,
            Err(httparse::Error::TooManyHeaders) => Verdict::TooMany,
            Err(_) => Verdict::Malformed,
        }
    }

    /// httparse's verdict on a request.
    fn theirs_request(buf: &[u8], max: usize) -> Verdict {
        let mut fields = vec![httparse::EMPTY_HEADER; max];
        let mut req = httparse::Request::new(&mut fields);
        match req.parse(buf) {
            Ok(httparse::Status::Complete(len)) => Verdict::Complete {
                len,
                minor: req.version.unwrap_or(9),
                first: format!("{} {}", req.method.unwrap_or(""), req.path.unwrap_or(""))
                    .into_bytes(),
                fields: httparse_fields(req.headers),
            },
            Ok(httparse::Status::Partial) => Verdict::Partial,
            Err(httparse::Error::TooManyHeaders) => Verdict::TooMany,
            Err(_) => Verdict::Malformed,
        }
    }

    fn httparse_fields(headers: &[httparse::Header<'_>]) -> Vec<(Vec<u8>, Vec<u8>)> {
        headers
            .iter()
            .map(|h| (h.name.as_bytes().to_vec(), h.value.to_vec()))
            .collect()
    }

    /// Both verdicts agree, but for the one difference the module names: while a head with a
    /// bad name is incomplete, httparse refuses it and this reader waits; once the head ends,
    /// it is refused here too.
    fn agree(buf: &[u8], max: usize) -> Result<(), String> {
        agree_with(buf, max, ours, theirs)
    }

    /// [`agree`] for requests.
    fn agree_request(buf: &[u8], max: usize) -> Result<(), String> {
        agree_with(buf, max, ours_request, theirs_request)
    }

    fn agree_with(
        buf: &[u8],
        max: usize,
        ours: fn(&[u8], usize) -> Verdict,
        theirs: fn(&[u8], usize) -> Verdict,
    ) -> Result<(), String> {
        let (o, t) = (ours(buf, max), theirs(buf, max));
        if o == t {
            return Ok(());
        }
        if o == Verdict::Partial && t == Verdict::Malformed {
            let mut whole = buf.to_vec();
            whole.extend_from_slice(b"\r\n\r\n");
            if ours(&whole, max) == Verdict::Malformed {
                return Ok(());
            }
        }
        Err(format!(
            "{:?}: ours {o:?}, httparse {t:?}",
            String::from_utf8_lossy(buf)
        ))
    }

    const BANNER: &[u8] = b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\n\
        Date: Mon, 07 Dec 2026 12:00:00 GMT\r\nContent-Type: text/html\r\n\
        Content-Length: 117\r\nConnection: keep-alive\r\nX-Campaign-Id: rt-shoes\r\n\
        X-Retargeting: 1\r\n\r\n<a href=\"https://shop.example/shoes\">";

    /// A banner's head: status, the head's length, and each field's name and value in order;
    /// every shorter cut of it is incomplete.
    #[test]
    fn reads_a_banner_head_and_waits_for_the_rest() {
        let Verdict::Complete {
            len,
            minor,
            first,
            fields,
        } = ours(BANNER, 128)
        else {
            panic!("banner head not read");
        };
        assert_eq!((minor, &first[..]), (1, &b"200"[..]));
        assert_eq!(&BANNER[len..], b"<a href=\"https://shop.example/shoes\">");
        assert_eq!(fields.len(), 7);
        assert_eq!(
            fields[1],
            (b"Date".to_vec(), b"Mon, 07 Dec 2026 12:00:00 GMT".to_vec())
        );
        assert_eq!(fields[6], (b"X-Retargeting".to_vec(), b"1".to_vec()));
        for cut in 0..len {
            assert_eq!(ours(&BANNER[..cut], 128), Verdict::Partial, "cut at {cut}");
        }
        agree(BANNER, 128).unwrap();
    }

    /// The rules of the module documentation, each on a head of its own, as httparse decides.
    #[test]
    fn edge_cases_are_decided_as_httparse_decides() {
        let heads: &[&[u8]] = &[
            b"\r\n\nHTTP/1.1 204 No Content\n\n",
            b"HTTP/1.0 200\r\nA: b\r\n\r\n",
            b"HTTP/1.1 200 \r\n\r\n",
            b"HTTP/1.1 200 r\xe9ason \t!\r\n\r\n",
            b"HTTP/1.1 200 bad\x01reason\r\n\r\n",
            b"HTTP/1.1 200 OK\rX: y\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nX : y\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nX: y\r\n z\r\n\r\n",
            b"HTTP/1.1 200 OK\r\n X: y\r\n\r\n",
            b"HTTP/1.1 200 OK\r\n: y\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nX(Y: z\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nX\x80: z\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nX: \t a\tb \t\r\nE:\r\nF: \r\n\r\n",
            b"HTTP/1.1 200 OK\r\nX: a\x7fb\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nX: a\x00b\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nX: \xff\xfe\x80 high bytes pass\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nX: y\r\r\n\r\n",
            b"HTTP/1.1 200 OK\r\n\r",
            b"HTTP/1.1 200 OK\r\n\rx",
            b"HTTP/2.0 200 OK\r\n\r\n",
            b"HTTP/1.1  200 OK\r\n\r\n",
            b"HTTP/1.1 20 OK\r\n\r\n",
            b"HTTP/1.1 2000 OK\r\n\r\n",
            b"HTTP/1.",
            b"HTTP/1.1",
            b"HTTX",
            b"http/1.1 200 OK\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4",
            b"HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\r\nC(: 3\r\nD: 4\r\n",
            b"HTTP/1.1 200 OK\r\nLong-Name-Of-Twenty-Four: value of more than eight bytes\r\n\r\n",
        ];
        for head in heads {
            agree(head, 3).unwrap();
        }
    }

    /// A field line: a name, a separator, a value and a line end, each mostly right (so that
    /// what follows is read too) and sometimes wrong in one of the ways the rules name.
    fn field_line() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
        use proptest::prelude::*;
        let pick = |set: Vec<&'static [u8]>| proptest::sample::select(set);
        let bytes = |set: &'static [u8], len: std::ops::Range<usize>| {
            proptest::collection::vec(proptest::sample::select(set), len)
        };
        (
            prop_oneof![
                8 => bytes(b"abcXYZ019-_", 1..20),
                1 => bytes(b"aZ-!~|(\" \t:\x80\x7f\x01", 0..6),
            ],
            pick(vec![
                &b": "[..],
                b": ",
                b":",
                b":\t ",
                b" :",
                b"::",
                b": \t",
            ]),
            (
                bytes(b"abcdef0123, ;=/ \t\x80\xff", 0..24),
                prop_oneof![
                    6 => Just(Vec::new()),
                    1 => bytes(b"a\x7f\x00\x01\x1f\r\n", 1..3),
                ],
                pick(vec![&b""[..], b"", b"", b" ", b"\t", b" \t "]),
            )
                .prop_map(|(good, bad, blank)| [&good[..], &bad, blank].concat()),
            pick(vec![
                &b"\r\n"[..],
                b"\r\n",
                b"\r\n",
                b"\r\n",
                b"\n",
                b"\r",
                b"\r\r\n",
                b"\r\n ",
            ]),
        )
            .prop_map(|(name, sep, value, end)| [&name[..], sep, &value, end].concat())
    }

    /// Heads of an optional empty line, one of the `first` lines, up to five field lines and an
    /// end, whole or cut anywhere.
    fn head_of(first: Vec<&'static [u8]>) -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
        use proptest::prelude::*;
        (
            proptest::sample::select(vec![&b""[..], b"", b"", b"\r\n", b"\n", b"\r"]),
            proptest::sample::select(first),
            proptest::collection::vec(field_line(), 0..6),
            proptest::sample::select(vec![&b"\r\n"[..], b"\r\n", b"\n", b"\r", b""]),
            proptest::option::weighted(0.3, 0usize..200),
        )
            .prop_map(|(leading, first, fields, end, cut)| {
                let mut head = [leading, first].concat();
                for f in &fields {
                    head.extend_from_slice(f);
                }
                head.extend_from_slice(end);
                if let Some(cut) = cut {
                    head.truncate(cut);
                }
                head
            })
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config::with_cases(4096))]

        /// Answer heads of such lines, with at most three fields allowed: [`read_response`],
        /// with the caller's name check, decides as httparse.
        #[test]
        fn generated_heads_are_decided_as_httparse_decides(head in head_of(vec![
            &b"HTTP/1.1 200 OK\r\n"[..], b"HTTP/1.1 200 OK\r\n", b"HTTP/1.0 204\n",
            b"HTTP/1.1 404 Not Found\r\n", b"HTTP/1.1 200 \r\n", b"HTTP/1.1 200 r\xe9\r\n",
            b"HTTP/1.2 200 OK\r\n", b"HTTP/1.1 2x0 OK\r\n", b"HTTP/1.1 200\tOK\r\n",
            b"HTTP/1.1 200 O\x7fK\r\n", b"HTTP/1.1 200 OK\r\r\n", b"HTTP/1.1 200 OK\n",
        ])) {
            if let Err(e) = agree(&head, 3) {
                proptest::prop_assert!(false, "{}", e);
            }
        }

        /// Request heads of such lines, with at most three fields allowed: [`read_request`],
        /// with the caller's name check, decides as httparse.
        #[test]
        fn generated_requests_are_decided_as_httparse_decides(head in head_of(vec![
            &b"GET /ad?slot=top HTTP/1.1\r\n"[..], b"GET /ad HTTP/1.1\r\n",
            b"POST /x?y=1 HTTP/1.0\n", b"OPTIONS * HTTP/1.1\r\n",
            b"GET /caf\xc3\xa9/long-enough-path?with=a&query=string HTTP/1.1\r\n",
            b"GET /a\xffb HTTP/1.1\r\n", b"GET  /ad HTTP/1.1\r\n", b"GET /ad  HTTP/1.1\r\n",
            b"G(T /ad HTTP/1.1\r\n", b" GET /ad HTTP/1.1\r\n", b"GET /a\tb HTTP/1.1\r\n",
            b"GET /a\x7fb HTTP/1.1\r\n", b"GET /ad HTTP/1.2\r\n", b"GET /ad HTTP/1.1 \r\n",
            b"GET /ad HTTP/1.1\r\r\n", b"GET /ad\r\n", b"GET HTTP/1.1\r\n",
            b" / HTTP/1.1\r\n", b"GET  HTTP/1.1\r\n",
        ])) {
            if let Err(e) = agree_request(&head, 3) {
                proptest::prop_assert!(false, "{}", e);
            }
        }
    }

    /// A browser's request for an ad image: method, target, version and each field; every
    /// shorter cut is incomplete.
    #[test]
    fn reads_a_browser_request_and_waits_for_the_rest() {
        let head: &[u8] = b"GET /ad?slot=top&size=300x250 HTTP/1.1\r\nHost: ads.example\r\n\
            User-Agent: Mozilla/5.0 (X11; Linux x86_64) Chrome/131.0.0.0\r\n\
            Accept: image/avif,image/webp,*/*;q=0.8\r\nSec-Fetch-Dest: image\r\n\
            Cookie: kappe_id=v123; other=1\r\n\r\n";
        let Verdict::Complete {
            len,
            minor,
            first,
            fields,
        } = ours_request(head, 128)
        else {
            panic!("request head not read");
        };
        assert_eq!((len, minor), (head.len(), 1));
        assert_eq!(first, b"GET /ad?slot=top&size=300x250");
        assert_eq!(fields.len(), 5);
        assert_eq!(
            fields[4],
            (b"Cookie".to_vec(), b"kappe_id=v123; other=1".to_vec())
        );
        for cut in 0..len {
            assert_eq!(
                ours_request(&head[..cut], 128),
                Verdict::Partial,
                "cut at {cut}"
            );
        }
        agree_request(head, 128).unwrap();
    }

    /// The request line's rules, each on a head of its own, as httparse decides; and the guard's
    /// NUL, refused at once wherever it stands.
    #[test]
    fn request_edge_cases_are_decided_as_httparse_decides() {
        let heads: &[&[u8]] = &[
            b"\r\n\nGET / HTTP/1.1\n\n",
            b"GET / HTTP/1.0\r\nA: b\r\n\r\n",
            b"GET /\xc3\xa9 HTTP/1.1\r\n\r\n",
            b"GET /\xc3 HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\rX: y\r\n\r\n",
            b"GET / HTTP/1.1\r\nX : y\r\n\r\n",
            b"GET / HTTP/1.1\r\nX: y\r\n z\r\n\r\n",
            b"GET / HTTP/1.1\r\nX(Y: z\r\n\r\n",
            b"GET / HTTP/1.",
            b"GET / HTTX",
            b"GET",
            b"GE\x00T / HTTP/1.1\r\n\r\n",
            b"GET /\x00 HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nHo\x00\n\n",
            b"GET / HTTP/1.1\r\nHost: a\x00\n\n",
            b"GET / HTTP/1.1\r\n\x00\n\n",
            b"get / http/1.1\r\n\r\n",
            b"GET /a b HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\n",
        ];
        for head in heads {
            agree_request(head, 3).unwrap();
        }
        for head in &heads[11..16] {
            assert_eq!(ours_request(head, 3), Verdict::Malformed, "{head:?}");
        }
    }
}
