//! HTTP/1.1 on the wire to the upstream, without I/O: the request head kappe writes, the
//! response head it parses, how the response body is framed (RFC 9112 section 6.3), and the
//! chunked decoder. Everything here works on buffers, so every rule is unit-tested byte by byte.

use std::fmt::Write as _;

use std::cell::RefCell;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode, Version};

use crate::head::{self, HeadError, Spans};
use crate::proxy::forward::{self, Forwarding, list_items};

/// The most header fields a response head may carry.
pub const MAX_HEADERS: usize = 128;
/// The largest response head accepted; a longer one is a broken upstream.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
/// The most bytes of chunk extensions and trailers accepted per chunk and per body.
const MAX_CHUNK_OVERHEAD: usize = 16 * 1024;

/// How the upstream response's body ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// Exactly this many bytes (0 for HEAD, 1xx, 204 and 304 answers).
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Until the upstream closes the connection.
    Close,
}

/// A parsed response head.
#[derive(Debug)]
pub struct Head {
    pub status: StatusCode,
    pub version: Version,
    pub headers: HeaderMap,
    pub framing: Framing,
    /// Whether the connection may carry another request once the body has been read.
    pub keep_alive: bool,
    /// The fields addressed to kappe, kept out of `headers`.
    pub addressed: Addressed,
    /// The fields that pass through to the visitor untouched, kept out of `headers`.
    pub verbatim: Verbatim,
}

#[cfg(test)]
impl Head {
    /// The head with every field in its map: the verbatim ones after the mapped ones, the
    /// addressed ones last.
    #[must_use]
    pub fn mapped(mut self) -> Self {
        std::mem::take(&mut self.verbatim).restore(&mut self.headers);
        std::mem::take(&mut self.addressed).restore(&mut self.headers);
        self
    }
}

/// The names of a head's fields kappe reads or changes; the others pass through it as they came
/// ([`Verbatim`]). Besides the fields kappe strips or replaces in either direction (the
/// hop-by-hop fields, `Via`, the forwarding fields) and a fixed set for each direction
/// (`TOUCHED` for answers, `REQUEST_TOUCHED` for requests), they are the names the proxy reads from the configuration:
/// for answers those of the campaign, advertiser, retargeting flag and cap policy, which it
/// either sets aside ([`Addressed`]) or leaves in the map; for requests those of the visitor id.
#[derive(Debug)]
pub struct KnownFields {
    names: Vec<HeaderName>,
    set_aside: bool,
    touched: &'static [HeaderName],
    /// Tells these fields apart from others in the per-thread name cache, which remembers each
    /// name's role; 0 for the default (an answer's, no names, none set aside).
    id: u64,
}

impl Default for KnownFields {
    fn default() -> Self {
        KnownFields {
            names: Vec::new(),
            set_aside: false,
            touched: &TOUCHED,
            id: 0,
        }
    }
}

/// The names of answer fields that kappe changes when it issues a visitor id or explains a
/// decision. Those of either direction it strips or replaces (the hop-by-hop fields, `Via`,
/// and the forwarding fields) are told apart by [`forward`](crate::proxy::forward) itself, and
/// `Connection` and `Content-Length` by the parser.
static TOUCHED: [HeaderName; 4] = [
    header::SET_COOKIE,
    header::CACHE_CONTROL,
    header::EXPIRES,
    HeaderName::from_static("x-kappe-decision"),
];

/// The names of request fields that kappe reads or changes on the way upstream, besides those
/// of either direction (see [`TOUCHED`]): the framing fields the server reads, the privacy
/// signals and the fields a visitor is told apart by, and the fields kappe speaks to the ad
/// server with, which a visitor must not send.
static REQUEST_TOUCHED: [HeaderName; 8] = [
    header::CONTENT_LENGTH,
    header::EXPECT,
    header::COOKIE,
    HeaderName::from_static("sec-gpc"),
    header::DNT,
    header::USER_AGENT,
    HeaderName::from_static("x-kappe-capped"),
    HeaderName::from_static("x-kappe-exclude"),
];

/// The fields of a head that is mapped whole: only `Connection` and `Content-Length` have a role.
static MAPPED: KnownFields = KnownFields {
    names: Vec::new(),
    set_aside: false,
    touched: &[],
    id: u64::MAX - 1,
};

impl KnownFields {
    /// An answer's: `names` are read by the proxy; with `set_aside` they are kept out of the
    /// answer's map.
    #[must_use]
    pub fn new(names: Vec<HeaderName>, set_aside: bool) -> Self {
        Self::with(names, set_aside, &TOUCHED)
    }

    /// A request's: `names` are read by the proxy (the visitor id's headers).
    #[must_use]
    pub fn request(names: Vec<HeaderName>) -> Self {
        Self::with(names, false, &REQUEST_TOUCHED)
    }

    fn with(names: Vec<HeaderName>, set_aside: bool, touched: &'static [HeaderName]) -> Self {
        static IDS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        KnownFields {
            names,
            set_aside,
            touched,
            id: IDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        }
    }
}

/// The fields of an answer that reach the visitor as they came: kappe neither reads nor
/// changes them. They stay in the answer's head, where its reader found them, and are written
/// from there, each as `name: value`; a field this way costs no name, no value and no map
/// entry on its way through. At most the first 64 fields of a head pass this way; any others
/// are mapped. Boxed: the answer's head and body are moved several times on their way to the
/// visitor, and an empty one is a null pointer.
#[derive(Clone, Debug, Default)]
pub struct Verbatim(Option<Box<Passing>>);

#[derive(Clone, Debug)]
struct Passing {
    head: Bytes,
    spans: Spans,
    /// Bit `i`: field `i` of `spans` is one of them.
    picked: u64,
    /// Whether a `Date` field is among them.
    date: bool,
}

impl Verbatim {
    fn new(head: Bytes, spans: Spans, picked: u64, date: bool) -> Self {
        if picked == 0 {
            give_back_spans(spans);
            return Verbatim(None);
        }
        Verbatim(Some(Box::new(Passing {
            head,
            spans,
            picked,
            date,
        })))
    }

    /// Whether there are none.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_none()
    }

    /// Whether a `Date` field is among them.
    #[must_use]
    pub fn has_date(&self) -> bool {
        self.0.as_ref().is_some_and(|p| p.date)
    }

    /// The head and where each field lies in it, in the order the fields came.
    fn spans(&self) -> impl Iterator<Item = (&Bytes, (usize, usize, usize, usize))> {
        let passing = self.0.as_deref();
        let mut bits = passing.map_or(0, |p| p.picked);
        std::iter::from_fn(move || {
            let p = passing.filter(|_| bits != 0)?;
            let i = bits.trailing_zeros() as usize;
            bits &= bits - 1;
            Some((&p.head, p.spans[i]))
        })
    }

    /// Writes them as header lines, in the order they came.
    pub fn write(&self, out: &mut BytesMut) {
        for (head, (name, name_len, value, value_len)) in self.spans() {
            out.put_slice(&head[name..name + name_len]);
            out.put_slice(b": ");
            out.put_slice(&head[value..value + value_len]);
            out.put_slice(b"\r\n");
        }
    }

    /// Puts them into `headers`, after those already there.
    pub fn restore(self, headers: &mut HeaderMap) {
        for (head, (name, name_len, value, value_len)) in self.spans() {
            // The parser let through only names and values a map accepts.
            if let (Ok(n), Ok(v)) = (
                header_name(&head[name..name + name_len]),
                field_value(head, value, value_len),
            ) {
                headers.append(n, v);
            }
        }
    }
}

impl Drop for Verbatim {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            give_back_spans(p.spans);
        }
    }
}

/// The fields of an answer that are addressed to kappe rather than to the visitor (the
/// campaign and retargeting headers and the like, see `proxy::answer_fields`): read by the
/// proxy and never forwarded. They are set aside as the answer's map is built, in the order
/// they came; removing them from the map afterwards cost a hash, a probe and an index repair
/// each.
#[derive(Debug, Default)]
pub struct Addressed(Vec<(HeaderName, HeaderValue)>);

impl Addressed {
    /// The first value of `name`.
    #[must_use]
    pub fn get(&self, name: &HeaderName) -> Option<&HeaderValue> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    /// Puts the fields into `headers`, after those already there.
    pub fn restore(self, headers: &mut HeaderMap) {
        for (name, value) in self.0 {
            headers.append(name, value);
        }
    }
}

/// Why a response cannot be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("response head is not valid HTTP/1")]
    Malformed,
    #[error("response head is larger than {MAX_HEAD_BYTES} bytes")]
    TooLarge,
    #[error("invalid Content-Length")]
    BadLength,
    #[error("the upstream switched protocols")]
    Upgrade,
    #[error("invalid chunked body")]
    BadChunk,
}

/// How the request body travels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyFraming {
    /// No body and no length field (GET, HEAD and the like).
    None,
    /// `Content-Length: n`.
    Length(u64),
    /// `Transfer-Encoding: chunked`: the visitor's body has no declared length.
    Chunked,
}

/// Writes the request head: request line, the headers as they are (framing fields excluded:
/// kappe writes its own from `body`), and the empty line. With `forwarding`, its `Host` comes
/// first and its other fields after the map's, and the map's lines of the fields it replaces are
/// left out.
pub fn encode_head(
    method: &Method,
    target: &str,
    headers: &HeaderMap,
    forwarding: Option<&Forwarding>,
    body: BodyFraming,
    out: &mut BytesMut,
) {
    out.reserve(384 + headers.len() * 32);
    out.put_slice(method.as_str().as_bytes());
    out.put_u8(b' ');
    out.put_slice(target.as_bytes());
    out.put_slice(b" HTTP/1.1\r\n");
    if let Some(f) = forwarding {
        f.write_host(out);
    }
    for (name, value) in headers {
        if name == header::CONTENT_LENGTH
            || name == header::TRANSFER_ENCODING
            || (forwarding.is_some() && Forwarding::replaces(name))
        {
            continue;
        }
        out.put_slice(name.as_str().as_bytes());
        out.put_slice(b": ");
        out.put_slice(value.as_bytes());
        out.put_slice(b"\r\n");
    }
    if let Some(f) = forwarding {
        f.write(out);
    }
    match body {
        BodyFraming::None => {}
        BodyFraming::Length(n) => put_content_length(n, out),
        BodyFraming::Chunked => out.put_slice(b"transfer-encoding: chunked\r\n"),
    }
    out.put_slice(b"\r\n");
}

/// Writes the line `content-length: n`, digit by digit: the formatting machinery costs several
/// times as much, on every banner.
pub(crate) fn put_content_length(n: u64, out: &mut BytesMut) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut rest = n;
    loop {
        at -= 1;
        digits[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    out.put_slice(b"content-length: ");
    out.put_slice(&digits[at..]);
    out.put_slice(b"\r\n");
}

/// Whether a method's request carries a length field even when its body is empty: a server
/// may wait for a body on these otherwise.
pub fn expects_body(method: &Method) -> bool {
    matches!(*method, Method::POST | Method::PUT | Method::PATCH)
}

/// Parses one response head from the front of `buf`, removing it. `Ok(None)`: the head is not
/// complete yet. Interim (1xx) answers other than 101 are skipped. `head_request`: the request
/// was HEAD, so no body follows whatever the fields say. Of the fields `names` names, those set
/// aside go into the head's [`Addressed`] and the others into its map, with the fields kappe
/// changes; every other field goes into its [`Verbatim`].
///
/// # Errors
/// A malformed or oversized head, a bad length, or a protocol switch (kappe never asks for one).
pub fn parse_head(
    buf: &mut BytesMut,
    head_request: bool,
    names: &KnownFields,
) -> Result<Option<Head>, WireError> {
    let mut spans = spare_spans();
    loop {
        let line = match head::read_response(buf, MAX_HEADERS, &mut spans) {
            Ok(Some(line)) => line,
            Ok(None) if buf.len() > MAX_HEAD_BYTES => return Err(WireError::TooLarge),
            Ok(None) => {
                give_back_spans(spans);
                return Ok(None);
            }
            Err(HeadError::TooManyFields) => return Err(WireError::TooLarge),
            Err(HeadError::Malformed) => return Err(WireError::Malformed),
        };
        let len = line.len;
        if len > MAX_HEAD_BYTES {
            return Err(WireError::TooLarge);
        }
        let status = StatusCode::from_u16(line.code).map_err(|_| WireError::Malformed)?;
        if status == StatusCode::SWITCHING_PROTOCOLS {
            return Err(WireError::Upgrade);
        }
        if status.is_informational() {
            buf.advance(len);
            continue;
        }
        let version = head::version_of(line.minor);
        let head = buf.split_to(len).freeze();
        let mut connection = ConnectionTokens::default();
        let mut lengths = Lengths::default();
        let mut kept = Addressed::default();
        // Room for the fields kappe adds (Via, a cookie, hints) without regrowing.
        let Fields {
            headers,
            verbatim,
            coding,
            ..
        } = fields_map(
            head,
            spans,
            6,
            Some(names),
            &mut connection,
            Some(&mut lengths),
            &mut kept,
        )?;
        let mut head = head_from(
            status,
            version,
            headers,
            connection,
            lengths,
            coding,
            head_request,
        )?;
        head.addressed = kept;
        head.verbatim = verbatim;
        return Ok(Some(head));
    }
}

thread_local! {
    /// [`Spans`] vectors given back once their head was mapped or written, for the next heads
    /// read: each head would otherwise allocate and free one.
    static SPARE_SPANS: RefCell<Vec<Spans>> = const { RefCell::new(Vec::new()) };
}

/// The most [`Spans`] vectors kept per thread.
const SPARE_SPAN_VECS: usize = 32;

/// An empty [`Spans`] vector, one given back earlier when there is one.
pub(crate) fn spare_spans() -> Spans {
    let mut spans = SPARE_SPANS.with_borrow_mut(Vec::pop).unwrap_or_default();
    spans.clear();
    spans
}

/// Keeps `spans` for a later head, unless it grew unusually large or enough are kept.
pub(crate) fn give_back_spans(spans: Spans) {
    if spans.capacity() == 0 || spans.capacity() > MAX_HEADERS {
        return;
    }
    SPARE_SPANS.with_borrow_mut(|spare| {
        if spare.len() < SPARE_SPAN_VECS {
            spare.push(spans);
        }
    });
}

/// The map and the [`Verbatim`] fields of a frozen head, with room in the map for `extra` more
/// fields; `spans` are where [`head`]'s reader found them. Values are slices of the head,
/// shared rather than copied; names come from the name cache ([`header_name`]).
///
/// With `fields`, the fields whose names it does not know pass verbatim; without, every field
/// is mapped. A `Connection` line of only `close` and `keep-alive` is read into `connection`
/// and not put into the map: it says all it has to say to this hop and never travels on. When a
/// `Connection` line names fields, every field is mapped, for the proxy to remove those named.
/// With `lengths` (an answer's head), `Content-Length` lines are taken into it rather than the
/// map: [`head_from`] decides what they frame and whether they travel on. The fields `fields`
/// sets aside go into `addressed`.
///
/// # Errors
/// A name or value that is not valid.
pub(crate) fn fields_map(
    head: Bytes,
    spans: Spans,
    extra: usize,
    fields: Option<&KnownFields>,
    connection: &mut ConnectionTokens,
    mut lengths: Option<&mut Lengths>,
    addressed: &mut Addressed,
) -> Result<Fields, WireError> {
    // A field's lines all pass, or are all mapped, so that lines of one name keep their order.
    let pass = fields.is_some() && spans.len() <= 64;
    let known = fields.unwrap_or(&MAPPED);
    let mut headers = spare_map(if pass { extra } else { spans.len() + extra });
    let mut picked = 0u64;
    let mut date = false;
    let mut named = false;
    let (mut length, mut coding) = (false, false);
    for (i, &(name, name_len, value, value_len)) in spans.iter().enumerate() {
        let (role, mapped) = with_name(&head[name..name + name_len], Some(known), |name, role| {
            let passes = pass && matches!(role, Role::Passes | Role::Date);
            let read_here = role == Role::Connection || (role == Role::Length && lengths.is_some());
            (role, (!passes && !read_here).then(|| name.clone()))
        })
        .map_err(|_| WireError::Malformed)?;
        length |= role == Role::Length;
        coding |= role == Role::Coding;
        let value = match (role, mapped) {
            (Role::Connection, _) => {
                if connection.read(&head[value..value + value_len]) {
                    continue;
                }
                named = true;
                (header::CONNECTION, field_value(&head, value, value_len)?)
            }
            (Role::Length, None) => {
                if let Some(lengths) = lengths.as_deref_mut() {
                    lengths.take(field_value(&head, value, value_len)?);
                }
                continue;
            }
            (_, None) => {
                picked |= 1 << i;
                date |= role == Role::Date;
                continue;
            }
            (_, Some(name)) => (name, field_value(&head, value, value_len)?),
        };
        if role == Role::Read && known.set_aside {
            addressed.0.push(value);
        } else {
            headers.append(value.0, value.1);
        }
    }
    let mut verbatim = Verbatim::new(head, spans, picked, date);
    if named {
        std::mem::take(&mut verbatim).restore(&mut headers);
    }
    Ok(Fields {
        headers,
        verbatim,
        length,
        coding,
    })
}

/// A head's fields as [`fields_map`] sorts them.
pub(crate) struct Fields {
    /// The fields kappe reads or changes (all of them, without [`KnownFields`]).
    pub headers: HeaderMap,
    /// The fields that pass as they came.
    pub verbatim: Verbatim,
    /// Whether a `Content-Length` line was among them.
    pub length: bool,
    /// Whether a `Transfer-Encoding` line was among them (it is in `headers`). With neither,
    /// the head frames no body, and its map need not be searched for them.
    pub coding: bool,
}

/// The value at `at..at + len` of a head [`head`]'s reader has read, shared rather than
/// copied.
///
/// The reader lets through no byte in a value that a [`HeaderValue`] refuses (it allows tab,
/// visible ASCII and bytes from 0x80), so an ASCII value is taken as it is: checking it again
/// byte by byte cost a fifth of building the map. A value with other bytes is checked.
///
/// # Errors
/// A value a `HeaderValue` refuses.
fn field_value(head: &Bytes, at: usize, len: usize) -> Result<HeaderValue, WireError> {
    let raw = head.slice(at..at + len);
    if raw.is_ascii() {
        // SAFETY: the one requirement is valid UTF-8, which ASCII is. That the value holds
        // no control byte but tab is the head reader's check (debug builds check it again).
        #[allow(unsafe_code)]
        Ok(unsafe { HeaderValue::from_maybe_shared_unchecked(raw) })
    } else {
        HeaderValue::from_maybe_shared(raw).map_err(|_| WireError::Malformed)
    }
}

/// An answer's `Content-Length` lines, kept out of its header map: when the answer has a body,
/// the length they agree on frames it, and the body the client makes of the answer carries that
/// length, from which the server writes the field; when it has none (HEAD, 204, 304), the lines
/// go back into the map as they came.
pub(crate) struct Lengths {
    /// The length the lines read so far agree on, or why they do not.
    agreed: Result<Option<u64>, WireError>,
    first: Option<HeaderValue>,
    more: Vec<HeaderValue>,
}

impl Default for Lengths {
    fn default() -> Self {
        Lengths {
            agreed: Ok(None),
            first: None,
            more: Vec::new(),
        }
    }
}

impl Lengths {
    fn take(&mut self, line: HeaderValue) {
        if let Ok(found) = &mut self.agreed
            && let Err(e) = read_length(line.as_bytes(), found)
        {
            self.agreed = Err(e);
        }
        match self.first {
            None => self.first = Some(line),
            Some(_) => self.more.push(line),
        }
    }

    fn any(&self) -> bool {
        self.first.is_some()
    }

    /// Puts the lines back into `headers`, in the order they came.
    fn restore(self, headers: &mut HeaderMap) {
        for line in self.first.into_iter().chain(self.more) {
            headers.append(header::CONTENT_LENGTH, line);
        }
    }
}

/// Maps of heads already written, cleared, for [`fields_map`] to fill again.
/// Every request builds two maps and drops them once their heads are on the wire; reusing them
/// spares four allocations of over a kilobyte, which the allocator serves on its slow path.
const SPARE_MAPS: usize = 8;
/// A map that grew beyond this many fields (an unusual head) is dropped rather than kept.
const SPARE_MAP_FIELDS: usize = 64;

thread_local! {
    static SPARE: RefCell<Vec<HeaderMap>> = const { RefCell::new(Vec::new()) };
}

/// An empty map with room for `capacity` fields: a spare one when there is one.
fn spare_map(capacity: usize) -> HeaderMap {
    SPARE
        .with_borrow_mut(Vec::pop)
        .filter(|m| m.capacity() >= capacity)
        .unwrap_or_else(|| HeaderMap::with_capacity(capacity))
}

/// Gives back the map of a head that has been written, for `fields_map` to reuse. At most
/// `SPARE_MAPS` are kept per thread, none over `SPARE_MAP_FIELDS` fields.
pub fn recycle(mut map: HeaderMap) {
    if map.capacity() == 0 || map.capacity() > SPARE_MAP_FIELDS {
        return;
    }
    map.clear();
    SPARE.with_borrow_mut(|spare| {
        if spare.len() < SPARE_MAPS {
            spare.push(map);
        }
    });
}

/// The field name for `raw` as it appeared in a head, from a small per-thread cache of the names
/// last seen: an ad server and its visitors send the same few names in the same spelling on
/// every message, and building a name (matching it against the standard names, or lowercasing
/// and copying a custom one) costs several times a cache hit. The cache is direct-mapped, 256
/// entries of names up to 32 bytes; a longer name or a miss is built as usual.
///
/// # Errors
/// `raw` is not a valid field name.
pub fn header_name(raw: &[u8]) -> Result<HeaderName, http::header::InvalidHeaderName> {
    with_name(raw, None, |name, _| name.clone())
}

/// What a field of an answer is to kappe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    /// `Connection`, read by the parser.
    Connection,
    /// `Content-Length`, read by the parser.
    Length,
    /// A name the proxy reads: set aside, or mapped.
    Read,
    /// A name kappe changes or that frames the answer: mapped.
    Touched,
    /// `Transfer-Encoding`: mapped, like [`Role::Touched`], and a sign of a body.
    Coding,
    /// `Date`: passes verbatim, and the writer adds none.
    Date,
    /// Passes verbatim.
    Passes,
}

impl Role {
    fn of(name: &HeaderName, fields: &KnownFields) -> Role {
        if name == header::CONNECTION {
            Role::Connection
        } else if name == header::CONTENT_LENGTH {
            Role::Length
        } else if name == header::TRANSFER_ENCODING {
            Role::Coding
        } else if fields.names.contains(name) {
            Role::Read
        } else if fields.touched.contains(name)
            || forward::is_hop_by_hop(name)
            || name == header::VIA
            || Forwarding::replaces(name)
        {
            Role::Touched
        } else if name == header::DATE {
            Role::Date
        } else {
            Role::Passes
        }
    }
}

/// Calls `f` with the field name for `raw` (see [`header_name`]) and, with `fields`, its
/// [`Role`] in an answer (`Role::Passes` without). A cached name keeps its role for the
/// [`KnownFields`] it was last asked with, so that an answer's field costs one cache lookup
/// and, when it passes verbatim, no name at all.
fn with_name<R>(
    raw: &[u8],
    fields: Option<&KnownFields>,
    f: impl FnOnce(&HeaderName, Role) -> R,
) -> Result<R, http::header::InvalidHeaderName> {
    /// A power of two up to 256: the slot is the hash's top byte.
    const SLOTS: usize = 256;
    const LONGEST: usize = 32;
    /// The `KnownFields::id` of a role not worked out yet.
    const NO_ROLE: u64 = u64::MAX;
    struct Slot {
        len: u8,
        /// The words the hash is made of: with the length, they are the whole of a name of up
        /// to 16 bytes, which is then compared without looking at its bytes again.
        head: u64,
        tail: u64,
        raw: [u8; LONGEST],
        name: HeaderName,
        role: Role,
        /// The `KnownFields::id` that `role` was worked out for.
        role_of: u64,
    }
    thread_local! {
        static CACHE: RefCell<Vec<Option<Slot>>> = const { RefCell::new(Vec::new()) };
    }
    let role = |name: &HeaderName| fields.map_or(Role::Passes, |fields| Role::of(name, fields));
    if raw.is_empty() || raw.len() > LONGEST {
        let name = HeaderName::from_bytes(raw)?;
        return Ok(f(&name, role(&name)));
    }
    // The first and the last eight bytes: a browser's names share their first letters and
    // their lengths (sec-fetch-mode and sec-fetch-site, accept-language and accept-encoding),
    // and a hash of fewer bytes made them evict each other on every request.
    let n = raw.len();
    let (head, tail) = if n >= 8 {
        let word = |at: usize| u64::from_le_bytes(raw[at..at + 8].try_into().unwrap_or_default());
        (word(0), word(n - 8))
    } else {
        (raw.iter().fold(0u64, |w, &b| w << 8 | u64::from(b)), 0)
    };
    const K: u64 = 0x517c_c1b7_2722_0a95;
    let hash = (head.wrapping_mul(K) ^ tail.rotate_left(29) ^ n as u64).wrapping_mul(K);
    let at = (hash >> 56) as usize % SLOTS;
    CACHE.with_borrow_mut(|cache| {
        if cache.is_empty() {
            cache.resize_with(SLOTS, || None);
        }
        let slot = match &mut cache[at] {
            Some(slot)
                if usize::from(slot.len) == n
                    && slot.head == head
                    && slot.tail == tail
                    && (n <= 16 || slot.raw[8..n - 8] == raw[8..n - 8]) =>
            {
                slot
            }
            other => {
                let name = HeaderName::from_bytes(raw)?;
                let mut copy = [0u8; LONGEST];
                copy[..raw.len()].copy_from_slice(raw);
                other.insert(Slot {
                    len: raw.len() as u8,
                    head,
                    tail,
                    raw: copy,
                    name,
                    role: Role::Passes,
                    role_of: NO_ROLE,
                })
            }
        };
        let Some(fields) = fields else {
            return Ok(f(&slot.name, Role::Passes));
        };
        if slot.role_of != fields.id {
            slot.role = Role::of(&slot.name, fields);
            slot.role_of = fields.id;
        }
        Ok(f(&slot.name, slot.role))
    })
}

/// Works out the body framing and reuse of a parsed head; `coding`: whether it has a
/// `Transfer-Encoding` line (in `headers`).
fn head_from(
    status: StatusCode,
    version: Version,
    mut headers: HeaderMap,
    connection: ConnectionTokens,
    lengths: Lengths,
    coding: bool,
    head_request: bool,
) -> Result<Head, WireError> {
    let close = connection.close;
    let mut keep_alive = match version {
        Version::HTTP_10 => connection.keep_alive && !close,
        _ => !close,
    };
    let bodiless = head_request
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let framing = if bodiless {
        // The length of the body a GET would have had (HEAD) or of the stored one (304) is
        // the visitor's to see.
        lengths.restore(&mut headers);
        Framing::Length(0)
    } else if coding {
        // Transfer-Encoding wins over Content-Length, which is dropped; a message that sent both
        // may have been framed differently elsewhere, so its connection is not used again.
        if lengths.any() {
            keep_alive = false;
        }
        // A line that is not text counts as a coding other than chunked.
        let last = list_items(&headers, header::TRANSFER_ENCODING).next_back();
        if last.is_some_and(|t| t.eq_ignore_ascii_case("chunked")) {
            Framing::Chunked
        } else {
            keep_alive = false;
            Framing::Close
        }
    } else if let Some(n) = lengths.agreed? {
        Framing::Length(n)
    } else {
        keep_alive = false;
        Framing::Close
    };
    Ok(Head {
        status,
        version,
        headers,
        framing,
        keep_alive,
        addressed: Addressed::default(),
        verbatim: Verbatim::default(),
    })
}

/// The one length all `Content-Length` fields agree on (a repeated equal value is allowed,
/// RFC 9110 section 8.6).
pub fn content_length(headers: &HeaderMap) -> Result<Option<u64>, WireError> {
    let mut found: Option<u64> = None;
    for value in headers.get_all(header::CONTENT_LENGTH) {
        read_length(value.as_bytes(), &mut found)?;
    }
    Ok(found)
}

/// Reads one `Content-Length` line into `found`, which holds the length of the lines before it.
fn read_length(value: &[u8], found: &mut Option<u64>) -> Result<(), WireError> {
    // Read as bytes: a value holding anything but digits, commas and blanks is refused, as it
    // would be once read as text.
    for part in value.split(|&b| b == b',') {
        let part = part.trim_ascii();
        if part.is_empty() {
            return Err(WireError::BadLength);
        }
        let mut n: u64 = 0;
        for &b in part {
            if !b.is_ascii_digit() {
                return Err(WireError::BadLength);
            }
            n = n
                .checked_mul(10)
                .and_then(|n| n.checked_add(u64::from(b - b'0')))
                .ok_or(WireError::BadLength)?;
        }
        if found.is_some_and(|f| f != n) {
            return Err(WireError::BadLength);
        }
        *found = Some(n);
    }
    Ok(())
}

/// The connection options of a message's `Connection` lines.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct ConnectionTokens {
    pub(crate) close: bool,
    pub(crate) keep_alive: bool,
}

impl ConnectionTokens {
    /// Reads one `Connection` line. True when it held nothing but `close` and `keep-alive`
    /// (so it need not be kept); a line that is not text holds no option and is kept.
    fn read(&mut self, line: &[u8]) -> bool {
        // The two lines nearly every message carries, in the spelling nearly everyone uses.
        match line {
            b"keep-alive" => {
                self.keep_alive = true;
                return true;
            }
            b"close" => {
                self.close = true;
                return true;
            }
            _ => {}
        }
        if !line
            .iter()
            .all(|&b| b == b'\t' || (b' '..=b'~').contains(&b))
        {
            return false;
        }
        let mut only_options = true;
        for token in line.split(|&b| b == b',') {
            let token = token.trim_ascii();
            if token.eq_ignore_ascii_case(b"close") {
                self.close = true;
            } else if token.eq_ignore_ascii_case(b"keep-alive") {
                self.keep_alive = true;
            } else if !token.is_empty() {
                only_options = false;
            }
        }
        only_options
    }
}

/// What the chunked decoder found next.
#[derive(Debug, PartialEq, Eq)]
pub enum Chunk {
    /// Body bytes.
    Data(Bytes),
    /// The buffer holds no complete next step; read more.
    More,
    /// The last chunk and the trailers have been read.
    End,
}

/// Decodes a chunked body (RFC 9112 section 7.1) from a buffer that may end anywhere. Chunk
/// extensions and trailers are read and discarded, within a bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkedDecoder {
    state: ChunkState,
    /// Bytes of extensions or trailers seen in the current chunk or trailer section.
    overhead: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    /// Reading the hex size; the value so far and whether a digit was seen.
    Size {
        value: u64,
        digits: u8,
    },
    /// Skipping whitespace or an extension up to the line end.
    Extension {
        size: u64,
    },
    /// Expecting LF after the size line's CR.
    SizeLf {
        size: u64,
    },
    Data {
        remaining: u64,
    },
    DataCr,
    DataLf,
    /// At the start of a trailer line (or the final empty line).
    TrailerStart,
    /// Inside a trailer field line.
    Trailer,
    TrailerLf,
    /// Expecting LF after the final empty line's CR.
    EndLf,
    Done,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        ChunkedDecoder {
            state: ChunkState::Size {
                value: 0,
                digits: 0,
            },
            overhead: 0,
        }
    }
}

impl ChunkedDecoder {
    /// Whether the whole body has been read.
    pub fn is_done(&self) -> bool {
        self.state == ChunkState::Done
    }

    /// Consumes framing bytes from `buf` and returns the next data, if any.
    ///
    /// # Errors
    /// The bytes break the chunked grammar or its bounds.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Chunk, WireError> {
        use ChunkState as S;
        loop {
            if self.state == S::Done {
                return Ok(Chunk::End);
            }
            if let S::Data { remaining } = self.state {
                if buf.is_empty() {
                    return Ok(Chunk::More);
                }
                let n = usize::try_from(remaining)
                    .unwrap_or(usize::MAX)
                    .min(buf.len());
                let left = remaining - n as u64;
                self.state = if left == 0 {
                    S::DataCr
                } else {
                    S::Data { remaining: left }
                };
                return Ok(Chunk::Data(buf.split_to(n).freeze()));
            }
            let Some(&b) = buf.first() else {
                return Ok(Chunk::More);
            };
            buf.advance(1);
            self.state = match self.state {
                S::Size { value, digits } => match hex(b) {
                    Some(d) if digits < 16 => S::Size {
                        value: value << 4 | u64::from(d),
                        digits: digits + 1,
                    },
                    Some(_) => return Err(WireError::BadChunk),
                    None if digits == 0 => return Err(WireError::BadChunk),
                    None => match b {
                        b'\r' => S::SizeLf { size: value },
                        b';' | b' ' | b'\t' => S::Extension { size: value },
                        _ => return Err(WireError::BadChunk),
                    },
                },
                S::Extension { size } => match b {
                    b'\r' => S::SizeLf { size },
                    b'\n' => return Err(WireError::BadChunk),
                    _ => {
                        self.bump()?;
                        S::Extension { size }
                    }
                },
                S::SizeLf { size } => match b {
                    b'\n' if size == 0 => {
                        self.overhead = 0;
                        S::TrailerStart
                    }
                    b'\n' => {
                        self.overhead = 0;
                        S::Data { remaining: size }
                    }
                    _ => return Err(WireError::BadChunk),
                },
                S::DataCr => match b {
                    b'\r' => S::DataLf,
                    _ => return Err(WireError::BadChunk),
                },
                S::DataLf => match b {
                    b'\n' => S::Size {
                        value: 0,
                        digits: 0,
                    },
                    _ => return Err(WireError::BadChunk),
                },
                S::TrailerStart => match b {
                    b'\r' => S::EndLf,
                    b'\n' => return Err(WireError::BadChunk),
                    _ => {
                        self.bump()?;
                        S::Trailer
                    }
                },
                S::Trailer => match b {
                    b'\r' => S::TrailerLf,
                    b'\n' => return Err(WireError::BadChunk),
                    _ => {
                        self.bump()?;
                        S::Trailer
                    }
                },
                S::TrailerLf => match b {
                    b'\n' => S::TrailerStart,
                    _ => return Err(WireError::BadChunk),
                },
                S::EndLf => match b {
                    b'\n' => S::Done,
                    _ => return Err(WireError::BadChunk),
                },
                S::Data { .. } | S::Done => unreachable!("handled above"),
            };
        }
    }

    fn bump(&mut self) -> Result<(), WireError> {
        self.overhead += 1;
        if self.overhead > MAX_CHUNK_OVERHEAD {
            Err(WireError::BadChunk)
        } else {
            Ok(())
        }
    }
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// The chunk that ends a chunked body, with no trailers.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// Appends `data` as one chunk: its size in hex, the data, CRLF. Empty data would end the body
/// and is written as nothing.
pub fn encode_chunk(data: &[u8], out: &mut BytesMut) {
    if data.is_empty() {
        return;
    }
    // Writing into a BytesMut cannot fail.
    let _ = write!(out, "{:x}\r\n", data.len());
    out.put_slice(data);
    out.put_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(raw: &str, head_request: bool) -> Result<Option<Head>, WireError> {
        let mut buf = BytesMut::from(raw.as_bytes());
        parse(&mut buf, head_request)
    }

    /// The head at the start of `buf`, every field in its map.
    fn parse(buf: &mut BytesMut, head_request: bool) -> Result<Option<Head>, WireError> {
        Ok(parse_head(buf, head_request, &KnownFields::default())?.map(Head::mapped))
    }

    /// A recycled map comes back empty with its room; an empty or outsized map is not kept.
    #[test]
    fn recycled_maps_come_back_empty() {
        std::thread::spawn(|| {
            let mut connection = ConnectionTokens::default();
            let raw = Bytes::from_static(b"a: 1\r\nb: 2\r\n");
            let spans = vec![(0, 1, 3, 1), (6, 1, 9, 1)];
            let Fields { headers: map, .. } = fields_map(
                raw,
                spans.clone(),
                10,
                None,
                &mut connection,
                None,
                &mut Addressed::default(),
            )
            .unwrap();
            assert_eq!(map.len(), 2);
            let room = map.capacity();
            recycle(map);
            let again = spare_map(4);
            assert!(again.is_empty());
            assert_eq!(again.capacity(), room);
            recycle(HeaderMap::new());
            recycle(HeaderMap::with_capacity(SPARE_MAP_FIELDS * 2));
            assert!(SPARE.with_borrow(Vec::is_empty));
            // A spare map too small for the head is not used.
            recycle(HeaderMap::with_capacity(2));
            let big = spare_map(40);
            assert!(big.capacity() >= 40);
            assert!(SPARE.with_borrow(Vec::is_empty));
        })
        .join()
        .unwrap();
    }

    /// Fields of the names asked for are set aside in the order they came, repeats included,
    /// and stay out of the map; the rest are mapped as usual. Restored, they are all there.
    #[test]
    fn addressed_fields_are_set_aside() {
        let names = [
            HeaderName::from_static("x-campaign-id"),
            HeaderName::from_static("x-retargeting"),
        ];
        let mut buf = BytesMut::from(
            "HTTP/1.1 200 OK\r\nX-Campaign-Id: rt-shoes\r\nServer: up\r\n\
             x-campaign-id: second\r\nX-Retargeting: 1\r\nContent-Length: 0\r\n\r\n",
        );
        let fields = KnownFields::new(names.to_vec(), true);
        let mut head = parse_head(&mut buf, false, &fields).unwrap().unwrap();
        std::mem::take(&mut head.verbatim).restore(&mut head.headers);
        assert_eq!(head.headers.len(), 1);
        assert_eq!(head.headers["server"], "up");
        assert_eq!(head.addressed.get(&names[0]).unwrap(), "rt-shoes");
        assert_eq!(head.addressed.get(&names[1]).unwrap(), "1");
        assert!(
            head.addressed
                .get(&HeaderName::from_static("server"))
                .is_none()
        );
        head.addressed.restore(&mut head.headers);
        let campaigns: Vec<_> = head.headers.get_all(&names[0]).iter().collect();
        assert_eq!(campaigns, ["rt-shoes", "second"]);
        assert_eq!(head.headers["x-retargeting"], "1");
    }

    /// Fields kappe neither reads nor changes pass verbatim and are written as `name: value`
    /// lines in the order they came; those it reads are set aside (or, when it keeps them, mapped)
    /// and those it changes are mapped. A Date among the verbatim ones is noted.
    #[test]
    fn untouched_fields_pass_verbatim() {
        let raw = "HTTP/1.1 200 OK\r\nServer: up\r\nSet-Cookie: a=1\r\n\
                   Date: Mon, 07 Dec 2026 03:00:00 GMT\r\nX-Campaign-Id: c1\r\nVia: 1.1 cdn\r\n\
                   X-Note:  spaced\r\ncache-control: private\r\nContent-Length: 0\r\n\r\n";
        let campaign = HeaderName::from_static("x-campaign-id");
        for set_aside in [true, false] {
            let fields = KnownFields::new(vec![campaign.clone()], set_aside);
            let mut buf = BytesMut::from(raw);
            let head = parse_head(&mut buf, false, &fields).unwrap().unwrap();
            let mapped: Vec<&str> = head.headers.keys().map(HeaderName::as_str).collect();
            if set_aside {
                assert_eq!(mapped, ["set-cookie", "via", "cache-control"]);
                assert_eq!(head.addressed.get(&campaign).unwrap(), "c1");
            } else {
                assert_eq!(
                    mapped,
                    ["set-cookie", "x-campaign-id", "via", "cache-control"]
                );
                assert!(head.addressed.get(&campaign).is_none());
            }
            assert!(head.verbatim.has_date());
            let mut out = BytesMut::new();
            head.verbatim.write(&mut out);
            assert_eq!(
                out,
                "Server: up\r\nDate: Mon, 07 Dec 2026 03:00:00 GMT\r\nX-Note: spaced\r\n"
            );
        }
        // A name's role is remembered for the fields it was asked with only: where kappe does
        // not read X-Campaign-Id, it passes. Without a Date among them, the writer adds its own.
        let mut buf =
            BytesMut::from("HTTP/1.1 204 No Content\r\nServer: up\r\nX-Campaign-Id: c1\r\n\r\n");
        let head = parse_head(&mut buf, false, &KnownFields::default())
            .unwrap()
            .unwrap();
        assert!(head.headers.is_empty() && !head.verbatim.has_date());
        let mut out = BytesMut::new();
        head.verbatim.write(&mut out);
        assert_eq!(out, "Server: up\r\nX-Campaign-Id: c1\r\n");
    }

    /// A request's fields kappe reads or changes are mapped, the visitor id's header among them;
    /// the others pass verbatim. Without known fields, every field is mapped.
    #[test]
    fn request_fields_kappe_does_not_read_pass_verbatim() {
        let raw = Bytes::from_static(
            b"Host: a\r\nAccept-Language: de\r\nCookie: k=v\r\nSec-GPC: 1\r\nX-Id: 7\r\n\
              Sec-Fetch-Mode: cors\r\nX-Forwarded-For: 1.2.3.4\r\nContent-Length: 0\r\n\
              Connection: keep-alive\r\n",
        );
        let mut spans = Vec::new();
        let mut at = 0;
        for line in raw.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            let colon = line.iter().position(|&b| b == b':').unwrap();
            spans.push((at, colon, at + colon + 2, line.len() - colon - 3));
            at += line.len() + 1;
        }
        let fields = KnownFields::request(vec![HeaderName::from_static("x-id")]);
        let mut connection = ConnectionTokens::default();
        let Fields {
            headers: map,
            verbatim,
            ..
        } = fields_map(
            raw.clone(),
            spans.clone(),
            0,
            Some(&fields),
            &mut connection,
            None,
            &mut Addressed::default(),
        )
        .unwrap();
        let mapped: Vec<&str> = map.keys().map(HeaderName::as_str).collect();
        assert_eq!(
            mapped,
            [
                "host",
                "cookie",
                "sec-gpc",
                "x-id",
                "x-forwarded-for",
                "content-length"
            ]
        );
        assert!(connection.keep_alive);
        let mut out = BytesMut::new();
        verbatim.write(&mut out);
        assert_eq!(out, "Accept-Language: de\r\nSec-Fetch-Mode: cors\r\n");

        let Fields {
            headers: map,
            verbatim,
            ..
        } = fields_map(
            raw,
            spans,
            0,
            None,
            &mut ConnectionTokens::default(),
            None,
            &mut Addressed::default(),
        )
        .unwrap();
        assert!(verbatim.is_empty());
        assert_eq!(map.len(), 8);
    }

    /// When a Connection line names fields, or a head has more fields than pass verbatim,
    /// every field is mapped, repeated names in their order.
    #[test]
    fn named_or_numerous_fields_are_all_mapped() {
        let mut buf = BytesMut::from(
            "HTTP/1.1 200 OK\r\nX-Secret: 1\r\nServer: up\r\nConnection: x-secret\r\n\
             Content-Length: 0\r\n\r\n",
        );
        let head = parse_head(&mut buf, false, &KnownFields::default())
            .unwrap()
            .unwrap();
        assert!(head.verbatim.is_empty());
        let mapped: Vec<&str> = head.headers.keys().map(HeaderName::as_str).collect();
        assert_eq!(mapped, ["connection", "x-secret", "server"]);

        let mut many = String::from("HTTP/1.1 200 OK\r\n");
        for i in 0..70 {
            many.push_str(&format!("X-Item: {i}\r\n"));
        }
        many.push_str("Content-Length: 0\r\n\r\n");
        let mut buf = BytesMut::from(many.as_str());
        let head = parse_head(&mut buf, false, &KnownFields::default())
            .unwrap()
            .unwrap();
        assert!(head.verbatim.is_empty());
        let items: Vec<String> = head
            .headers
            .get_all("x-item")
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect();
        assert_eq!(items, (0..70).map(|i| i.to_string()).collect::<Vec<_>>());
    }

    /// Lengths are written in decimal as `format!` would, from 0 to `u64::MAX`.
    #[test]
    fn content_length_lines_are_decimal() {
        for n in [0, 7, 10, 117, 65_536, 999_999_999_999, u64::MAX] {
            let mut out = BytesMut::new();
            put_content_length(n, &mut out);
            assert_eq!(out, format!("content-length: {n}\r\n").as_bytes());
        }
    }

    /// Values keep their bytes whether they are ASCII (taken as the head reader read them) or
    /// carry obs-text (checked again); a control byte in a value is refused before any map is
    /// built.
    #[test]
    fn field_values_keep_their_bytes() {
        let mut buf = BytesMut::from(
            &b"HTTP/1.1 200 OK\r\nX-Note: plain text\t here\r\nX-Obs: caf\xe9\r\n\
               Content-Length: 0\r\n\r\n"[..],
        );
        let head = parse(&mut buf, false).unwrap().unwrap();
        assert_eq!(head.headers["x-note"].as_bytes(), b"plain text\t here");
        assert_eq!(head.headers["x-obs"].as_bytes(), b"caf\xe9");
        assert!(head.headers["x-note"].to_str().is_ok());
        assert!(head.headers["x-obs"].to_str().is_err());
        let mut bad = BytesMut::from(&b"HTTP/1.1 200 OK\r\nX-Bad: a\x01b\r\n\r\n"[..]);
        assert_eq!(parse(&mut bad, false).unwrap_err(), WireError::Malformed);
    }

    /// Cached names are the names `HeaderName::from_bytes` makes, whatever the spelling, and
    /// invalid names are refused from the cache as without it.
    #[test]
    fn cached_names_are_the_built_names() {
        let names: &[&[u8]] = &[
            b"Content-Type",
            b"content-type",
            b"X-Campaign-Id",
            b"x-campaign-id",
            b"Set-Cookie",
            b"a",
            b"x-a-name-that-is-longer-than-thirty-two-bytes",
            b"X-Retargeting",
        ];
        for _ in 0..3 {
            for raw in names {
                assert_eq!(
                    header_name(raw).unwrap(),
                    HeaderName::from_bytes(raw).unwrap()
                );
            }
        }
        // Every slot filled and overwritten many times over.
        for i in 0..2_000 {
            let raw = format!("X-Field-{i}");
            let name = header_name(raw.as_bytes()).unwrap();
            assert_eq!(name.as_str(), raw.to_ascii_lowercase());
            assert_eq!(header_name(raw.as_bytes()).unwrap(), name);
        }
        assert!(header_name(b"bad name").is_err());
        assert!(header_name(b"").is_err());
    }

    /// Connection lines of only options decide reuse and are not kept; a line naming fields
    /// is kept for the proxy to strip, and its options count too.
    #[test]
    fn connection_options_decide_reuse() {
        let h = head(
            "HTTP/1.1 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 0\r\n\r\n",
            false,
        )
        .unwrap()
        .unwrap();
        assert!(h.keep_alive);
        assert!(!h.headers.contains_key(header::CONNECTION));
        let h = head(
            "HTTP/1.1 200 OK\r\nConnection: x-a, close\r\nContent-Length: 0\r\n\r\n",
            false,
        )
        .unwrap()
        .unwrap();
        assert!(!h.keep_alive);
        assert_eq!(h.headers[header::CONNECTION], "x-a, close");
        let h = head(
            "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n",
            false,
        )
        .unwrap()
        .unwrap();
        assert!(h.keep_alive);
        let h = head("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", false)
            .unwrap()
            .unwrap();
        assert!(!h.keep_alive);
    }

    /// The request head carries the headers once each, kappe's framing field, and the target.
    #[test]
    fn request_head_is_written_with_kappe_framing() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, "ads:80".parse().unwrap());
        h.insert(header::CONTENT_LENGTH, "99".parse().unwrap());
        h.append("x-a", "1".parse().unwrap());
        h.append("x-a", "2".parse().unwrap());
        let mut out = BytesMut::new();
        encode_head(
            &Method::POST,
            "/ad?x=1",
            &h,
            None,
            BodyFraming::Length(5),
            &mut out,
        );
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            "POST /ad?x=1 HTTP/1.1\r\nhost: ads:80\r\nx-a: 1\r\nx-a: 2\r\ncontent-length: 5\r\n\r\n"
        );
        let mut out = BytesMut::new();
        encode_head(&Method::GET, "/", &h, None, BodyFraming::Chunked, &mut out);
        assert!(out.ends_with(b"transfer-encoding: chunked\r\n\r\n"));
        assert!(!out.windows(14).any(|w| w == b"content-length"));
    }

    /// A complete head is split off the buffer, leaving the body; a partial one waits.
    #[test]
    fn heads_parse_and_leave_the_body() {
        let mut buf = BytesMut::from(
            &b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nX-Campaign-Id: c1\r\n\r\nabcHTTP"[..],
        );
        let h = parse(&mut buf, false).unwrap().unwrap();
        assert_eq!(h.status, StatusCode::OK);
        assert_eq!(h.framing, Framing::Length(3));
        assert!(h.keep_alive);
        assert_eq!(h.headers["x-campaign-id"], "c1");
        assert_eq!(&buf[..], b"abcHTTP");
        let mut partial = BytesMut::from(&b"HTTP/1.1 200 OK\r\nContent-Len"[..]);
        assert!(parse(&mut partial, false).unwrap().is_none());
        assert_eq!(partial.len(), 28);
    }

    /// Interim answers are skipped; a protocol switch is refused.
    #[test]
    fn interim_answers_are_skipped() {
        let h = head(
            "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n",
            false,
        )
        .unwrap()
        .unwrap();
        assert_eq!(h.status, StatusCode::NO_CONTENT);
        assert_eq!(h.framing, Framing::Length(0));
        assert_eq!(
            head("HTTP/1.1 101 Switching\r\nUpgrade: x\r\n\r\n", false).unwrap_err(),
            WireError::Upgrade
        );
    }

    /// Framing per RFC 9112 section 6.3, including what is never reused.
    #[test]
    fn body_framing_follows_the_rules() {
        use Framing::{Chunked, Close, Length};
        let cases = [
            ("Transfer-Encoding: chunked", Ok((Chunked, true))),
            (
                "Content-Length: 4\r\nTransfer-Encoding: chunked",
                Ok((Chunked, false)),
            ),
            // Transfer-Encoding wins, whatever the length says.
            (
                "Content-Length: x\r\nTransfer-Encoding: chunked",
                Ok((Chunked, false)),
            ),
            ("Transfer-Encoding: gzip", Ok((Close, false))),
            (
                "Transfer-Encoding: chunked\r\nTransfer-Encoding: chünked",
                Ok((Close, false)),
            ),
            ("X-None: 1", Ok((Close, false))),
            (
                "Content-Length: 2\r\nContent-Length: 2",
                Ok((Length(2), true)),
            ),
            ("Content-Length: 2, 2", Ok((Length(2), true))),
            (
                "Content-Length: 2\r\nContent-Length: 3",
                Err(WireError::BadLength),
            ),
            ("Content-Length: +2", Err(WireError::BadLength)),
            (
                "Content-Length: 2\r\nConnection: close",
                Ok((Length(2), false)),
            ),
            (
                "Content-Length: 2\r\nConnection: Keep-Alive, Close",
                Ok((Length(2), false)),
            ),
            (
                "Content-Length: 99999999999999999999",
                Err(WireError::BadLength),
            ),
        ];
        for (fields, want) in cases {
            let raw = format!("HTTP/1.1 200 OK\r\n{fields}\r\n\r\n");
            let got = head(&raw, false).map(|h| {
                let h = h.expect("complete head");
                (h.framing, h.keep_alive)
            });
            assert_eq!(got, want, "{fields}");
        }
        for (raw, want) in [
            ("HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n", false),
            (
                "HTTP/1.0 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\n",
                true,
            ),
            (
                "HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n",
                true,
            ),
        ] {
            let h = head(raw, false).unwrap().unwrap();
            assert_eq!(h.keep_alive, want, "{raw}");
        }
        assert_eq!(
            head(
                "HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n",
                false
            )
            .unwrap()
            .unwrap()
            .framing,
            Length(0)
        );
        let h = head("HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n", true)
            .unwrap()
            .unwrap();
        assert_eq!(h.framing, Framing::Length(0));
        assert_eq!(h.headers[header::CONTENT_LENGTH], "9");
        // A bodiless answer's lengths frame nothing: they travel on as the upstream sent them.
        let h = head(
            "HTTP/1.1 304 Not Modified\r\nContent-Length: 9, 9\r\ncontent-length: x\r\n\r\n",
            false,
        )
        .unwrap()
        .unwrap();
        assert_eq!(h.framing, Framing::Length(0));
        let kept: Vec<_> = h.headers.get_all(header::CONTENT_LENGTH).iter().collect();
        assert_eq!(kept, ["9, 9", "x"]);
        // An answer with a body: the length frames it and is left to the body to carry.
        let h = head(
            "HTTP/1.1 200 OK\r\nContent-Length: 9\r\nX-A: 1\r\ncontent-length: 9\r\n\r\n",
            false,
        )
        .unwrap()
        .unwrap();
        assert_eq!(h.framing, Framing::Length(9));
        assert!(!h.headers.contains_key(header::CONTENT_LENGTH));
        assert_eq!(h.headers["x-a"], "1");
        for bad in ["9, 10", "9x", ""] {
            let raw =
                format!("HTTP/1.1 200 OK\r\nContent-Length: 9\r\nContent-Length: {bad}\r\n\r\n");
            assert_eq!(
                head(&raw, false).unwrap_err(),
                WireError::BadLength,
                "{bad:?}"
            );
        }
        assert_eq!(
            head("HTTP/1.1 2000 OK\r\n\r\n", false).unwrap_err(),
            WireError::Malformed
        );
        let huge = format!("HTTP/1.1 200 OK\r\nX: {}\r\n", "a".repeat(MAX_HEAD_BYTES));
        assert_eq!(head(&huge, false).unwrap_err(), WireError::TooLarge);
    }

    fn decode_all(input: &[u8], split: usize) -> Result<(Vec<u8>, bool), WireError> {
        let mut d = ChunkedDecoder::default();
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for piece in input.chunks(split.max(1)) {
            buf.extend_from_slice(piece);
            loop {
                match d.decode(&mut buf)? {
                    Chunk::Data(b) => out.extend_from_slice(&b),
                    Chunk::More => break,
                    Chunk::End => return Ok((out, buf.is_empty())),
                }
            }
        }
        Ok((out, false))
    }

    /// Chunked bodies decode the same however the bytes arrive, extensions and trailers
    /// included, and what follows the body stays in the buffer.
    #[test]
    fn chunked_bodies_decode_at_every_split() {
        let body = b"5;ext=\"a b\"\r\nhello\r\nA \r\n0123456789\r\n0\r\nX-T: 1\r\n\r\n";
        for split in 1..body.len() {
            assert_eq!(
                decode_all(body, split),
                Ok((b"hello0123456789".to_vec(), true)),
                "split {split}"
            );
        }
        let mut d = ChunkedDecoder::default();
        let mut buf = BytesMut::from(&b"0\r\n\r\nnext"[..]);
        assert_eq!(d.decode(&mut buf), Ok(Chunk::End));
        assert!(d.is_done());
        assert_eq!(&buf[..], b"next");
    }

    /// However the bytes arrive, in three pieces split anywhere, a chunked body decodes whole:
    /// the decoder never waits for bytes that have already come.
    #[test]
    fn chunked_bodies_decode_at_every_pair_of_splits() {
        let body = b"4;a=b\r\nwiki\r\n5\r\npedia\r\n0\r\nX: y\r\n\r\n";
        for i in 0..=body.len() {
            for j in i..=body.len() {
                let mut d = ChunkedDecoder::default();
                let mut buf = BytesMut::new();
                let mut out = Vec::new();
                let mut ended = false;
                for piece in [&body[..i], &body[i..j], &body[j..]] {
                    buf.extend_from_slice(piece);
                    loop {
                        match d.decode(&mut buf) {
                            Ok(Chunk::Data(b)) => out.extend_from_slice(&b),
                            Ok(Chunk::More) => break,
                            Ok(Chunk::End) => {
                                ended = true;
                                break;
                            }
                            Err(e) => panic!("splits {i} {j}: {e}"),
                        }
                    }
                }
                assert!(ended, "splits {i} {j}: no end");
                assert_eq!(out, b"wikipedia", "splits {i} {j}");
                assert!(buf.is_empty(), "splits {i} {j}");
            }
        }
    }

    /// What kappe encodes as chunks, its own decoder reads back whole; empty data ends nothing.
    #[test]
    fn encoded_chunks_decode_to_the_same_bytes() {
        let mut wire = BytesMut::new();
        for piece in [&b"hello"[..], b"", &[7u8; 300][..]] {
            encode_chunk(piece, &mut wire);
        }
        wire.put_slice(LAST_CHUNK);
        assert!(wire.starts_with(b"5\r\nhello\r\n12c\r\n"));
        let mut want = b"hello".to_vec();
        want.extend_from_slice(&[7u8; 300]);
        assert_eq!(decode_all(&wire, 7), Ok((want, true)));
    }

    /// Broken framing is an error, never a guess.
    #[test]
    fn broken_chunks_are_refused() {
        for bad in [
            &b"x\r\n"[..],
            b"\r\n",
            b"5\nhello\r\n0\r\n\r\n",
            b"5\r\nhelloX\r\n",
            b"11111111111111111\r\n",
            b"0\r\n\n",
            b"0\r\nX-T: 1\n\r\n",
        ] {
            assert!(
                decode_all(bad, 64).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let long_ext = format!("1;{}\r\na\r\n0\r\n\r\n", "e".repeat(MAX_CHUNK_OVERHEAD + 1));
        assert_eq!(
            decode_all(long_ext.as_bytes(), 4096),
            Err(WireError::BadChunk)
        );
    }
}
