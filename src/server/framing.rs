//! The HTTP/1 message framing of one visitor connection, followed byte by byte beside the
//! server's parser, so that a request head that two HTTP parsers could frame differently is
//! found before the server (`h1.rs`) reads it whole.
//!
//! A request that carries both `Content-Length` and `Transfer-Encoding`, or two equal
//! `Content-Length` fields, has a reading that HTTP allows, but a server behind another front end
//! could read it the other way, which is how requests are smuggled (RFC 9112 sections 6.1 and
//! 6.3); so kappe refuses both. [`Framing`] follows the stream the way the server does: heads end
//! where the server's head reader ends them (CRLF or bare LF, empty lines before a request line
//! skipped), bodies are skipped by `Content-Length` or by the chunked grammar, and only the names
//! of header fields are looked at. It owns no I/O and no buffer (a few integers per connection,
//! one pass over each received byte); `super::guard` applies its verdicts to the bytes the server
//! reads.
//!
//! The tracker must never be stricter than the server: a head or chunk the server accepts has
//! to be framed here exactly as the server frames it, or the two would lose step. Where the
//! server rejects the input (a malformed request line, a space before a colon, a chunk line its
//! decoder refuses), the tracker may read it any way: the server answers with an error or ends
//! the body, closes the connection, and parses nothing after it.

/// The HTTP/2 connection preface: a connection that starts with it is HTTP/2 with prior
/// knowledge, which the server hands to hyper's HTTP/2 server.
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Why a request head is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ambiguity {
    /// `Content-Length` and `Transfer-Encoding` in one head, in either order.
    LengthWithTransferEncoding,
    /// More than one `Content-Length` field, even with equal values.
    DuplicateLength,
    /// A `Content-Length` that is not one decimal number of at most 64 bits (a list, a sign,
    /// nothing). The server refuses these too; refusing them here keeps the tracker's reading of
    /// a length exactly the one the server uses.
    InvalidLength,
}

impl Ambiguity {
    /// A short, fixed description for logs.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Ambiguity::LengthWithTransferEncoding => "content-length with transfer-encoding",
            Ambiguity::DuplicateLength => "duplicate content-length",
            Ambiguity::InvalidLength => "invalid content-length",
        }
    }
}

/// What the tracker makes of the bytes it was shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Every byte may reach the server.
    Pass,
    /// The head that byte `keep` belongs to is ambiguous: the bytes before it may reach the
    /// server (earlier pipelined requests and the head's harmless beginning), byte `keep` and
    /// everything after it must not. The server has to be shown a malformed head instead, so
    /// that it answers 400 after the earlier responses.
    Refuse { keep: usize, why: Ambiguity },
    /// Only the first `keep` bytes may reach the server, then the end of the stream: a chunked
    /// body broke its framing on the last of them, where the server's decoder fails too, and nothing after
    /// that point can be framed.
    Truncate { keep: usize },
}

/// The header fields that decide a request's framing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Field {
    ContentLength,
    TransferEncoding,
}

impl Field {
    /// The field name in lower case.
    fn name(self) -> &'static [u8] {
        match self {
            Field::ContentLength => b"content-length",
            Field::TransferEncoding => b"transfer-encoding",
        }
    }
}

/// Where in a `Content-Length` value the tracker is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LengthPart {
    /// Whitespace after the colon.
    Before,
    Digits,
    /// Whitespace after the digits.
    After,
    /// A CR that has to be followed by LF.
    Cr,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// The first bytes of the connection, this many of them equal to the HTTP/2 preface.
    Preface(u8),
    /// HTTP/2 with prior knowledge: the bytes are not HTTP/1 and pass unseen.
    PassThrough,
    /// A verdict other than [`Verdict::Pass`] was given; nothing more may pass.
    Stopped,
    /// Between messages: the server's head reader skips empty lines before a request line.
    Idle,
    /// A CR between messages.
    IdleCr,
    RequestLine,
    /// The start of a header line, or of the empty line that ends the head.
    LineStart,
    /// A CR at the start of a line: the head ends with the LF after it.
    HeadEndCr,
    /// A header name that may be `field`, its first `matched` bytes seen.
    Name(Field, u8),
    /// The rest of a header line that does not decide the framing.
    RestOfLine,
    /// A `Content-Length` value.
    Length(LengthPart),
    /// A body of `remaining` bytes.
    Body,
    /// The first hex digit of a chunk size.
    ChunkStart,
    /// More hex digits of a chunk size (accumulated in `remaining`).
    ChunkSize,
    /// Whitespace after a chunk size.
    ChunkSpace,
    /// A chunk extension, up to its CR.
    ChunkExtension,
    /// The LF after a chunk size line.
    ChunkSizeLf,
    /// Chunk data, `remaining` bytes of it left.
    ChunkData,
    /// The CRLF after chunk data.
    ChunkDataCr,
    ChunkDataLf,
    /// After the last chunk, or after a trailer line: a CR ends the body, anything else starts a
    /// trailer line.
    EndCr,
    Trailer,
    TrailerLf,
    /// The LF that ends a chunked body.
    EndLf,
}

/// The framing tracker of one connection.
#[derive(Clone, Debug)]
pub(crate) struct Framing {
    state: State,
    /// The head seen so far has a `Content-Length` field.
    has_length: bool,
    /// The head seen so far has a `Transfer-Encoding` field.
    has_transfer_encoding: bool,
    /// The value of the head's `Content-Length`.
    length: u64,
    /// Bytes left of a body or a chunk, or the chunk size being read.
    remaining: u64,
}

impl Default for Framing {
    fn default() -> Self {
        Self::new()
    }
}

impl Framing {
    /// A tracker for a connection that has not sent a byte yet: HTTP/2 with prior knowledge or
    /// HTTP/1, as its first bytes tell.
    pub(crate) fn new() -> Self {
        Self::with_state(State::Preface(0))
    }

    fn with_state(state: State) -> Self {
        Framing {
            state,
            has_length: false,
            has_transfer_encoding: false,
            length: 0,
            remaining: 0,
        }
    }

    /// Whether the connection is HTTP/2, so that its bytes need not be shown to [`Framing::scan`].
    pub(crate) fn is_pass_through(&self) -> bool {
        self.state == State::PassThrough
    }

    /// Follows `bytes`, the next bytes received on the connection, and says which of them may
    /// reach the server. After a verdict other than [`Verdict::Pass`] nothing more passes.
    pub(crate) fn scan(&mut self, bytes: &[u8]) -> Verdict {
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            match self.state {
                State::Preface(matched) => {
                    let matched = usize::from(matched);
                    if b == H2_PREFACE[matched] {
                        self.state = if matched + 1 == H2_PREFACE.len() {
                            State::PassThrough
                        } else {
                            // The preface is 24 bytes, so the count fits.
                            State::Preface((matched + 1) as u8)
                        };
                        i += 1;
                        continue;
                    }
                    // Not HTTP/2: the bytes that matched so far began an HTTP/1 request line.
                    // They hold no header line, so following them cannot end in a verdict.
                    self.state = State::Idle;
                    let replayed = self.scan(&H2_PREFACE[..matched]);
                    debug_assert_eq!(replayed, Verdict::Pass);
                    continue;
                }
                State::PassThrough => return Verdict::Pass,
                State::Stopped => return Verdict::Truncate { keep: 0 },
                State::Idle => match b {
                    b'\n' => {}
                    b'\r' => self.state = State::IdleCr,
                    _ => {
                        self.state = State::RequestLine;
                        continue;
                    }
                },
                State::IdleCr => {
                    if b == b'\n' {
                        self.state = State::Idle;
                    } else {
                        // The head reader wants LF here; anything else is its error, read on
                        // as a line.
                        self.state = State::RequestLine;
                        continue;
                    }
                }
                State::RequestLine | State::RestOfLine => {
                    match find(&bytes[i..], b'\n') {
                        Some(at) => {
                            i += at + 1;
                            self.state = State::LineStart;
                        }
                        None => i = bytes.len(),
                    }
                    continue;
                }
                State::LineStart => match b {
                    b'\r' => self.state = State::HeadEndCr,
                    b'\n' => self.end_of_head(),
                    _ => {
                        self.state = match b.to_ascii_lowercase() {
                            b'c' => State::Name(Field::ContentLength, 1),
                            b't' => State::Name(Field::TransferEncoding, 1),
                            _ => State::RestOfLine,
                        }
                    }
                },
                State::HeadEndCr => {
                    if b == b'\n' {
                        self.end_of_head();
                    } else {
                        // The head reader's error; read on as a line.
                        self.state = State::RestOfLine;
                        continue;
                    }
                }
                State::Name(field, matched) => {
                    let name = field.name();
                    let matched = usize::from(matched);
                    if matched < name.len() {
                        if b.to_ascii_lowercase() == name[matched] {
                            // Field names are at most 17 bytes long.
                            self.state = State::Name(field, (matched + 1) as u8);
                        } else {
                            self.state = State::RestOfLine;
                            continue;
                        }
                    } else if b == b':' {
                        if let Some(why) = self.field(field) {
                            return self.refuse(i, why);
                        }
                    } else {
                        // A longer name, or whitespace before the colon (which the server refuses).
                        self.state = State::RestOfLine;
                        continue;
                    }
                }
                State::Length(part) => {
                    if let Err(why) = self.length_byte(part, b) {
                        return self.refuse(i, why);
                    }
                }
                State::Body | State::ChunkData => {
                    let left = (bytes.len() - i) as u64;
                    let take = self.remaining.min(left);
                    self.remaining -= take;
                    // `take` is at most `left`, which came from a usize.
                    i += take as usize;
                    if self.remaining == 0 {
                        self.state = if self.state == State::Body {
                            State::Idle
                        } else {
                            State::ChunkDataCr
                        };
                    }
                    continue;
                }
                State::ChunkExtension => {
                    match bytes[i..].iter().position(|&c| c == b'\r' || c == b'\n') {
                        Some(at) if bytes[i + at] == b'\r' => {
                            i += at + 1;
                            self.state = State::ChunkSizeLf;
                        }
                        // A bare LF in an extension is refused.
                        Some(at) => return self.truncate(i + at),
                        None => i = bytes.len(),
                    }
                    continue;
                }
                State::Trailer => {
                    match find(&bytes[i..], b'\r') {
                        Some(at) => {
                            i += at + 1;
                            self.state = State::TrailerLf;
                        }
                        None => i = bytes.len(),
                    }
                    continue;
                }
                _ => {
                    if !self.chunk_byte(b) {
                        return self.truncate(i);
                    }
                }
            }
            i += 1;
        }
        Verdict::Pass
    }

    /// A framing field's name ended with its colon; says why the head is refused, if it is.
    fn field(&mut self, field: Field) -> Option<Ambiguity> {
        match field {
            Field::ContentLength if self.has_transfer_encoding => {
                Some(Ambiguity::LengthWithTransferEncoding)
            }
            Field::ContentLength if self.has_length => Some(Ambiguity::DuplicateLength),
            Field::ContentLength => {
                self.has_length = true;
                self.state = State::Length(LengthPart::Before);
                None
            }
            Field::TransferEncoding if self.has_length => {
                Some(Ambiguity::LengthWithTransferEncoding)
            }
            Field::TransferEncoding => {
                // Only the field's presence matters: a request that the server accepts with it
                // is chunked, and any other coding is the server's own 400.
                self.has_transfer_encoding = true;
                self.state = State::RestOfLine;
                None
            }
        }
    }

    /// One byte of a `Content-Length` value: digits between optional blanks, as the server reads
    /// it after the head reader trims the value.
    fn length_byte(&mut self, part: LengthPart, b: u8) -> Result<(), Ambiguity> {
        let blank = b == b' ' || b == b'\t';
        self.state = match (part, b) {
            (LengthPart::Before, _) if blank => State::Length(LengthPart::Before),
            (LengthPart::Before | LengthPart::Digits, b'0'..=b'9') => {
                let digit = u64::from(b - b'0');
                self.length = if part == LengthPart::Before {
                    digit
                } else {
                    self.length
                        .checked_mul(10)
                        .and_then(|l| l.checked_add(digit))
                        .ok_or(Ambiguity::InvalidLength)?
                };
                State::Length(LengthPart::Digits)
            }
            (LengthPart::Digits | LengthPart::After, _) if blank => {
                State::Length(LengthPart::After)
            }
            (LengthPart::Digits | LengthPart::After, b'\r') => State::Length(LengthPart::Cr),
            (LengthPart::Digits | LengthPart::After | LengthPart::Cr, b'\n') => State::LineStart,
            _ => return Err(Ambiguity::InvalidLength),
        };
        Ok(())
    }

    /// One byte of the chunked grammar outside data, extensions and trailers, as hyper's decoder
    /// reads it (`proto::h1::decode::ChunkedState`), which accepts everything the server's own
    /// (`wire::ChunkedDecoder`, CRLF only) does and frames it the same. False when hyper's
    /// decoder fails on it. Where only the server's decoder fails, the body ends in an error and
    /// the connection closes, so the two never frame one stream differently.
    fn chunk_byte(&mut self, b: u8) -> bool {
        let hex = match b {
            b'0'..=b'9' => Some(b - b'0'),
            b'a'..=b'f' => Some(b - b'a' + 10),
            b'A'..=b'F' => Some(b - b'A' + 10),
            _ => None,
        };
        self.state = match (self.state, hex, b) {
            (State::ChunkStart, Some(h), _) => {
                self.remaining = u64::from(h);
                State::ChunkSize
            }
            (State::ChunkSize, Some(h), _) => {
                match self.remaining.checked_mul(16) {
                    Some(r) => self.remaining = r + u64::from(h),
                    None => return false,
                }
                State::ChunkSize
            }
            // No more digits after a blank.
            (State::ChunkSize | State::ChunkSpace, None, b' ' | b'\t') => State::ChunkSpace,
            (State::ChunkSize | State::ChunkSpace, None, b';') => State::ChunkExtension,
            (State::ChunkSize | State::ChunkSpace, None, b'\r') => State::ChunkSizeLf,
            (State::ChunkSizeLf, _, b'\n') if self.remaining == 0 => State::EndCr,
            (State::ChunkSizeLf, _, b'\n') => State::ChunkData,
            (State::ChunkDataCr, _, b'\r') => State::ChunkDataLf,
            (State::ChunkDataLf, _, b'\n') => State::ChunkStart,
            (State::EndCr, _, b'\r') => State::EndLf,
            (State::EndCr, _, _) => State::Trailer,
            (State::TrailerLf, _, b'\n') => State::EndCr,
            (State::EndLf, _, b'\n') => State::Idle,
            _ => return false,
        };
        true
    }

    /// The empty line that ends a head: the body is chunked, counted, or absent.
    fn end_of_head(&mut self) {
        self.state = if self.has_transfer_encoding {
            State::ChunkStart
        } else if self.has_length && self.length > 0 {
            self.remaining = self.length;
            State::Body
        } else {
            State::Idle
        };
        self.has_length = false;
        self.has_transfer_encoding = false;
        self.length = 0;
    }

    fn refuse(&mut self, keep: usize, why: Ambiguity) -> Verdict {
        self.state = State::Stopped;
        Verdict::Refuse { keep, why }
    }

    fn truncate(&mut self, at: usize) -> Verdict {
        self.state = State::Stopped;
        Verdict::Truncate { keep: at + 1 }
    }
}

/// The position of the first `needle` in `haystack`, eight bytes at a time: header lines are
/// tens to thousands of bytes (cookies), and this is most of the tracker's work.
fn find(haystack: &[u8], needle: u8) -> Option<usize> {
    const LOW: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let pattern = LOW * u64::from(needle);
    let mut words = haystack.chunks_exact(8);
    let mut base = 0;
    for word in &mut words {
        // Bytes equal to `needle` become zero; the lowest set bit of `zero` marks the first
        // zero byte exactly (borrows only make bits above it unreliable).
        let w = u64::from_le_bytes(word.try_into().expect("chunks of eight")) ^ pattern;
        let zero = w.wrapping_sub(LOW) & !w & HIGH;
        if zero != 0 {
            return Some(base + (zero.trailing_zeros() / 8) as usize);
        }
        base += 8;
    }
    words
        .remainder()
        .iter()
        .position(|&c| c == needle)
        .map(|at| base + at)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Shows `stream` to a fresh tracker in pieces cut at `cuts` and returns the verdict, with
    /// offsets counted from the start of the stream.
    fn scan_in_pieces(stream: &[u8], cuts: &[usize]) -> Verdict {
        let mut framing = Framing::new();
        let mut start = 0;
        for &end in cuts.iter().chain(std::iter::once(&stream.len())) {
            match framing.scan(&stream[start..end]) {
                Verdict::Pass => start = end,
                Verdict::Refuse { keep, why } => {
                    return Verdict::Refuse {
                        keep: start + keep,
                        why,
                    };
                }
                Verdict::Truncate { keep } => return Verdict::Truncate { keep: start + keep },
            }
        }
        Verdict::Pass
    }

    /// The verdict on `stream` shown whole, checked to be the same when the stream is cut in
    /// two at every position and when it arrives one byte at a time.
    fn verdict(stream: &[u8]) -> Verdict {
        let whole = scan_in_pieces(stream, &[]);
        for cut in 0..=stream.len() {
            assert_eq!(
                scan_in_pieces(stream, &[cut]),
                whole,
                "cut at {cut} of {:?}",
                String::from_utf8_lossy(stream)
            );
        }
        let bytes: Vec<usize> = (1..stream.len()).collect();
        assert_eq!(scan_in_pieces(stream, &bytes), whole, "one byte at a time");
        whole
    }

    /// The offset of the colon after the `n`th (from 1) occurrence of `name` in `stream`.
    fn colon_after(stream: &[u8], name: &str, n: usize) -> usize {
        let text = String::from_utf8_lossy(stream);
        let (at, _) = text.match_indices(name).nth(n - 1).expect("name present");
        at + name.len()
    }

    const CL_TE: &[u8] =
        b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";

    /// Content-Length then Transfer-Encoding: refused at the colon of the second field.
    #[test]
    fn length_then_transfer_encoding_is_refused() {
        assert_eq!(
            verdict(CL_TE),
            Verdict::Refuse {
                keep: colon_after(CL_TE, "Transfer-Encoding", 1),
                why: Ambiguity::LengthWithTransferEncoding
            }
        );
    }

    /// Transfer-Encoding then Content-Length: refused at the colon of the second field.
    #[test]
    fn transfer_encoding_then_length_is_refused() {
        let s = b"POST /a HTTP/1.1\r\ntransfer-encoding: chunked\r\nHost: x\r\nCONTENT-LENGTH: 6\r\n\r\n";
        assert_eq!(
            verdict(s),
            Verdict::Refuse {
                keep: colon_after(s, "CONTENT-LENGTH", 1),
                why: Ambiguity::LengthWithTransferEncoding
            }
        );
    }

    /// Two Content-Length fields are refused even when their values are equal (HTTP lets a server keep one).
    #[test]
    fn equal_duplicate_length_is_refused() {
        let s =
            b"POST /a HTTP/1.1\r\nContent-Length: 5\r\nHost: x\r\ncontent-length: 5\r\n\r\nhello";
        assert_eq!(
            verdict(s),
            Verdict::Refuse {
                keep: colon_after(s, "content-length", 1),
                why: Ambiguity::DuplicateLength
            }
        );
    }

    /// Lists, signs, empty values and lengths over 64 bits are refused at the offending byte.
    #[test]
    fn lengths_that_are_not_one_number_are_refused() {
        let head = "POST / HTTP/1.1\r\nContent-Length: ";
        for (value, at) in [
            ("5, 5", 1),
            ("+5", 0),
            ("-1", 0),
            ("0x10", 1),
            ("5 5", 2),
            ("", 0),
            ("5\r5", 2),
            ("18446744073709551616", 19),
        ] {
            let s = format!("{head}{value}\r\n\r\n");
            assert_eq!(
                verdict(s.as_bytes()),
                Verdict::Refuse {
                    keep: head.len() + at,
                    why: Ambiguity::InvalidLength
                },
                "{value:?}"
            );
        }
    }

    /// Blanks around a length, the largest 64-bit length and bare-LF lines are read as the
    /// server reads them: the body is skipped and the next head is checked.
    #[test]
    fn lengths_with_blanks_frame_the_body() {
        let next = "GET /n HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n";
        for head in [
            "POST / HTTP/1.1\r\nContent-Length: \t 5 \t\r\n\r\n",
            "POST / HTTP/1.1\nContent-Length:5\n\n",
            "POST / HTTP/1.1\r\nContent-Length:5\n\r\n",
        ] {
            let s = format!("{head}x\r\n\r\n{next}");
            assert_eq!(
                verdict(s.as_bytes()),
                Verdict::Refuse {
                    keep: colon_after(s.as_bytes(), "Content-Length", 3),
                    why: Ambiguity::DuplicateLength
                },
                "{head:?}"
            );
        }
        let mut f = Framing::new();
        let max = format!("POST / HTTP/1.1\r\nContent-Length: {}\r\n\r\n", u64::MAX);
        assert_eq!(f.scan(max.as_bytes()), Verdict::Pass);
        assert_eq!(f.scan(CL_TE), Verdict::Pass, "the body is skipped");
    }

    /// Pipelined requests with a counted body, a chunked body with extensions and trailers, and
    /// empty lines between messages stay in step: a bad head after them is refused exactly.
    #[test]
    fn pipelined_bodies_keep_the_tracker_in_step() {
        // Bodies that would be bad heads if the tracker took them for heads.
        let counted = "Transfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n";
        let chunk = "Content-Length: 1\r\nX: y\r\n\r\n";
        let good = format!(
            "GET / HTTP/1.1\r\nHost: x\r\nCookie: a=b\r\n\r\n\
POST /c HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{counted}\
\r\n\
POST /t HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\nHost: x\r\n\r\n\
5;name=\"v;a\"\r\nhello\r\n\
{:x} ; ext\r\n{chunk}\r\n\
0;last\r\nContent-Length: 9\r\nTransfer-Encoding: chunked\r\n\r\n\
\r\n\nGET /after HTTP/1.1\r\nHost: x\r\n\r\n",
            counted.len(),
            chunk.len()
        );
        assert_eq!(verdict(good.as_bytes()), Verdict::Pass);
        let mut stream = good.clone().into_bytes();
        stream.extend_from_slice(CL_TE);
        assert_eq!(
            verdict(&stream),
            Verdict::Refuse {
                keep: good.len() + colon_after(CL_TE, "Transfer-Encoding", 1),
                why: Ambiguity::LengthWithTransferEncoding
            }
        );
    }

    /// Names that only resemble the framing fields decide nothing.
    #[test]
    fn similar_names_are_not_framing_fields() {
        let s = b"POST / HTTP/1.1\r\nContent-Lengths: 1\r\nContent-Length-X: 2\r\n\
X-Content-Length: 3\r\nContent-Type: a\r\nContent: b\r\nTransfer-Encodings: c\r\nT: d\r\n\
Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        assert_eq!(verdict(s), Verdict::Pass);
    }

    /// A space before the colon is the server's own 400; the tracker does not count the field.
    #[test]
    fn space_before_the_colon_is_left_to_the_server() {
        let s = b"POST / HTTP/1.1\r\nContent-Length : 1\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(verdict(s), Verdict::Pass);
    }

    /// Malformed chunk lines stop the stream right after the byte where the decoder fails.
    #[test]
    fn broken_chunks_truncate_the_stream() {
        let head = "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
        for (body, at) in [
            ("zz\r\n", 0),
            ("5\nhello\r\n", 1),
            ("5;ext\nhello\r\n", 5),
            ("5 x\r\n", 2),
            ("5\r\rhello", 2),
            ("2\r\nabc\r\n", 5),
            ("2\r\nab\r\r", 6),
            ("0\r\nTrailer: t\r\r", 14),
            ("0\r\n\r\r", 4),
            ("11111111111111111\r\n", 16),
        ] {
            let s = format!("{head}{body}");
            assert_eq!(
                verdict(s.as_bytes()),
                Verdict::Truncate {
                    keep: head.len() + at + 1
                },
                "{body:?}"
            );
        }
    }

    /// The word-at-a-time search finds the first occurrence at every position, next to bytes
    /// that differ from it by one bit or by borrows.
    #[test]
    fn find_matches_a_plain_search() {
        for len in 0..40 {
            for at in 0..=len {
                let mut hay: Vec<u8> = (0..len)
                    .map(|i| [0x0b, 0x8a, 0x09, 0x0a ^ 0x80][i % 4])
                    .collect();
                if at < len {
                    hay[at] = b'\n';
                    if at + 1 < len {
                        hay[at + 1] = b'\n';
                    }
                }
                let plain = hay.iter().position(|&c| c == b'\n');
                assert_eq!(find(&hay, b'\n'), plain, "{hay:?}");
            }
        }
    }

    /// After a verdict nothing more passes.
    #[test]
    fn nothing_passes_after_a_verdict() {
        let mut f = Framing::new();
        assert!(matches!(f.scan(CL_TE), Verdict::Refuse { .. }));
        assert_eq!(
            f.scan(b"GET / HTTP/1.1\r\n\r\n"),
            Verdict::Truncate { keep: 0 }
        );
    }

    /// The HTTP/2 preface, whole or cut anywhere, makes every later byte pass unseen.
    #[test]
    fn h2_preface_passes_everything() {
        let mut s = H2_PREFACE.to_vec();
        s.extend_from_slice(b"\x00\x00\x12\x01\x04\nContent-Length:1\nTransfer-Encoding:x\n\n");
        assert_eq!(verdict(&s), Verdict::Pass);
        let mut f = Framing::new();
        assert_eq!(f.scan(&s), Verdict::Pass);
        assert!(f.is_pass_through());
        assert_eq!(f.scan(CL_TE), Verdict::Pass);
    }

    /// A request that starts like the preface but is not it is tracked as HTTP/1.
    #[test]
    fn near_prefaces_are_http1() {
        for start in [
            "PRI /x HTTP/1.1\r\n",
            "PRI * HTTP/2.0\r\n\r\nSM\r\n",
            "P / HTTP/1.1\r\n",
            "PUT / HTTP/1.1\r\n",
        ] {
            let s = format!("{start}Content-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n");
            let mut f = Framing::new();
            assert!(
                matches!(f.scan(s.as_bytes()), Verdict::Refuse { .. }),
                "{start:?}"
            );
            assert!(matches!(verdict(s.as_bytes()), Verdict::Refuse { .. }));
        }
    }
}
