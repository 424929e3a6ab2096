//! Snapshots of the memory store: a versioned, checksummed file written atomically (temporary
//! file, fsync, rename, fsync of the directory) and loaded at start.
//!
//! The file holds pseudonymous keys, interned campaign names, timestamps and burns; never a raw
//! visitor id. Layout (little-endian):
//! ```text
//! "KAPPESTA" version:u32 saved_at:u64
//! names:u32 { len:u16 bytes }*
//! { key:u64 kind:u8 record }*  0:u64 0xff:u8 visitors:u64
//! "KAPPEEND" checksum:u64      (SipHash-1-3, fixed key, of every byte before the trailer)
//! ```
//! A file without its trailer is [`SnapshotError::Truncated`]; a bad magic, checksum or
//! structure is [`SnapshotError::Corrupt`]. Loading never modifies the file; only
//! [`move_aside`] (for `--discard-corrupt-state`) renames it, and nothing here overwrites a
//! file that failed to load — the application does not start without a good or discarded one.

use std::fs::{self, File};
use std::hash::Hasher;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use siphasher::sip::SipHasher13;

use crate::clock::UnixSecs;
use crate::store::memory::{Burn, Full, Image, Inline, Key, MemoryOptions, MemoryStore, Rec};

const MAGIC: &[u8; 8] = b"KAPPESTA";
const TRAILER: &[u8; 8] = b"KAPPEEND";
/// The format version this build writes and reads.
pub const VERSION: u32 = 1;
const HEADER_LEN: usize = 8 + 4 + 8;
const TRAILER_LEN: usize = 16;
const CHUNK: usize = 1 << 20;
/// The record kind that ends the visitor list.
const END: u8 = 0xff;

/// Why a state file could not be written or loaded. Each message names the file and says what
/// the operator can do.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("state file {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error(
        "state file {path} is corrupt ({detail}); kappe will not start on it and will not overwrite it. \
         Restore a good copy, or start with --discard-corrupt-state to move it aside and start empty"
    )]
    Corrupt { path: PathBuf, detail: String },
    #[error(
        "state file {path} is truncated (was a write interrupted?); kappe will not start on it and will \
         not overwrite it. Restore a good copy, or start with --discard-corrupt-state to move it aside \
         and start empty"
    )]
    Truncated { path: PathBuf },
    #[error(
        "state file {path} has format version {found}, this kappe reads version {expected}; run the \
         matching kappe version, or start with --discard-corrupt-state to move it aside and start empty"
    )]
    BadVersion {
        path: PathBuf,
        found: u32,
        expected: u32,
    },
}

impl SnapshotError {
    /// True for problems with the file's contents (which `--discard-corrupt-state` may discard),
    /// false for I/O errors (which it must not paper over).
    pub fn is_discardable(&self) -> bool {
        !matches!(self, SnapshotError::Io { .. })
    }
}

/// What a write produced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriteSummary {
    pub visitors: u64,
    pub bytes: u64,
}

/// Encodes into a buffer, hashing and flushing it in large chunks.
struct Enc {
    buf: Vec<u8>,
    hasher: SipHasher13,
    file: File,
    written: u64,
}

impl Enc {
    fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }
    fn u16(&mut self, v: u16) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    fn bytes(&mut self, b: &[u8]) {
        // Names and patterns are bounded well below u16::MAX by their producers; clip to be safe.
        let b = &b[..b.len().min(usize::from(u16::MAX))];
        self.u16(b.len() as u16);
        self.buf.extend_from_slice(b);
    }
    fn maybe_flush(&mut self) -> io::Result<()> {
        if self.buf.len() >= CHUNK {
            self.flush()?;
        }
        Ok(())
    }
    fn flush(&mut self) -> io::Result<()> {
        self.hasher.write(&self.buf);
        self.file.write_all(&self.buf)?;
        self.written += self.buf.len() as u64;
        self.buf.clear();
        Ok(())
    }
}

/// Writes the store to `path` atomically: a temporary file beside it, fsync, rename, fsync of
/// the directory. A crash at any point leaves either the old file or the new one.
///
/// # Errors
/// [`SnapshotError::Io`] when the file cannot be written or renamed.
pub fn write(
    store: &MemoryStore,
    path: &Path,
    now: UnixSecs,
) -> Result<WriteSummary, SnapshotError> {
    let io_err = |source| SnapshotError::Io {
        path: path.to_owned(),
        source,
    };
    let tmp = temp_path(path);
    let result = write_to(store, &tmp, now);
    let summary = match result {
        Ok(s) => s,
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            return Err(io_err(e));
        }
    };
    fs::rename(&tmp, path).map_err(io_err)?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    File::open(dir).and_then(|d| d.sync_all()).map_err(io_err)?;
    Ok(summary)
}

fn temp_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".tmp-{}", std::process::id()));
    PathBuf::from(s)
}

fn write_to(store: &MemoryStore, tmp: &Path, now: UnixSecs) -> io::Result<WriteSummary> {
    let file = File::create(tmp)?;
    let mut e = Enc {
        buf: Vec::with_capacity(CHUNK + 4096),
        hasher: SipHasher13::new(),
        file,
        written: 0,
    };
    e.buf.extend_from_slice(MAGIC);
    e.u32(VERSION);
    e.u64(now);
    let names = store.names();
    e.u32(names.len() as u32);
    for n in &names {
        e.bytes(n.as_bytes());
    }
    let mut count = 0u64;
    let mut failed: Option<io::Error> = None;
    store.for_each(|key, image| {
        if failed.is_some() {
            return;
        }
        count += 1;
        encode_visitor(&mut e.buf, key, &image);
        // Flushing under the shard's read guard only delays new-visitor inserts in that shard
        // for one chunk's write to the page cache.
        if let Err(err) = e.maybe_flush() {
            failed = Some(err);
        }
    });
    if let Some(err) = failed {
        return Err(err);
    }
    // Visitors may come and go while writing, so the count follows the records.
    e.u64(0);
    e.u8(END);
    e.u64(count);
    e.flush()?;
    let sum = e.hasher.finish();
    e.file.write_all(TRAILER)?;
    e.file.write_all(&sum.to_le_bytes())?;
    e.file.sync_all()?;
    Ok(WriteSummary {
        visitors: count,
        bytes: e.written + TRAILER_LEN as u64,
    })
}

fn encode_visitor(out: &mut Vec<u8>, key: Key, image: &Image) {
    debug_assert!(!matches!(image, Image::Full { full, .. } if full.burns.len() > 60_000));
    let mut e = RawEnc(out);
    e.u64(key.visitor().0);
    match image {
        Image::Inline(d) => {
            e.u8(0);
            e.u32(d.campaign);
            e.u32(d.forget_at);
            e.u32(d.first_seen);
            let ts: Vec<u32> = d.ring.iter().copied().filter(|t| *t != 0).collect();
            e.ts(&ts);
        }
        Image::Full { last_seen, full } => {
            e.u8(1);
            e.u32(*last_seen);
            for recs in [&full.campaigns, &full.advertisers] {
                e.u16(recs.len() as u16);
                for r in recs {
                    e.u32(r.id);
                    e.u32(r.first_seen);
                    e.u32(r.forget_at);
                    e.ts(&r.ts);
                }
            }
            e.u32(full.visitor_forget);
            e.ts(&full.visitor);
            e.u16(full.burns.len() as u16);
            for b in &full.burns {
                e.u32(b.until);
                let p = b.pattern.as_bytes();
                e.u16(p.len().min(usize::from(u16::MAX)) as u16);
                e.0.extend_from_slice(&p[..p.len().min(usize::from(u16::MAX))]);
            }
        }
    }
}

struct RawEnc<'a>(&'a mut Vec<u8>);

impl RawEnc<'_> {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn ts(&mut self, ts: &[u32]) {
        self.u16(ts.len() as u16);
        for t in ts {
            self.u32(*t);
        }
    }
}

/// Reads a state file into a new store with `opts`. The file is not modified. Call
/// [`MemoryStore::sweep`] and [`MemoryStore::enforce_bounds`] afterwards to drop what expired
/// while kappe was down.
///
/// # Errors
/// [`SnapshotError::Io`] (including a missing file: check for it first),
/// [`SnapshotError::Truncated`], [`SnapshotError::Corrupt`] or [`SnapshotError::BadVersion`].
pub fn load(path: &Path, opts: MemoryOptions) -> Result<MemoryStore, SnapshotError> {
    let bytes = fs::read(path).map_err(|source| SnapshotError::Io {
        path: path.to_owned(),
        source,
    })?;
    load_bytes(&bytes, path, opts)
}

/// Decodes the bytes of a state file into a new store with `opts`; `path` only names the file
/// in errors. [`load`] is this after reading the file; the fuzz target feeds it arbitrary bytes.
///
/// # Errors
/// [`SnapshotError::Truncated`], [`SnapshotError::Corrupt`] or [`SnapshotError::BadVersion`].
pub fn load_bytes(
    bytes: &[u8],
    path: &Path,
    opts: MemoryOptions,
) -> Result<MemoryStore, SnapshotError> {
    let corrupt = |detail: &str| SnapshotError::Corrupt {
        path: path.to_owned(),
        detail: detail.to_owned(),
    };
    if bytes.len() < MAGIC.len() {
        return Err(SnapshotError::Truncated {
            path: path.to_owned(),
        });
    }
    if &bytes[..8] != MAGIC {
        return Err(corrupt("not a kappe state file"));
    }
    if bytes.len() < HEADER_LEN + TRAILER_LEN
        || &bytes[bytes.len() - 16..bytes.len() - 8] != TRAILER
    {
        return Err(SnapshotError::Truncated {
            path: path.to_owned(),
        });
    }
    let version = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
    if version != VERSION {
        return Err(SnapshotError::BadVersion {
            path: path.to_owned(),
            found: version,
            expected: VERSION,
        });
    }
    let body = &bytes[..bytes.len() - TRAILER_LEN];
    let mut sum_bytes = [0u8; 8];
    sum_bytes.copy_from_slice(&bytes[bytes.len() - 8..]);
    if checksum(body) != u64::from_le_bytes(sum_bytes) {
        return Err(corrupt("checksum mismatch"));
    }
    // The body ends with the visitor count: size the index once instead of growing it while
    // restoring (a checksum-valid count, and bounded by --max-visitors).
    let mut count = [0u8; 8];
    count.copy_from_slice(&body[body.len() - 8..]);
    let count = usize::try_from(u64::from_le_bytes(count)).unwrap_or(usize::MAX);
    // A record takes well over 16 bytes, so the file's size bounds what a forged count can ask.
    let store = MemoryStore::with_capacity(opts, count.min(body.len() / 16).max(1 << 16));
    decode(&store, &body[HEADER_LEN..]).ok_or_else(|| corrupt("malformed record"))?;
    Ok(store)
}

/// The checksum of a state file's bytes before the trailer.
fn checksum(body: &[u8]) -> u64 {
    let mut h = SipHasher13::new();
    h.write(body);
    h.finish()
}

/// Wraps `records` (everything after the header, up to the trailer) in a header and a valid
/// trailer, so that a fuzzer's mutations reach the record decoder instead of failing the
/// checksum.
pub fn seal(records: &[u8], saved_at: UnixSecs) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + records.len() + TRAILER_LEN);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&saved_at.to_le_bytes());
    out.extend_from_slice(records);
    let sum = checksum(&out);
    out.extend_from_slice(TRAILER);
    out.extend_from_slice(&sum.to_le_bytes());
    out
}

struct Dec<'a> {
    b: &'a [u8],
}

impl<'a> Dec<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.b.len() < n {
            return None;
        }
        let (h, t) = self.b.split_at(n);
        self.b = t;
        Some(h)
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes(self.take(2)?.try_into().ok()?))
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn str(&mut self) -> Option<String> {
        let n = usize::from(self.u16()?);
        String::from_utf8(self.take(n)?.to_vec()).ok()
    }
    fn ts(&mut self) -> Option<Vec<u32>> {
        let n = usize::from(self.u16()?);
        (0..n).map(|_| self.u32()).collect()
    }
    fn rec(&mut self, names: usize) -> Option<Rec> {
        let r = Rec {
            id: self.u32()?,
            first_seen: self.u32()?,
            forget_at: self.u32()?,
            ts: self.ts()?,
        };
        ((r.id as usize) < names).then_some(r)
    }
}

fn decode(store: &MemoryStore, body: &[u8]) -> Option<()> {
    let mut d = Dec { b: body };
    let n_names = d.u32()? as usize;
    let names: Vec<String> = (0..n_names).map(|_| d.str()).collect::<Option<_>>()?;
    store.restore_names(&names).ok()?;
    // Parsing is cheap and sequential; inserting is cache-miss bound, so it runs on workers.
    let workers = std::thread::available_parallelism()
        .map_or(1, usize::from)
        .clamp(1, 4);
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<(Key, Image)>>(2 * workers);
    // A std Mutex around the receiver: workers take one batch at a time, rarely contended.
    let rx = std::sync::Mutex::new(rx);
    std::thread::scope(|s| {
        for _ in 0..workers {
            let rx = &rx;
            s.spawn(move || {
                loop {
                    let next = rx
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .recv();
                    let Ok(batch) = next else { break };
                    for (key, image) in batch {
                        store.restore(key, image);
                    }
                }
            });
        }
        let mut flush = |batch: &mut Vec<(Key, Image)>| {
            // Workers only stop when `tx` is dropped, so a send cannot fail here.
            let _ = tx.send(std::mem::take(batch));
        };
        let parsed = parse_visitors(&mut d, n_names, &mut flush);
        // Dropping the sender ends the workers; the scope then waits for their last inserts.
        drop(tx);
        parsed
    })
}

fn parse_visitors(
    d: &mut Dec<'_>,
    n_names: usize,
    flush: &mut impl FnMut(&mut Vec<(Key, Image)>),
) -> Option<()> {
    const BATCH: usize = 16_384;
    let mut batch = Vec::with_capacity(BATCH);
    let mut visitors = 0u64;
    loop {
        let key = Key::new(crate::store::VisitorKey(d.u64()?));
        let image = match d.u8()? {
            END => {
                flush(&mut batch);
                return (d.u64()? == visitors && d.b.is_empty()).then_some(());
            }
            0 => {
                let mut inline = Inline {
                    campaign: d.u32()?,
                    forget_at: d.u32()?,
                    first_seen: d.u32()?,
                    ring: [0; 4],
                };
                let ts = d.ts()?;
                if ts.len() > inline.ring.len() || inline.campaign as usize > n_names {
                    return None;
                }
                let start = inline.ring.len() - ts.len();
                inline.ring[start..].copy_from_slice(&ts);
                Image::Inline(inline)
            }
            1 => {
                let last_seen = d.u32()?;
                let mut full = Full::default();
                for recs in [&mut full.campaigns, &mut full.advertisers] {
                    let n = d.u16()?;
                    for _ in 0..n {
                        recs.push(d.rec(n_names)?);
                    }
                }
                full.visitor_forget = d.u32()?;
                full.visitor = d.ts()?;
                let n = d.u16()?;
                for _ in 0..n {
                    let until = d.u32()?;
                    let pattern = d.str()?.into_boxed_str();
                    full.burns.push(Burn { pattern, until });
                }
                Image::Full { last_seen, full }
            }
            _ => return None,
        };
        batch.push((key, image));
        visitors += 1;
        if batch.len() >= BATCH {
            flush(&mut batch);
        }
    }
}

/// Moves a state file that failed to load aside to `PATH.corrupt-<now>`, for
/// `--discard-corrupt-state`. Returns the new path.
///
/// # Errors
/// [`SnapshotError::Io`] when the rename fails.
pub fn move_aside(path: &Path, now: UnixSecs) -> Result<PathBuf, SnapshotError> {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".corrupt-{now}"));
    let to = PathBuf::from(s);
    fs::rename(path, &to).map_err(|source| SnapshotError::Io {
        path: path.to_owned(),
        source,
    })?;
    Ok(to)
}

/// The start-up rule in one place: no file is an empty store; a good file is loaded; a bad one
/// stops start-up, unless `discard_corrupt` is set, in which case it is moved aside (never
/// overwritten) and the store starts empty.
///
/// # Errors
/// Any load error when `discard_corrupt` is false; I/O errors always.
pub fn load_at_start(
    path: &Path,
    opts: MemoryOptions,
    discard_corrupt: bool,
    now: UnixSecs,
) -> Result<(MemoryStore, Option<PathBuf>), SnapshotError> {
    if !path.exists() {
        return Ok((MemoryStore::new(opts), None));
    }
    match load(path, opts) {
        Ok(store) => {
            store.sweep(now);
            store.enforce_bounds(now);
            Ok((store, None))
        }
        Err(e) if discard_corrupt && e.is_discardable() => {
            let aside = move_aside(path, now)?;
            Ok((MemoryStore::new(opts), Some(aside)))
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Cap;
    use crate::store::{AdmitRequest, VisitorKey};

    const T0: u64 = 1_700_000_000;

    fn filled() -> MemoryStore {
        let s = MemoryStore::new(MemoryOptions::default());
        let caps = [Cap {
            limit: 3,
            window_secs: 86_400,
        }];
        let vis = [Cap {
            limit: 10,
            window_secs: 3_600,
        }];
        for i in 0..500u64 {
            let r = AdmitRequest {
                campaign: if i % 3 == 0 { "rt-a" } else { "rt-b" },
                campaign_caps: &caps,
                advertiser: Some("acme"),
                advertiser_caps: if i % 5 == 0 { &caps } else { &[] },
                visitor_caps: if i % 7 == 0 { &vis } else { &[] },
                max_age_secs: Some(7 * 86_400),
            };
            s.admit(VisitorKey(i), &r, T0 + i).unwrap();
            if i % 11 == 0 {
                s.admit(
                    VisitorKey(i),
                    &AdmitRequest {
                        campaign: "other",
                        ..r
                    },
                    T0 + i,
                )
                .unwrap();
                s.burn(VisitorKey(i), "rt-*", T0 + 10_000, T0).unwrap();
            }
        }
        s
    }

    /// Every visitor's report is the same after a write and a load.
    #[test]
    fn snapshot_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state");
        let s = filled();
        let summary = write(&s, &path, T0).unwrap();
        assert_eq!(summary.visitors, 500);
        assert_eq!(summary.bytes, fs::metadata(&path).unwrap().len());
        let back = load(&path, MemoryOptions::default()).unwrap();
        assert_eq!(back.len(), 500);
        assert!(s.stats().spilled_visitors > 0);
        assert_eq!(back.stats().spilled_visitors, s.stats().spilled_visitors);
        for i in 0..500u64 {
            assert_eq!(
                back.report(VisitorKey(i), T0 + 600),
                s.report(VisitorKey(i), T0 + 600)
            );
        }
        assert!(
            !fs::read_dir(dir.path())
                .unwrap()
                .any(|e| { e.unwrap().file_name().to_string_lossy().contains(".tmp-") })
        );
    }

    /// A flipped byte is reported as corrupt, with an operator-facing message, and the file is
    /// left exactly as it was.
    #[test]
    fn corrupt_snapshot_is_refused_and_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state");
        write(&filled(), &path, T0).unwrap();
        let mut bytes = fs::read(&path).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x40;
        fs::write(&path, &bytes).unwrap();
        let err = load(&path, MemoryOptions::default()).unwrap_err();
        assert!(matches!(err, SnapshotError::Corrupt { .. }), "{err}");
        let msg = err.to_string();
        assert!(
            msg.contains("--discard-corrupt-state") && msg.contains("corrupt"),
            "{msg}"
        );
        assert!(load_at_start(&path, MemoryOptions::default(), false, T0).is_err());
        assert_eq!(fs::read(&path).unwrap(), bytes);
        fs::write(&path, b"something else entirely").unwrap();
        assert!(matches!(
            load(&path, MemoryOptions::default()),
            Err(SnapshotError::Corrupt { .. })
        ));
    }

    /// A cut-off file is reported as truncated and left untouched; with the discard flag it is
    /// moved aside (not overwritten) and the store starts empty.
    #[test]
    fn truncated_snapshot_is_refused_then_moved_aside_on_request() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state");
        write(&filled(), &path, T0).unwrap();
        let bytes = fs::read(&path).unwrap();
        fs::write(&path, &bytes[..bytes.len() - 100]).unwrap();
        let err = load(&path, MemoryOptions::default()).unwrap_err();
        assert!(matches!(err, SnapshotError::Truncated { .. }), "{err}");
        assert_eq!(fs::read(&path).unwrap().len(), bytes.len() - 100);
        let (store, aside) = load_at_start(&path, MemoryOptions::default(), true, T0).unwrap();
        assert!(store.is_empty());
        let aside = aside.unwrap();
        assert!(aside.to_string_lossy().ends_with(&format!(".corrupt-{T0}")));
        assert_eq!(fs::read(&aside).unwrap().len(), bytes.len() - 100);
        assert!(!path.exists());
    }

    /// A file from another format version is refused with both versions named.
    #[test]
    fn other_version_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state");
        write(&filled(), &path, T0).unwrap();
        let mut bytes = fs::read(&path).unwrap();
        bytes[8] = 9;
        fs::write(&path, &bytes).unwrap();
        let err = load(&path, MemoryOptions::default()).unwrap_err();
        assert!(matches!(
            err,
            SnapshotError::BadVersion {
                found: 9,
                expected: 1,
                ..
            }
        ));
        assert!(err.to_string().contains("version 9"));
    }

    /// Re-sealing the records of a written file gives the same store; sealed records that do
    /// not decode are corrupt, not a panic.
    #[test]
    fn sealed_records_load_from_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state");
        write(&filled(), &path, T0).unwrap();
        let bytes = fs::read(&path).unwrap();
        let records = &bytes[HEADER_LEN..bytes.len() - TRAILER_LEN];
        let sealed = seal(records, T0);
        assert_eq!(sealed, bytes);
        let back = load_bytes(&sealed, &path, MemoryOptions::default()).unwrap();
        assert_eq!(back.len(), 500);
        for junk in [&b""[..], b"\x01", &[0xff; 64]] {
            let err = load_bytes(&seal(junk, T0), &path, MemoryOptions::default()).unwrap_err();
            assert!(matches!(err, SnapshotError::Corrupt { .. }), "{err}");
        }
    }

    /// A missing file means a first start: an empty store, nothing moved.
    #[test]
    fn missing_file_starts_empty() {
        let dir = tempfile::tempdir().unwrap();
        let (s, aside) = load_at_start(
            &dir.path().join("none"),
            MemoryOptions::default(),
            false,
            T0,
        )
        .unwrap();
        assert!(s.is_empty() && aside.is_none());
    }
}
