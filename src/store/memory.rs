//! The embedded in-memory store: a sharded map from pseudonymous visitor to a small fixed-size
//! slot, with one atomic admit per visitor, a sweeper, and bounded size.
//!
//! # Layout
//! Each map value is a `Slot` of seven `AtomicU32` words (28 bytes; with the 8-byte key a map
//! bucket is 36 bytes, which is what bytes per key is made of). A visitor with one campaign and
//! at most four timestamps to keep lives entirely in its slot: word 0 is a lock bit, a "spilled"
//! bit and the interned campaign id; then forget-at, first-seen and a four-entry timestamp ring.
//! Any visitor needing more (several campaigns, advertiser or visitor-wide caps, burns, caps
//! above four) is *spilled*: its slot keeps only the lock, the spilled bit, its overall forget
//! time and its last-seen time, and the full record lives in a second map.
//!
//! # Concurrency
//! Admitting for an existing visitor takes a DashMap *read* guard and then the slot's own lock
//! bit (a tiny spin lock: the critical section is a handful of loads and stores, far shorter
//! than parking a thread would cost). Data words are read and written with relaxed ordering
//! while the lock is held; the Acquire on locking and the Release on unlocking order them. The
//! spill map is only touched while holding the visitor's slot lock (or its shard's write lock),
//! so its per-record mutex is never contended. Nothing here is async, so no guard can live
//! across an `.await`. Lock order is always main map, then slot, then spill map.
//!
//! Removal (erase, sweep, eviction) takes the main shard's write lock, which waits for every
//! reader of that shard, so it never races a slot that is being updated.

use std::hash::{BuildHasher, BuildHasherDefault, Hash, Hasher};
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use dashmap::DashMap;

use crate::clock::UnixSecs;
use crate::policy::{Cap, glob_match};
use crate::store::window::{
    check, forget_at, keep_count, longest_window, push_keep, to_u32, truncate_oldest,
};
use crate::store::{
    Admission, AdmitRequest, BurnRecord, CampaignRecord, Denial, DenyReason, StoreError,
    VisitorKey, VisitorReport,
};

/// How many timestamps a slot holds inline.
pub const INLINE_TIMESTAMPS: usize = 4;
/// How many burned patterns one visitor may hold; a bound so a visitor cannot grow without limit.
pub const MAX_BURNS_PER_VISITOR: usize = 64;
/// The largest campaign table the slot encoding allows (30 bits).
pub const MAX_CAMPAIGNS_LIMIT: usize = (1 << 30) - 2;

const LOCK: u32 = 1 << 31;
const SPILLED: u32 = 1 << 30;
const ID_MASK: u32 = SPILLED - 1;
const W_TAG: usize = 0;
const W_FORGET: usize = 1;
const W_FIRST: usize = 2;
const W_RING: usize = 3;
/// For spilled slots the first ring word holds the last-seen time (for eviction).
const W_LAST_SEEN: usize = W_RING;

/// Sizing and bounds of a [`MemoryStore`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryOptions {
    /// At most this many visitors are held; beyond it the least recently seen are evicted.
    pub max_visitors: usize,
    /// At most this many campaign and advertiser ids are interned.
    pub max_campaigns: usize,
    /// Nothing is kept longer than this after its last update.
    pub max_retention_secs: u32,
}

impl Default for MemoryOptions {
    fn default() -> Self {
        MemoryOptions {
            max_visitors: 1_000_000,
            max_campaigns: 100_000,
            max_retention_secs: 30 * 86_400,
        }
    }
}

/// Plain numbers for the metrics module to read at scrape time.
/// Where a stepped sweep goes on from ([`MemoryStore::sweep_step`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SweepCursor {
    shard: usize,
    bucket: usize,
    /// Whole passes over the store completed.
    pub passes: u64,
    /// While the store is near its bound: the last-seen time at or below which a visitor is
    /// evicted on the way.
    evict_to: Option<u32>,
}

impl SweepCursor {
    /// Whether the next step starts a pass.
    pub fn at_start(&self) -> bool {
        self.shard == 0 && self.bucket == 0
    }

    /// Whether the steps are evicting visitors to make room, besides sweeping.
    pub fn evicting(&self) -> bool {
        self.evict_to.is_some()
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Visitors currently held (`kappe_store_visitors`).
    pub visitors: u64,
    /// Visitors whose record needs the heap (several campaigns, burns, visitor caps).
    pub spilled_visitors: u64,
    /// What the store estimates it holds, in bytes (map buckets plus spilled records).
    pub estimated_bytes: u64,
    /// Visitors removed because everything about them expired (`reason="expired"`).
    pub evictions_expired: u64,
    /// Visitors removed to stay within `max_visitors` (`reason="capacity"`).
    pub evictions_capacity: u64,
    /// Campaign and advertiser ids interned.
    pub campaigns_interned: u64,
}

/// The visitor key as stored: two `u32` halves so that a map bucket aligns to 4 bytes (36 bytes
/// per bucket instead of 40).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct Key([u32; 2]);

impl Key {
    pub(crate) fn new(v: VisitorKey) -> Self {
        Key([v.0 as u32, (v.0 >> 32) as u32])
    }
    pub(crate) fn visitor(self) -> VisitorKey {
        VisitorKey(u64::from(self.0[0]) | (u64::from(self.0[1]) << 32))
    }
}

impl Hash for Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.visitor().0);
    }
}

/// Visitor keys are already keyed SipHash outputs: uniformly spread and not chosen by anyone
/// who knows the secret, so hashing them again would only cost time.
#[derive(Default)]
pub(crate) struct IdentityHasher(u64);

impl Hasher for IdentityHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only reached if a key type other than `Key` is hashed: fold the bytes (FNV-1a).
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type Identity = BuildHasherDefault<IdentityHasher>;

/// The full 64-bit hash dashmap files `key` under: the shard comes from its high bits, hashbrown's
/// bucket from its low bits and its control tag from its top seven.
fn key_hash(key: Key) -> u64 {
    Identity::default().hash_one(key)
}
/// A visitor's slot under its shard's read guard.
type SlotRef<'a> = lock_api::MappedRwLockReadGuard<'a, dashmap::RawRwLock, Slot>;

/// One visitor's slot. See the module docs for the word layout.
pub(crate) struct Slot {
    w: [AtomicU32; 7],
}

/// The inline record, as plain values, while its slot is locked.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Inline {
    /// Interned campaign id + 1; 0 when the slot holds no campaign.
    pub(crate) campaign: u32,
    pub(crate) forget_at: u32,
    pub(crate) first_seen: u32,
    /// Timestamps, oldest first, with unused entries (0) at the front.
    pub(crate) ring: [u32; INLINE_TIMESTAMPS],
}

impl Inline {
    fn timestamps(&self) -> &[u32] {
        let start = self
            .ring
            .iter()
            .position(|t| *t != 0)
            .unwrap_or(INLINE_TIMESTAMPS);
        &self.ring[start..]
    }

    fn push(&mut self, t: u32, keep: usize) {
        self.ring.rotate_left(1);
        self.ring[INLINE_TIMESTAMPS - 1] = t;
        for x in &mut self.ring[..INLINE_TIMESTAMPS - keep.min(INLINE_TIMESTAMPS)] {
            *x = 0;
        }
    }

    /// When this visitor was last admitted: the approximation of "last seen" used by eviction.
    fn last_seen(&self) -> u32 {
        self.ring[INLINE_TIMESTAMPS - 1].max(self.first_seen)
    }
}

impl Slot {
    fn empty() -> Self {
        Slot {
            w: Default::default(),
        }
    }

    pub(crate) fn from_inline(d: &Inline) -> Self {
        let s = Slot::empty();
        s.store_inline(d);
        s.w[W_TAG].store(d.campaign & ID_MASK, Ordering::Relaxed);
        s
    }

    fn spilled(forget: u32, last_seen: u32) -> Self {
        let s = Slot::empty();
        s.w[W_TAG].store(SPILLED, Ordering::Relaxed);
        s.w[W_FORGET].store(forget, Ordering::Relaxed);
        s.w[W_LAST_SEEN].store(last_seen, Ordering::Relaxed);
        s
    }

    fn lock(&self) -> Locked<'_> {
        let mut spins = 0u32;
        loop {
            let cur = self.w[W_TAG].load(Ordering::Relaxed);
            if cur & LOCK == 0
                && self.w[W_TAG]
                    .compare_exchange_weak(cur, cur | LOCK, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
            {
                return Locked {
                    slot: self,
                    tag: cur,
                };
            }
            spins += 1;
            if spins < 100 {
                std::hint::spin_loop();
            } else {
                // The holder may have been preempted; let it run.
                std::thread::yield_now();
            }
        }
    }

    fn load_inline(&self) -> Inline {
        let r = |i: usize| self.w[i].load(Ordering::Relaxed);
        Inline {
            campaign: r(W_TAG) & ID_MASK,
            forget_at: r(W_FORGET),
            first_seen: r(W_FIRST),
            ring: [r(W_RING), r(W_RING + 1), r(W_RING + 2), r(W_RING + 3)],
        }
    }

    fn store_inline(&self, d: &Inline) {
        let w = |i: usize, v: u32| self.w[i].store(v, Ordering::Relaxed);
        w(W_FORGET, d.forget_at);
        w(W_FIRST, d.first_seen);
        for (i, t) in d.ring.iter().enumerate() {
            w(W_RING + i, *t);
        }
    }

    /// Read without the lock; only for callers holding the shard's write lock (so no one holds
    /// the slot lock) or for approximate eviction sampling.
    fn peek(&self) -> (bool, u32, u32) {
        let tag = self.w[W_TAG].load(Ordering::Relaxed);
        let forget = self.w[W_FORGET].load(Ordering::Relaxed);
        if tag & SPILLED != 0 {
            (true, forget, self.w[W_LAST_SEEN].load(Ordering::Relaxed))
        } else {
            let d = self.load_inline();
            let forget = if d.campaign == 0 { 0 } else { forget };
            (false, forget, d.last_seen())
        }
    }
}

/// A held slot lock; unlocks on drop, publishing the tag it holds.
struct Locked<'a> {
    slot: &'a Slot,
    /// Word 0 without the lock bit, as it will be published on unlock.
    tag: u32,
}

impl Locked<'_> {
    fn is_spilled(&self) -> bool {
        self.tag & SPILLED != 0
    }
    fn read(&self) -> Inline {
        let mut d = self.slot.load_inline();
        d.campaign = self.tag & ID_MASK;
        d
    }
    fn write(&mut self, d: &Inline) {
        self.slot.store_inline(d);
        self.tag = d.campaign & ID_MASK;
    }
    fn set_spilled(&mut self, forget: u32, last_seen: u32) {
        self.tag = SPILLED;
        self.slot.w[W_FORGET].store(forget, Ordering::Relaxed);
        self.slot.w[W_LAST_SEEN].store(last_seen, Ordering::Relaxed);
    }
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        self.slot.w[W_TAG].store(self.tag, Ordering::Release);
    }
}

/// A campaign's or advertiser's stored impressions.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Rec {
    pub(crate) id: u32,
    pub(crate) first_seen: u32,
    pub(crate) forget_at: u32,
    pub(crate) ts: Vec<u32>,
}

/// A burned pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Burn {
    pub(crate) pattern: Box<str>,
    pub(crate) until: u32,
}

/// The full record of a spilled visitor.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Full {
    pub(crate) campaigns: Vec<Rec>,
    pub(crate) advertisers: Vec<Rec>,
    pub(crate) visitor: Vec<u32>,
    pub(crate) visitor_forget: u32,
    pub(crate) burns: Vec<Burn>,
}

impl Full {
    /// Drops everything forgotten by `now`.
    fn prune(&mut self, now: u32) {
        self.campaigns.retain(|r| r.forget_at > now);
        self.advertisers.retain(|r| r.forget_at > now);
        if self.visitor_forget <= now {
            self.visitor.clear();
            self.visitor_forget = 0;
        }
        self.burns.retain(|b| b.until > now);
    }

    /// When everything here may be forgotten (0 when empty).
    fn forget_at(&self) -> u32 {
        let recs = self
            .campaigns
            .iter()
            .chain(&self.advertisers)
            .map(|r| r.forget_at);
        let burns = self.burns.iter().map(|b| b.until);
        recs.chain(burns)
            .chain(std::iter::once(if self.visitor.is_empty() {
                0
            } else {
                self.visitor_forget
            }))
            .max()
            .unwrap_or(0)
    }

    fn is_empty(&self) -> bool {
        self.campaigns.is_empty()
            && self.advertisers.is_empty()
            && self.visitor.is_empty()
            && self.burns.is_empty()
    }

    /// The inline form, when this record fits one.
    fn as_inline(&self) -> Option<Inline> {
        if !(self.advertisers.is_empty() && self.visitor.is_empty() && self.burns.is_empty()) {
            return None;
        }
        match self.campaigns.as_slice() {
            [] => Some(Inline::default()),
            [r] if r.ts.len() <= INLINE_TIMESTAMPS => {
                let mut d = Inline {
                    campaign: r.id + 1,
                    forget_at: r.forget_at,
                    first_seen: r.first_seen,
                    ring: [0; INLINE_TIMESTAMPS],
                };
                d.ring[INLINE_TIMESTAMPS - r.ts.len()..].copy_from_slice(&r.ts);
                Some(d)
            }
            _ => None,
        }
    }

    fn from_inline(d: &Inline) -> Self {
        let mut f = Full::default();
        if d.campaign != 0 {
            f.campaigns.push(Rec {
                id: d.campaign - 1,
                first_seen: d.first_seen,
                forget_at: d.forget_at,
                ts: d.timestamps().to_vec(),
            });
        }
        f
    }

    /// A rough heap size, for the bytes estimate.
    fn heap_bytes(&self) -> usize {
        let recs = self.campaigns.iter().chain(&self.advertisers);
        std::mem::size_of::<Full>()
            + recs
                .map(|r| std::mem::size_of::<Rec>() + 4 * r.ts.capacity())
                .sum::<usize>()
            + 4 * self.visitor.capacity()
            + self
                .burns
                .iter()
                .map(|b| 24 + b.pattern.len())
                .sum::<usize>()
    }
}

/// The bounded table of campaign and advertiser ids. Slots store a 30-bit id instead of a
/// string; ids are never reused, so the table's bound is also a bound on distinct campaigns seen.
///
/// Lookups go through a small per-thread cache first: ids never change once given, so a cached
/// id is always right, and the hot path then touches no shared lock word (a shared `RwLock`
/// reader count bouncing between cores is what stops admits from scaling).
pub(crate) struct Interner {
    /// Tells this table's entries apart in the per-thread caches.
    table: u64,
    ids: DashMap<Box<str>, u32>,
    // A std RwLock: written once per new campaign, read only for reports and snapshots.
    names: RwLock<Vec<Arc<str>>>,
    max: usize,
}

impl Interner {
    fn new(max: usize) -> Self {
        static NEXT_TABLE: AtomicU64 = AtomicU64::new(1);
        Interner {
            table: NEXT_TABLE.fetch_add(1, Ordering::Relaxed),
            ids: DashMap::new(),
            names: RwLock::new(Vec::new()),
            max: max.min(MAX_CAMPAIGNS_LIMIT),
        }
    }

    fn get(&self, name: &str) -> Option<u32> {
        self.ids.get(name).map(|r| *r)
    }

    fn intern(&self, name: &str) -> Result<u32, StoreError> {
        let cached = INTERN_CACHE.with_borrow(|c| {
            if c.0 != self.table {
                return None;
            }
            c.1.get(name).copied()
        });
        if let Some(id) = cached {
            return Ok(id);
        }
        let id = self.intern_shared(name)?;
        INTERN_CACHE.with_borrow_mut(|c| {
            if c.0 != self.table || c.1.len() >= INTERN_CACHE_ENTRIES {
                c.0 = self.table;
                c.1.clear();
            }
            c.1.insert(name.into(), id);
        });
        Ok(id)
    }

    fn intern_shared(&self, name: &str) -> Result<u32, StoreError> {
        if let Some(id) = self.get(name) {
            return Ok(id);
        }
        let mut names = self.names.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(id) = self.get(name) {
            return Ok(id);
        }
        if names.len() >= self.max {
            return Err(StoreError::CampaignTableFull(self.max));
        }
        let id = names.len() as u32;
        names.push(Arc::from(name));
        self.ids.insert(name.into(), id);
        Ok(id)
    }

    pub(crate) fn name(&self, id: u32) -> Arc<str> {
        let names = self.names.read().unwrap_or_else(PoisonError::into_inner);
        names
            .get(id as usize)
            .cloned()
            .unwrap_or_else(|| Arc::from(""))
    }

    pub(crate) fn all(&self) -> Vec<Arc<str>> {
        self.names
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn len(&self) -> usize {
        self.names
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

/// How many names each thread caches (per store; a thread using another store starts over).
const INTERN_CACHE_ENTRIES: usize = 1024;

/// A thread's cached names: the table they belong to, and name -> id.
type NameCache = (
    u64,
    std::collections::HashMap<Box<str>, u32, BuildHasherDefault<FnvHasher>>,
);

thread_local! {
    static INTERN_CACHE: std::cell::RefCell<NameCache> = std::cell::RefCell::new((0, Default::default()));
}

/// FNV-1a for the per-thread name cache: names are short, and the cache is small and bounded,
/// so a flood of crafted names costs at most a cache clear.
#[derive(Default)]
pub(crate) struct FnvHasher(u64);

impl Hasher for FnvHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for b in bytes {
            h = (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3);
        }
        self.0 = h;
    }
}

/// The embedded exact sliding-window store. See the module docs.
pub struct MemoryStore {
    opts: MemoryOptions,
    visitors: DashMap<Key, Slot, Identity>,
    spill: DashMap<Key, Mutex<Full>, Identity>,
    names: Interner,
    /// Visitors held; kept by hand because `DashMap::len` locks every shard.
    count: AtomicUsize,
    evicted_expired: AtomicU64,
    evicted_capacity: AtomicU64,
    /// One evictor at a time; the others wait rather than evict twice.
    evicting: Mutex<()>,
}

/// A view of one stored visitor, as snapshots write it.
pub(crate) enum Image {
    Inline(Inline),
    Full { last_seen: u32, full: Full },
}

impl MemoryStore {
    /// An empty store. The map starts small and grows with the visitors it holds.
    pub fn new(opts: MemoryOptions) -> Self {
        Self::with_capacity(opts, 1 << 16)
    }

    /// An empty store with room for `visitors` before its index grows (a snapshot being restored
    /// knows how many it brings), never more than `max_visitors`.
    pub fn with_capacity(opts: MemoryOptions, visitors: usize) -> Self {
        let shards = 128;
        // Start small and let each shard grow on its own: a table pre-sized for a bound of ten
        // million would be touched all over by a few hundred thousand random keys, so resident
        // memory would follow the bound instead of the visitors held. A shard's rehash moves
        // 1/128 of the table, a short pause on one shard only.
        let capacity = opts.max_visitors.min(visitors).min(1 << 28);
        MemoryStore {
            opts,
            visitors: DashMap::with_capacity_and_hasher_and_shard_amount(
                capacity,
                Identity::default(),
                shards,
            ),
            spill: DashMap::with_hasher_and_shard_amount(Identity::default(), shards),
            names: Interner::new(opts.max_campaigns),
            count: AtomicUsize::new(0),
            evicted_expired: AtomicU64::new(0),
            evicted_capacity: AtomicU64::new(0),
            evicting: Mutex::new(()),
        }
    }

    /// The options the store was built with.
    pub fn options(&self) -> MemoryOptions {
        self.opts
    }

    /// Decides and records one impression atomically: checks burns, maximum age, campaign,
    /// advertiser and visitor-wide caps, in that order, and records the impression only when
    /// all pass.
    ///
    /// # Errors
    /// [`StoreError::CampaignTableFull`] when the campaign or advertiser is new and the table
    /// is full; [`StoreError::Other`] never.
    pub fn admit(
        &self,
        v: VisitorKey,
        req: &AdmitRequest<'_>,
        now: UnixSecs,
    ) -> Result<Admission, StoreError> {
        let now = to_u32(now);
        let key = Key::new(v);
        let advertiser = match req.advertiser {
            Some(a) if !req.advertiser_caps.is_empty() => Some(a),
            _ => None,
        };
        let records = !req.campaign_caps.is_empty()
            || req.max_age_secs.is_some()
            || advertiser.is_some()
            || !req.visitor_caps.is_empty();
        let campaign = if records {
            Some(self.names.intern(req.campaign)?)
        } else {
            None
        };
        let advertiser = advertiser.map(|a| self.names.intern(a)).transpose()?;
        let fast = advertiser.is_none()
            && req.visitor_caps.is_empty()
            && keep_count(req.campaign_caps) <= INLINE_TIMESTAMPS;
        let ids = Ids {
            campaign,
            advertiser,
        };
        let slot = match self.find(key) {
            Some(slot) => slot,
            // Nothing to record and nothing stored (so nothing burned): admit untouched.
            None if !records => return Ok(Admission::Admitted),
            None => self.insert_empty(key, now),
        };
        let mut g = slot.lock();
        if !records && !g.is_spilled() {
            // Inline slots hold no burns, and nothing here needs recording.
            return Ok(Admission::Admitted);
        }
        if fast
            && !g.is_spilled()
            && let Some(camp) = campaign
            && let Some(a) = self.admit_inline(&mut g, camp, req, now)
        {
            return Ok(a);
        }
        Ok(self.admit_full(key, &mut g, ids, req, now))
    }

    /// Starts loading the cache lines that looking up `key` will touch: the control bytes of its
    /// probe group and the bucket its hash points at. For a table much larger than the CPU's
    /// caches both are misses; issued together they cost one memory round trip, not two.
    pub fn prefetch(&self, v: VisitorKey) {
        let hash = key_hash(Key::new(v));
        let shard = &self.visitors.shards()[self.visitors.determine_shard(hash as usize)];
        // A hint only: never wait for a shard being written.
        if let Some(table) = shard.try_read() {
            prefetch_entry(table.buckets(), table.data_end().as_ptr(), hash);
        }
    }

    /// Looks a visitor up under its shard's read guard, with one lock round trip, prefetching
    /// the control bytes and the likely bucket together before probing.
    fn find(&self, key: Key) -> Option<SlotRef<'_>> {
        let hash = key_hash(key);
        let table = self.visitors.shards()[self.visitors.determine_shard(hash as usize)].read();
        prefetch_entry(table.buckets(), table.data_end().as_ptr(), hash);
        dashmap::RwLockReadGuard::try_map(table, |t| {
            t.get(hash, |(k, _)| *k == key).map(|(_, v)| v.get())
        })
        .ok()
    }

    /// The inline fast path; `None` when the slot holds another campaign and must spill.
    fn admit_inline(
        &self,
        g: &mut Locked<'_>,
        camp: u32,
        req: &AdmitRequest<'_>,
        now: u32,
    ) -> Option<Admission> {
        let mut d = g.read();
        if d.campaign != 0 && d.forget_at <= now {
            d = Inline::default();
        }
        if d.campaign != 0 && d.campaign != camp + 1 {
            return None;
        }
        let first = if d.campaign == 0 { now } else { d.first_seen };
        if let Some(denial) = max_age_denial(first, req.max_age_secs, now) {
            return Some(Admission::Denied(denial));
        }
        if let Some((cap, at)) = check(req.campaign_caps, d.timestamps(), u64::from(now)) {
            return Some(Admission::Denied(Denial {
                reason: DenyReason::Cap,
                rule: Some(cap),
                retry_at: Some(at),
            }));
        }
        d.campaign = camp + 1;
        d.first_seen = first;
        d.push(now, keep_count(req.campaign_caps));
        d.forget_at = forget_at(
            now,
            first,
            longest_window(req.campaign_caps),
            req.max_age_secs,
            self.opts.max_retention_secs,
        );
        g.write(&d);
        Some(Admission::Admitted)
    }

    /// The general path, for spilled visitors or anything the inline form cannot hold.
    fn admit_full(
        &self,
        key: Key,
        g: &mut Locked<'_>,
        ids: Ids,
        req: &AdmitRequest<'_>,
        now: u32,
    ) -> Admission {
        self.with_full(key, g, now, |full| {
            decide(full, ids, req, now, self.opts.max_retention_secs)
        })
    }

    /// Runs `f` on the visitor's full record (spilling an inline slot first), then stores the
    /// result back in the cheapest form that holds it.
    fn with_full<R>(
        &self,
        key: Key,
        g: &mut Locked<'_>,
        now: u32,
        f: impl FnOnce(&mut Full) -> R,
    ) -> R {
        if !g.is_spilled() {
            let d = g.read();
            let full = if d.campaign != 0 && d.forget_at > now {
                Full::from_inline(&d)
            } else {
                Full::default()
            };
            self.spill.insert(key, Mutex::new(full));
            g.set_spilled(0, now);
        }
        // A read guard normally; the write path only repairs a missing entry.
        let entry = match self.spill.get(&key) {
            Some(e) => e,
            None => self.spill.entry(key).or_default().downgrade(),
        };
        let mut full = entry.lock().unwrap_or_else(PoisonError::into_inner);
        full.prune(now);
        let out = f(&mut full);
        if let Some(d) = full.as_inline() {
            drop(full);
            drop(entry);
            self.spill.remove(&key);
            g.write(&d);
        } else {
            g.set_spilled(full.forget_at(), now);
        }
        out
    }

    /// Inserts an empty slot for a new visitor, making room first if the store is full, and
    /// returns it under a read guard. Between the insert and the read an eviction may remove
    /// the slot again; then it is inserted anew.
    fn insert_empty(&self, key: Key, now: u32) -> SlotRef<'_> {
        loop {
            if self.count.load(Ordering::Relaxed) >= self.opts.max_visitors {
                self.make_room(now);
            }
            if let dashmap::Entry::Vacant(e) = self.visitors.entry(key) {
                self.count.fetch_add(1, Ordering::Relaxed);
                e.insert(Slot::empty());
            }
            if let Some(slot) = self.find(key) {
                return slot;
            }
        }
    }

    /// What is stored about a visitor, with the time each part will be forgotten.
    pub fn report(&self, v: VisitorKey, now: UnixSecs) -> VisitorReport {
        let now = to_u32(now);
        let key = Key::new(v);
        let Some(slot) = self.find(key) else {
            return VisitorReport::default();
        };
        let g = slot.lock();
        let mut full = if g.is_spilled() {
            match self.spill.get(&key) {
                Some(e) => e.lock().unwrap_or_else(PoisonError::into_inner).clone(),
                None => Full::default(),
            }
        } else {
            Full::from_inline(&g.read())
        };
        drop(g);
        full.prune(now);
        let rec = |r: &Rec| CampaignRecord {
            campaign: self.names.name(r.id).to_string(),
            impressions: r.ts.iter().map(|t| u64::from(*t)).collect(),
            first_seen: u64::from(r.first_seen),
            forget_at: u64::from(r.forget_at),
        };
        VisitorReport {
            campaigns: full.campaigns.iter().map(rec).collect(),
            advertisers: full.advertisers.iter().map(rec).collect(),
            visitor_impressions: full.visitor.iter().map(|t| u64::from(*t)).collect(),
            burns: full
                .burns
                .iter()
                .map(|b| BurnRecord {
                    pattern: b.pattern.to_string(),
                    until: u64::from(b.until),
                })
                .collect(),
        }
    }

    /// Forgets a visitor entirely. Returns whether anything was stored.
    pub fn erase(&self, v: VisitorKey) -> bool {
        let key = Key::new(v);
        // remove_if holds the shard's write lock while the closure runs, so the spill entry
        // goes with the slot and no admit can re-spill in between.
        let removed = self.visitors.remove_if(&key, |_, slot| {
            if slot.peek().0 {
                self.spill.remove(&key);
            }
            true
        });
        if removed.is_some() {
            self.count.fetch_sub(1, Ordering::Relaxed);
        }
        removed.is_some()
    }

    /// Burns every campaign matching `pattern` for this visitor until `until`: no impression of
    /// such a campaign is admitted before then. Burning the same pattern again keeps the later
    /// time.
    ///
    /// # Errors
    /// [`StoreError::Other`] for an empty pattern, or when the visitor already holds
    /// [`MAX_BURNS_PER_VISITOR`] active patterns.
    pub fn burn(
        &self,
        v: VisitorKey,
        pattern: &str,
        until: UnixSecs,
        now: UnixSecs,
    ) -> Result<(), StoreError> {
        if pattern.is_empty() {
            return Err(StoreError::Other("empty burn pattern".into()));
        }
        let (until, now) = (to_u32(until), to_u32(now));
        if until <= now {
            return Ok(());
        }
        let key = Key::new(v);
        let slot = match self.find(key) {
            Some(slot) => slot,
            None => self.insert_empty(key, now),
        };
        let mut g = slot.lock();
        self.with_full(key, &mut g, now, |full| {
            if let Some(b) = full.burns.iter_mut().find(|b| *b.pattern == *pattern) {
                b.until = b.until.max(until);
                return Ok(());
            }
            if full.burns.len() >= MAX_BURNS_PER_VISITOR {
                return Err(StoreError::Other(format!(
                    "a visitor may burn at most {MAX_BURNS_PER_VISITOR} patterns"
                )));
            }
            full.burns.push(Burn {
                pattern: pattern.into(),
                until,
            });
            Ok(())
        })
    }

    /// Removes every visitor whose records have all expired by `now`, and drops expired parts
    /// of spilled visitors, one shard after another. Returns how many visitors were removed.
    pub fn sweep(&self, now: UnixSecs) -> usize {
        (0..self.shard_count())
            .map(|shard| {
                self.sweep_buckets(shard, 0, usize::MAX, to_u32(now), None)
                    .0
            })
            .sum()
    }

    /// How many shards the visitors are spread over.
    pub fn shard_count(&self) -> usize {
        self.visitors.shards().len()
    }

    /// How many index buckets the shards have in all: what one pass of
    /// [`sweep_step`](Self::sweep_step) walks.
    pub fn bucket_count(&self) -> usize {
        self.visitors
            .shards()
            .iter()
            .map(|s| s.read().buckets())
            .sum()
    }

    /// Sweeps the next `budget` index buckets from `cursor` on (at least one), and moves the
    /// cursor past them; after the last bucket of the last shard it starts over. A running kappe
    /// sweeps in such steps, a few thousand buckets at a time spread over its sweep period, so
    /// that no step holds a shard's write lock, or the thread that runs it, for long: a whole
    /// shard took 0.2 ms at a million visitors and several at ten million, and requests that
    /// waited on it made a latency tail. A shard that grows between two steps is rehashed, so
    /// some of its visitors are passed over until the next pass, and some seen twice.
    ///
    /// Once the store holds 31/32 of `max_visitors`, the steps also evict the least recently
    /// seen visitors on their way, until it is down to 15/16: room is made ahead, in steps, and
    /// an admit meets a full store (and evicts there and then, in one pass over every shard)
    /// only when new visitors arrive faster than the steps go. Returns how many visitors went.
    pub fn sweep_step(&self, cursor: &mut SweepCursor, budget: usize, now: UnixSecs) -> usize {
        let now = to_u32(now);
        let shards = self.shard_count();
        let (start, target) = self.eviction_bounds();
        if cursor.evict_to.is_none() {
            let count = self.count.load(Ordering::Relaxed);
            if count >= start {
                cursor.evict_to = Some(self.eviction_cutoff(count, target, now));
            }
        }
        let mut left = budget.max(1);
        let mut removed = 0;
        while left > 0 {
            let evict = cursor.evict_to.map(|to| {
                (
                    to,
                    self.count.load(Ordering::Relaxed).saturating_sub(target),
                )
            });
            let (n, walked, next) =
                self.sweep_buckets(cursor.shard, cursor.bucket, left, now, evict);
            removed += n;
            left -= walked.min(left);
            if cursor.evict_to.is_some() && self.count.load(Ordering::Relaxed) <= target {
                cursor.evict_to = None;
            }
            match next {
                Some(b) => cursor.bucket = b,
                None => {
                    cursor.bucket = 0;
                    cursor.shard += 1;
                    if cursor.shard >= shards {
                        cursor.shard = 0;
                        cursor.passes += 1;
                        // A pass that did not make room enough: a new cut-off from the store
                        // as it now is.
                        if cursor.evict_to.is_some() {
                            let count = self.count.load(Ordering::Relaxed);
                            cursor.evict_to = Some(self.eviction_cutoff(count, target, now));
                        }
                        break;
                    }
                }
            }
        }
        removed
    }

    /// Sweeps at most `max` buckets of `shard` from index `from` on, under its write lock,
    /// and with `evict` = (cut-off, how many) also evicts up to that many visitors last seen at
    /// or before the cut-off. Returns how many visitors went, how many buckets were walked, and
    /// the index to go on from (`None` at the shard's end).
    fn sweep_buckets(
        &self,
        shard: usize,
        from: usize,
        max: usize,
        now: u32,
        evict: Option<(u32, usize)>,
    ) -> (usize, usize, Option<usize>) {
        let Some(lock) = self.visitors.shards().get(shard) else {
            return (0, 0, None);
        };
        let (mut expired, mut evicted) = (0usize, 0usize);
        let (cutoff, mut evict_left) = evict.unwrap_or((0, 0));
        let mut table = lock.write();
        let end = table.buckets().min(from.saturating_add(max));
        let walked = end.saturating_sub(from);
        // An unallocated table has one bucket index that may not be read.
        if table.is_empty() {
            return (0, walked, (end < table.buckets()).then_some(end));
        }
        for i in from..end {
            // SAFETY: `i` is below the table's bucket count, and the table is allocated (not
            // empty). The guard is held throughout, so nobody else frees or moves a bucket, and
            // erasing the full bucket just read is what hashbrown's own `retain` does.
            #[allow(unsafe_code)]
            unsafe {
                if !table.is_bucket_full(i) {
                    continue;
                }
                let bucket = table.bucket(i);
                let (key, slot) = bucket.as_ref();
                if !self.keeps(key, slot.get(), now) {
                    table.erase(bucket);
                    expired += 1;
                    continue;
                }
                let (spilled, _, seen) = slot.get().peek();
                if evict_left > 0 && seen <= cutoff {
                    if spilled {
                        self.spill.remove(key);
                    }
                    table.erase(bucket);
                    evicted += 1;
                    evict_left -= 1;
                }
            }
        }
        let next = (end < table.buckets()).then_some(end);
        drop(table);
        self.count.fetch_sub(expired + evicted, Ordering::Relaxed);
        self.evicted_expired
            .fetch_add(expired as u64, Ordering::Relaxed);
        self.evicted_capacity
            .fetch_add(evicted as u64, Ordering::Relaxed);
        (expired + evicted, walked, next)
    }

    /// Whether the sweep keeps `key`'s slot at `now`; a spilled visitor's full record is pruned,
    /// and removed with it when nothing is left. Runs under the slot's shard write lock, so
    /// nobody holds the slot's own lock.
    fn keeps(&self, key: &Key, slot: &Slot, now: u32) -> bool {
        let (spilled, forget, _) = slot.peek();
        if !spilled {
            return forget > now;
        }
        let keep = {
            let mut g = slot.lock();
            match self.spill.get(key) {
                Some(e) => {
                    let mut full = e.lock().unwrap_or_else(PoisonError::into_inner);
                    full.prune(now);
                    let fa = full.forget_at();
                    g.set_spilled(fa, slot_last_seen(slot));
                    !full.is_empty()
                }
                None => false,
            }
        };
        if !keep {
            self.spill.remove(key);
        }
        keep
    }

    /// The store's count at which the sweeper starts evicting (31/32 of `max_visitors`), and
    /// the count evictions bring it down to (15/16).
    fn eviction_bounds(&self) -> (usize, usize) {
        let max = self.opts.max_visitors;
        let start = max - (max / 32).min(max);
        let target = max - (max / 16).max(1).min(max);
        (start, target)
    }

    /// The last-seen time at or before which roughly `count - target` of `count` visitors were
    /// last seen, estimated from a sample (the first shard's entries, which are in hash order
    /// and so a fair sample); `now` for an empty store.
    fn eviction_cutoff(&self, count: usize, target: usize, now: u32) -> u32 {
        let excess = count.saturating_sub(target);
        let mut sample: Vec<u32> = self
            .visitors
            .iter()
            .take(4096)
            .map(|r| r.value().peek().2)
            .collect();
        sample.sort_unstable();
        if sample.is_empty() {
            return now;
        }
        let i = (excess * sample.len() / count.max(1)).min(sample.len() - 1);
        sample[i]
    }

    /// Evicts roughly the least recently seen visitors until the store is at 15/16 of
    /// `max_visitors`, in one go: what an admit does when it finds the store full (the sweeper's
    /// steps normally make room before that). The age cut-off is estimated from a sample; then
    /// one pass removes entries below it.
    fn make_room(&self, now: u32) {
        let _one = self.evicting.lock().unwrap_or_else(PoisonError::into_inner);
        let count = self.count.load(Ordering::Relaxed);
        if count < self.opts.max_visitors {
            return;
        }
        let target = self.eviction_bounds().1;
        let excess = count - target;
        let cutoff = self.eviction_cutoff(count, target, now);
        // Passes: strictly older than the cut-off, then at it, then anything (a flood of
        // same-second visitors); each stops once enough are gone.
        let mut removed = 0usize;
        for bound in [cutoff.saturating_sub(1), cutoff, u32::MAX] {
            if removed >= excess {
                break;
            }
            self.visitors.retain(|key, slot| {
                if removed >= excess {
                    return true;
                }
                let (spilled, _, seen) = slot.peek();
                if seen > bound {
                    return true;
                }
                if spilled {
                    self.spill.remove(key);
                }
                removed += 1;
                false
            });
        }
        self.count.fetch_sub(removed, Ordering::Relaxed);
        self.evicted_capacity
            .fetch_add(removed as u64, Ordering::Relaxed);
    }

    /// Counters and gauges for the metrics module.
    pub fn stats(&self) -> StoreStats {
        let spilled = self.spill.len();
        let spilled_bytes: usize = if spilled < 10_000 {
            self.spill
                .iter()
                .map(|e| {
                    e.lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .heap_bytes()
                })
                .sum()
        } else {
            spilled * 160
        };
        let bucket = std::mem::size_of::<(Key, Slot)>() + 1;
        StoreStats {
            visitors: self.count.load(Ordering::Relaxed) as u64,
            spilled_visitors: spilled as u64,
            // What the held visitors occupy (at the table's 7/8 load factor), not the capacity
            // reserved up front for --max-visitors, most of which is never touched.
            estimated_bytes: ((self.len() * bucket * 8 / 7)
                + spilled * (std::mem::size_of::<(Key, Mutex<Full>)>() + 1) * 8 / 7
                + spilled_bytes) as u64,
            evictions_expired: self.evicted_expired.load(Ordering::Relaxed),
            evictions_capacity: self.evicted_capacity.load(Ordering::Relaxed),
            campaigns_interned: self.names.len() as u64,
        }
    }

    /// Visitors currently held.
    pub fn len(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    /// True when no visitor is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Calls `f` on every stored visitor, each read under its slot lock (for snapshots).
    pub(crate) fn for_each(&self, mut f: impl FnMut(Key, Image)) {
        for r in self.visitors.iter() {
            let key = *r.key();
            let g = r.value().lock();
            let image = if g.is_spilled() {
                let full = self
                    .spill
                    .get(&key)
                    .map(|e| e.lock().unwrap_or_else(PoisonError::into_inner).clone())
                    .unwrap_or_default();
                Image::Full {
                    last_seen: slot_last_seen(r.value()),
                    full,
                }
            } else {
                Image::Inline(g.read())
            };
            drop(g);
            f(key, image);
        }
    }

    /// The interned names, by id (for snapshots).
    pub(crate) fn names(&self) -> Vec<Arc<str>> {
        self.names.all()
    }

    /// Rebuilds the campaign table from a snapshot; must run before any [`Self::restore`].
    ///
    /// # Errors
    /// [`StoreError::CampaignTableFull`] when the snapshot holds more names than the table.
    pub(crate) fn restore_names(&self, names: &[String]) -> Result<(), StoreError> {
        for (i, n) in names.iter().enumerate() {
            let id = self.names.intern_shared(n)?;
            if id as usize != i {
                return Err(StoreError::Other(format!("duplicate campaign name {n:?}")));
            }
        }
        Ok(())
    }

    /// Puts one visitor back from a snapshot.
    pub(crate) fn restore(&self, key: Key, image: Image) {
        let slot = match image {
            Image::Inline(d) => Slot::from_inline(&d),
            Image::Full { last_seen, full } => {
                let s = Slot::spilled(full.forget_at(), last_seen);
                self.spill.insert(key, Mutex::new(full));
                s
            }
        };
        if self.visitors.insert(key, slot).is_none() {
            self.count.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Enforces `max_visitors` after a restore (a snapshot from a larger configuration).
    pub fn enforce_bounds(&self, now: UnixSecs) {
        if self.len() > self.opts.max_visitors {
            self.make_room(to_u32(now));
        }
    }
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("opts", &self.opts)
            .field("visitors", &self.len())
            .finish_non_exhaustive()
    }
}

/// Prefetches the two cache lines a probe for `hash` touches first in a hashbrown table of
/// `buckets` buckets ending at `end`: buckets are stored downwards from `end` and control bytes
/// upwards from it, and the probe starts at `hash & (buckets - 1)`. Only addresses are
/// computed; nothing is dereferenced.
#[inline]
fn prefetch_entry<T>(buckets: usize, end: *const T, hash: u64) {
    let pos = (hash as usize) & (buckets - 1);
    prefetch_line(end.cast::<u8>().wrapping_add(pos));
    prefetch_line(end.wrapping_sub(pos + 1).cast::<u8>());
}

/// Asks the CPU to start loading the cache line holding `p`; a no-op where unsupported. A
/// prefetch never faults, whatever the address.
#[inline(always)]
#[allow(unsafe_code)]
fn prefetch_line(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `prefetcht0` is part of SSE, which every x86_64 CPU has. It is a hint: it reads
    // nothing into the program and cannot fault, whatever the address.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

fn slot_last_seen(slot: &Slot) -> u32 {
    slot.w[W_LAST_SEEN].load(Ordering::Relaxed)
}

/// The interned ids of one request.
#[derive(Clone, Copy)]
struct Ids {
    campaign: Option<u32>,
    advertiser: Option<u32>,
}

fn max_age_denial(first_seen: u32, max_age: Option<u32>, now: u32) -> Option<Denial> {
    let age = max_age?;
    (u64::from(now) >= u64::from(first_seen) + u64::from(age)).then_some(Denial {
        reason: DenyReason::MaxAge,
        rule: None,
        retry_at: None,
    })
}

/// The full rule on a full record (already pruned at `now`).
fn decide(full: &mut Full, ids: Ids, req: &AdmitRequest<'_>, now: u32, max_ret: u32) -> Admission {
    let now64 = u64::from(now);
    let burned = full
        .burns
        .iter()
        .filter(|b| glob_match(b.pattern.as_bytes(), req.campaign.as_bytes()))
        .map(|b| b.until)
        .max();
    if let Some(until) = burned {
        return Admission::Denied(Denial {
            reason: DenyReason::Burned,
            rule: None,
            retry_at: Some(u64::from(until)),
        });
    }
    let Some(camp) = ids.campaign else {
        return Admission::Admitted;
    };
    let ci = full.campaigns.iter().position(|r| r.id == camp);
    let first = ci.map_or(now, |i| full.campaigns[i].first_seen);
    if let Some(d) = max_age_denial(first, req.max_age_secs, now) {
        return Admission::Denied(d);
    }
    let deny = |reason, (cap, at): (Cap, UnixSecs)| {
        Admission::Denied(Denial {
            reason,
            rule: Some(cap),
            retry_at: Some(at),
        })
    };
    let empty: &[u32] = &[];
    let cts = ci.map_or(empty, |i| &full.campaigns[i].ts);
    if let Some(hit) = check(req.campaign_caps, cts, now64) {
        return deny(DenyReason::Cap, hit);
    }
    let ai = ids
        .advertiser
        .and_then(|a| full.advertisers.iter().position(|r| r.id == a));
    if ids.advertiser.is_some() {
        let ats = ai.map_or(empty, |i| &full.advertisers[i].ts);
        if let Some(hit) = check(req.advertiser_caps, ats, now64) {
            return deny(DenyReason::AdvertiserCap, hit);
        }
    }
    if let Some(hit) = check(req.visitor_caps, &full.visitor, now64) {
        return deny(DenyReason::VisitorCap, hit);
    }
    // Admitted: record everywhere a rule applies.
    let update = |recs: &mut Vec<Rec>, i: Option<usize>, id: u32, caps: &[Cap], age| {
        let i = i.unwrap_or_else(|| {
            recs.push(Rec {
                id,
                first_seen: now,
                ..Rec::default()
            });
            recs.len() - 1
        });
        let r = &mut recs[i];
        push_keep(&mut r.ts, now, keep_count(caps));
        r.forget_at = forget_at(now, r.first_seen, longest_window(caps), age, max_ret);
    };
    if !req.campaign_caps.is_empty() || req.max_age_secs.is_some() {
        update(
            &mut full.campaigns,
            ci,
            camp,
            req.campaign_caps,
            req.max_age_secs,
        );
    }
    if let Some(a) = ids.advertiser {
        update(&mut full.advertisers, ai, a, req.advertiser_caps, None);
    }
    if req.visitor_caps.is_empty() {
        full.visitor.clear();
    } else {
        push_keep(&mut full.visitor, now, keep_count(req.visitor_caps));
        full.visitor_forget = forget_at(now, now, longest_window(req.visitor_caps), None, max_ret);
    }
    truncate_oldest(&mut full.visitor, keep_count(req.visitor_caps));
    Admission::Admitted
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::*;

    fn cap(limit: u32, window_secs: u32) -> Cap {
        Cap { limit, window_secs }
    }

    fn store() -> MemoryStore {
        MemoryStore::new(MemoryOptions {
            max_visitors: 10_000,
            max_campaigns: 100,
            max_retention_secs: 30 * 86_400,
        })
    }

    const V: VisitorKey = VisitorKey(0xdead_beef_0123_4567);
    const T0: u64 = 1_700_000_000;

    /// With 3 per day, three impressions pass, the fourth is denied until the first leaves.
    #[test]
    fn cap_admits_exactly_limit_then_waits_for_oldest() {
        let s = store();
        let caps = [cap(3, 86_400)];
        for i in 0..3 {
            assert_eq!(
                s.admit(V, &AdmitRequest::campaign("c", &caps), T0 + i * 10)
                    .unwrap(),
                Admission::Admitted
            );
        }
        let denied = s
            .admit(V, &AdmitRequest::campaign("c", &caps), T0 + 100)
            .unwrap();
        assert_eq!(
            denied,
            Admission::Denied(Denial {
                reason: DenyReason::Cap,
                rule: Some(caps[0]),
                retry_at: Some(T0 + 86_400)
            })
        );
        assert!(
            s.admit(V, &AdmitRequest::campaign("c", &caps), T0 + 86_399)
                .unwrap()
                != Admission::Admitted
        );
        assert_eq!(
            s.admit(V, &AdmitRequest::campaign("c", &caps), T0 + 86_400)
                .unwrap(),
            Admission::Admitted
        );
        assert_eq!(s.stats().spilled_visitors, 0, "one campaign stays inline");
    }

    /// A second campaign spills the visitor; both campaigns keep their own counts.
    #[test]
    fn campaigns_count_separately_after_spill() {
        let s = store();
        let caps = [cap(1, 100)];
        assert_eq!(
            s.admit(V, &AdmitRequest::campaign("a", &caps), T0).unwrap(),
            Admission::Admitted
        );
        assert_eq!(
            s.admit(V, &AdmitRequest::campaign("b", &caps), T0).unwrap(),
            Admission::Admitted
        );
        assert!(matches!(
            s.admit(V, &AdmitRequest::campaign("a", &caps), T0 + 1)
                .unwrap(),
            Admission::Denied(_)
        ));
        assert!(matches!(
            s.admit(V, &AdmitRequest::campaign("b", &caps), T0 + 1)
                .unwrap(),
            Admission::Denied(_)
        ));
        assert_eq!(s.stats().spilled_visitors, 1);
        let report = s.report(V, T0 + 1);
        assert_eq!(report.campaigns.len(), 2);
        assert_eq!(report.campaigns[0].forget_at, T0 + 100);
    }

    /// Maximum age denies once the age has passed since the first impression, with no retry.
    #[test]
    fn max_age_stops_retargeting() {
        let s = store();
        let caps = [cap(10, 1_000)];
        let r = AdmitRequest {
            max_age_secs: Some(50),
            ..AdmitRequest::campaign("c", &caps)
        };
        assert_eq!(s.admit(V, &r, T0).unwrap(), Admission::Admitted);
        assert_eq!(s.admit(V, &r, T0 + 49).unwrap(), Admission::Admitted);
        let d = s.admit(V, &r, T0 + 50).unwrap();
        assert_eq!(
            d,
            Admission::Denied(Denial {
                reason: DenyReason::MaxAge,
                rule: None,
                retry_at: None
            })
        );
    }

    /// A burned pattern denies matching campaigns until its time, and only those.
    #[test]
    fn burn_denies_matching_campaigns_until_expiry() {
        let s = store();
        let caps = [cap(5, 100)];
        s.burn(V, "rt-*", T0 + 60, T0).unwrap();
        let d = s
            .admit(V, &AdmitRequest::campaign("rt-shoes", &caps), T0 + 1)
            .unwrap();
        assert_eq!(
            d,
            Admission::Denied(Denial {
                reason: DenyReason::Burned,
                rule: None,
                retry_at: Some(T0 + 60)
            })
        );
        assert_eq!(
            s.admit(V, &AdmitRequest::campaign("brand", &caps), T0 + 1)
                .unwrap(),
            Admission::Admitted
        );
        assert_eq!(
            s.admit(V, &AdmitRequest::campaign("rt-shoes", &caps), T0 + 60)
                .unwrap(),
            Admission::Admitted
        );
        assert!(s.burn(V, "", T0 + 60, T0).is_err());
    }

    /// Advertiser caps count across campaigns; visitor caps across everything; in that order.
    #[test]
    fn advertiser_then_visitor_caps_apply_across_campaigns() {
        let s = store();
        let camp = [cap(5, 100)];
        let adv = [cap(2, 100)];
        let vis = [cap(3, 100)];
        let r = |c| AdmitRequest {
            advertiser: Some("acme"),
            advertiser_caps: &adv,
            visitor_caps: &vis,
            ..AdmitRequest::campaign(c, &camp)
        };
        assert_eq!(s.admit(V, &r("a"), T0).unwrap(), Admission::Admitted);
        assert_eq!(s.admit(V, &r("b"), T0).unwrap(), Admission::Admitted);
        let d = s.admit(V, &r("c"), T0).unwrap();
        assert!(matches!(
            d,
            Admission::Denied(Denial {
                reason: DenyReason::AdvertiserCap,
                ..
            })
        ));
        let other = AdmitRequest {
            visitor_caps: &vis,
            ..AdmitRequest::campaign("x", &camp)
        };
        assert_eq!(s.admit(V, &other, T0).unwrap(), Admission::Admitted);
        let d = s.admit(V, &other, T0).unwrap();
        assert_eq!(
            d,
            Admission::Denied(Denial {
                reason: DenyReason::VisitorCap,
                rule: Some(vis[0]),
                retry_at: Some(T0 + 100)
            })
        );
        assert_eq!(s.report(V, T0).visitor_impressions.len(), 3);
    }

    /// After a policy reload lowers a cap, only the new C newest impressions are kept.
    #[test]
    fn reload_keeps_only_new_cap_newest() {
        let s = store();
        let wide = [cap(4, 1_000)];
        let narrow = [cap(1, 10)];
        for i in 0..3 {
            assert_eq!(
                s.admit(V, &AdmitRequest::campaign("c", &wide), T0 + i)
                    .unwrap(),
                Admission::Admitted
            );
        }
        assert_eq!(
            s.admit(V, &AdmitRequest::campaign("c", &narrow), T0 + 20)
                .unwrap(),
            Admission::Admitted
        );
        assert_eq!(s.report(V, T0 + 20).campaigns[0].impressions, vec![T0 + 20]);
        // Back to the wide cap: three more fit, since only one impression is remembered.
        for i in 0..3 {
            assert_eq!(
                s.admit(V, &AdmitRequest::campaign("c", &wide), T0 + 21 + i)
                    .unwrap(),
                Admission::Admitted
            );
        }
        assert!(matches!(
            s.admit(V, &AdmitRequest::campaign("c", &wide), T0 + 30)
                .unwrap(),
            Admission::Denied(_)
        ));
    }

    /// Erasure forgets everything; the report then is empty and caps start over.
    #[test]
    fn erase_forgets_visitor() {
        let s = store();
        let caps = [cap(1, 100)];
        s.admit(V, &AdmitRequest::campaign("c", &caps), T0).unwrap();
        s.burn(V, "x*", T0 + 50, T0).unwrap();
        assert!(!s.report(V, T0).is_empty());
        assert!(s.erase(V));
        assert!(!s.erase(V));
        assert!(s.report(V, T0).is_empty());
        assert_eq!(s.len(), 0);
        assert_eq!(s.stats().spilled_visitors, 0);
        assert_eq!(
            s.admit(V, &AdmitRequest::campaign("c", &caps), T0).unwrap(),
            Admission::Admitted
        );
    }

    /// The sweeper removes visitors once their windows, ages and burns have passed, and counts
    /// them as expired; nothing outlives max retention.
    #[test]
    fn sweeper_removes_expired_and_bounds_retention() {
        let s = MemoryStore::new(MemoryOptions {
            max_retention_secs: 500,
            ..MemoryOptions::default()
        });
        let day = [cap(2, 86_400)];
        let short = [cap(2, 100)];
        for i in 0..100u64 {
            let caps: &[Cap] = if i % 2 == 0 { &day } else { &short };
            s.admit(VisitorKey(i), &AdmitRequest::campaign("c", caps), T0)
                .unwrap();
        }
        s.burn(VisitorKey(1000), "*", T0 + 300, T0).unwrap();
        s.admit(VisitorKey(1001), &AdmitRequest::campaign("a", &short), T0)
            .unwrap();
        s.admit(VisitorKey(1001), &AdmitRequest::campaign("b", &day), T0)
            .unwrap();
        assert_eq!(s.sweep(T0 + 99), 0);
        assert_eq!(s.sweep(T0 + 100), 50, "short-window visitors go");
        assert_eq!(s.report(VisitorKey(1001), T0 + 100).campaigns.len(), 1);
        assert_eq!(s.sweep(T0 + 300), 1, "the burn expires");
        assert_eq!(s.sweep(T0 + 500), 51, "retention caps the day-long window");
        assert!(s.is_empty());
        assert_eq!(s.stats().evictions_expired, 102);
        assert_eq!(s.stats().spilled_visitors, 0);
    }

    /// Sweeping in steps of a few buckets removes, over one pass, what one whole sweep would;
    /// the cursor then starts over, and a step as large as the store is one pass.
    #[test]
    fn sweeps_in_steps() {
        let s = MemoryStore::new(MemoryOptions::default());
        let short = [cap(2, 100)];
        let day = [cap(2, 86_400)];
        for i in 0..1000u64 {
            let caps: &[Cap] = if i % 4 == 0 { &day } else { &short };
            s.admit(VisitorKey(i), &AdmitRequest::campaign("c", caps), T0)
                .unwrap();
        }
        // A spilled visitor whose short campaign expires keeps its day-long one.
        s.admit(VisitorKey(5000), &AdmitRequest::campaign("a", &short), T0)
            .unwrap();
        s.admit(VisitorKey(5000), &AdmitRequest::campaign("b", &day), T0)
            .unwrap();
        let buckets = s.bucket_count();
        assert!(buckets >= 1001 && s.shard_count() > 1);
        let mut cursor = SweepCursor::default();
        let (mut removed, mut steps) = (0, 0);
        while cursor.passes == 0 {
            let before = s.len();
            let n = s.sweep_step(&mut cursor, 7, T0 + 100);
            assert_eq!(s.len(), before - n);
            removed += n;
            steps += 1;
        }
        assert_eq!(removed, 750);
        assert!(
            steps >= buckets / 7,
            "{steps} steps of 7 over {buckets} buckets"
        );
        assert_eq!(s.len(), 251);
        assert_eq!(s.report(VisitorKey(5000), T0 + 100).campaigns.len(), 1);
        assert_eq!(s.stats().evictions_expired, 750);
        assert_eq!(
            cursor,
            SweepCursor {
                passes: 1,
                ..SweepCursor::default()
            }
        );
        // One step over everything is one pass; the day-long visitors go a day later.
        assert_eq!(s.sweep_step(&mut cursor, usize::MAX, T0 + 86_400), 251);
        assert_eq!(cursor.passes, 2);
        assert!(s.is_empty());
    }

    /// Near its bound the store is made room in the sweeper's steps, least recently seen
    /// first, before any admit meets a full store; below 31/32 of the bound nobody is evicted.
    #[test]
    fn sweeper_makes_room_ahead_of_the_bound() {
        let s = MemoryStore::new(MemoryOptions {
            max_visitors: 1_000,
            ..MemoryOptions::default()
        });
        let caps = [cap(1, 86_400)];
        let key = |i: u64| VisitorKey(i.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let admit = |i: u64| {
            s.admit(key(i), &AdmitRequest::campaign("c", &caps), T0 + i)
                .unwrap();
        };
        (0..968).for_each(admit);
        let mut cursor = SweepCursor::default();
        while cursor.passes == 0 {
            assert_eq!(s.sweep_step(&mut cursor, 64, T0 + 1_000), 0);
        }
        assert!(!cursor.evicting());
        (968..980).for_each(admit);
        assert_eq!(s.len(), 980, "no admit below the bound evicts");
        let mut steps = 0;
        s.sweep_step(&mut cursor, 64, T0 + 1_000);
        while cursor.evicting() {
            s.sweep_step(&mut cursor, 64, T0 + 1_000);
            steps += 1;
            assert!(steps < 1_000);
        }
        assert_eq!(s.len(), 938, "down to 15/16 of the bound");
        assert_eq!(s.stats().evictions_capacity, 42);
        assert_eq!(s.stats().evictions_expired, 0);
        for i in 43..980 {
            assert!(
                !s.report(key(i), T0 + 1_000).is_empty(),
                "visitor {i} was evicted"
            );
        }
    }

    /// A flood of new ids never lets the store exceed max_visitors; evictions are counted and
    /// the most recently seen visitors survive.
    #[test]
    fn flood_of_new_ids_stays_bounded() {
        let s = MemoryStore::new(MemoryOptions {
            max_visitors: 1_000,
            ..MemoryOptions::default()
        });
        let caps = [cap(1, 86_400)];
        for i in 0..20_000u64 {
            s.admit(
                VisitorKey(i.wrapping_mul(0x9e37_79b9_7f4a_7c15)),
                &AdmitRequest::campaign("c", &caps),
                T0 + i,
            )
            .unwrap();
            assert!(s.len() <= 1_000);
        }
        let st = s.stats();
        assert_eq!(st.visitors, s.len() as u64);
        assert_eq!(st.evictions_capacity, 20_000 - st.visitors);
        let newest = VisitorKey(19_999u64.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        assert!(!s.report(newest, T0 + 20_000).is_empty());
        let oldest = VisitorKey(0);
        assert!(s.report(oldest, T0 + 20_000).is_empty());
    }

    /// A full campaign table is an error, not a silent pass.
    #[test]
    fn campaign_table_is_bounded() {
        let s = MemoryStore::new(MemoryOptions {
            max_campaigns: 2,
            ..MemoryOptions::default()
        });
        let caps = [cap(1, 10)];
        s.admit(V, &AdmitRequest::campaign("a", &caps), T0).unwrap();
        s.admit(V, &AdmitRequest::campaign("b", &caps), T0).unwrap();
        assert!(matches!(
            s.admit(V, &AdmitRequest::campaign("c", &caps), T0),
            Err(StoreError::CampaignTableFull(2))
        ));
        assert_eq!(s.stats().campaigns_interned, 2);
    }

    /// Many threads racing on one visitor and campaign admit exactly the cap, inline and spilled.
    #[test]
    fn concurrent_admits_never_exceed_cap() {
        for spilled in [false, true] {
            let s = store();
            let caps = [cap(7, 86_400)];
            let vis = [cap(1_000, 86_400)];
            let admitted = AtomicUsize::new(0);
            std::thread::scope(|sc| {
                for _ in 0..8 {
                    sc.spawn(|| {
                        let r = AdmitRequest {
                            visitor_caps: if spilled { &vis } else { &[] },
                            ..AdmitRequest::campaign("c", &caps)
                        };
                        for _ in 0..2_000 {
                            if s.admit(V, &r, T0).unwrap() == Admission::Admitted {
                                admitted.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    });
                }
            });
            assert_eq!(admitted.load(Ordering::Relaxed), 7, "spilled={spilled}");
        }
    }

    // ---- reference model: keeps every timestamp, decides by counting ----

    #[derive(Clone, Debug, Default)]
    struct MRec {
        first: u64,
        last: u64,
        forget: u64,
        ts: Vec<u64>,
    }

    #[derive(Debug, Default)]
    struct MVisitor {
        camps: HashMap<String, MRec>,
        advs: HashMap<String, MRec>,
        vis: MRec,
        burns: HashMap<String, u64>,
    }

    #[derive(Debug, Default)]
    struct Model {
        visitors: HashMap<u64, MVisitor>,
        retention: u64,
    }

    /// The naive rule: count every impression still in each window.
    fn model_check(caps: &[Cap], ts: &[u64], now: u64) -> Option<(Cap, u64)> {
        let mut worst: Option<(Cap, u64)> = None;
        for c in caps {
            let mut live: Vec<u64> = ts
                .iter()
                .copied()
                .filter(|t| t + u64::from(c.window_secs) > now)
                .collect();
            if live.len() >= c.limit as usize {
                live.sort_unstable_by(|a, b| b.cmp(a));
                let at = live[c.limit as usize - 1] + u64::from(c.window_secs);
                if worst.is_none_or(|(_, w)| at > w) {
                    worst = Some((*c, at));
                }
            }
        }
        worst
    }

    fn model_record(rec: &mut MRec, now: u64, caps: &[Cap], age: Option<u32>, retention: u64) {
        if rec.ts.is_empty() && rec.last == 0 {
            rec.first = now;
        }
        rec.ts.push(now);
        rec.last = now;
        let window = caps
            .iter()
            .map(|c| u64::from(c.window_secs))
            .max()
            .unwrap_or(0);
        let need = (now + window).max(age.map_or(0, |a| rec.first + 2 * u64::from(a)));
        rec.forget = need.min(now + retention);
    }

    impl Model {
        fn admit(&mut self, v: u64, r: &AdmitRequest<'_>, now: u64) -> Admission {
            let ret = self.retention;
            let m = self.visitors.entry(v).or_default();
            m.camps.retain(|_, x| x.forget > now);
            m.advs.retain(|_, x| x.forget > now);
            if m.vis.forget <= now {
                m.vis = MRec::default();
            }
            m.burns.retain(|_, u| *u > now);
            let burned = m
                .burns
                .iter()
                .filter(|(p, _)| glob_match(p.as_bytes(), r.campaign.as_bytes()))
                .map(|(_, u)| *u)
                .max();
            if let Some(u) = burned {
                return Admission::Denied(Denial {
                    reason: DenyReason::Burned,
                    rule: None,
                    retry_at: Some(u),
                });
            }
            let rec = m.camps.get(r.campaign).cloned().unwrap_or_default();
            let first = if rec.last == 0 { now } else { rec.first };
            if let Some(a) = r.max_age_secs
                && now >= first + u64::from(a)
            {
                return Admission::Denied(Denial {
                    reason: DenyReason::MaxAge,
                    rule: None,
                    retry_at: None,
                });
            }
            let deny = |reason, (c, at): (Cap, u64)| {
                Admission::Denied(Denial {
                    reason,
                    rule: Some(c),
                    retry_at: Some(at),
                })
            };
            if let Some(hit) = model_check(r.campaign_caps, &rec.ts, now) {
                return deny(DenyReason::Cap, hit);
            }
            let adv = r.advertiser.filter(|_| !r.advertiser_caps.is_empty());
            if let Some(a) = adv {
                let ts = m.advs.get(a).map(|x| x.ts.clone()).unwrap_or_default();
                if let Some(hit) = model_check(r.advertiser_caps, &ts, now) {
                    return deny(DenyReason::AdvertiserCap, hit);
                }
            }
            if let Some(hit) = model_check(r.visitor_caps, &m.vis.ts, now) {
                return deny(DenyReason::VisitorCap, hit);
            }
            if !r.campaign_caps.is_empty() || r.max_age_secs.is_some() {
                let rec = m.camps.entry(r.campaign.to_owned()).or_default();
                model_record(rec, now, r.campaign_caps, r.max_age_secs, ret);
            }
            if let Some(a) = adv {
                let rec = m.advs.entry(a.to_owned()).or_default();
                model_record(rec, now, r.advertiser_caps, None, ret);
            }
            if !r.visitor_caps.is_empty() {
                model_record(&mut m.vis, now, r.visitor_caps, None, ret);
            }
            Admission::Admitted
        }
    }

    #[derive(Clone, Debug)]
    struct Rules {
        campaign_caps: Vec<Vec<Cap>>,
        advertiser_of: Vec<Option<usize>>,
        advertiser_caps: Vec<Vec<Cap>>,
        visitor_caps: Vec<Cap>,
        max_age: Option<u32>,
        retention: u32,
    }

    #[derive(Clone, Debug)]
    enum Op {
        Admit { v: u64, c: usize, dt: u64 },
        Erase { v: u64 },
        Burn { v: u64, pattern: usize, secs: u64 },
        Sweep,
    }

    const CAMPAIGNS: [&str; 4] = ["rt-a", "rt-b", "brand-c", "brand-d"];
    const ADVERTISERS: [&str; 2] = ["acme", "globex"];
    const PATTERNS: [&str; 4] = ["rt-*", "rt-a", "*-c", "*"];

    fn caps_strategy(max: usize) -> impl Strategy<Value = Vec<Cap>> {
        prop::collection::vec((1u32..7, 1u32..60).prop_map(|(l, w)| cap(l, w)), 0..=max)
    }

    fn rules_strategy() -> impl Strategy<Value = Rules> {
        (
            prop::collection::vec(caps_strategy(2), 4),
            prop::collection::vec(prop::option::of(0usize..2), 4),
            prop::collection::vec(caps_strategy(2), 2),
            caps_strategy(1),
            prop::option::of(1u32..80),
            prop_oneof![5u32..40, Just(10_000u32)],
        )
            .prop_map(|(cc, ao, ac, vc, ma, ret)| Rules {
                campaign_caps: cc,
                advertiser_of: ao,
                advertiser_caps: ac,
                visitor_caps: vc,
                max_age: ma,
                retention: ret,
            })
    }

    fn op_strategy() -> impl Strategy<Value = Op> {
        prop_oneof![
            12 => (0u64..3, 0usize..4, prop_oneof![Just(0u64), 0u64..15]).prop_map(|(v, c, dt)| Op::Admit { v, c, dt }),
            1 => (0u64..3).prop_map(|v| Op::Erase { v }),
            1 => (0u64..3, 0usize..4, 1u64..40).prop_map(|(v, pattern, secs)| Op::Burn { v, pattern, secs }),
            1 => Just(Op::Sweep),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(400))]

        /// Random admits, erasures, burns and sweeps under random rules decide exactly as a
        /// model that keeps every timestamp.
        #[test]
        fn store_matches_reference_model(rules in rules_strategy(), ops in prop::collection::vec(op_strategy(), 1..120)) {
            let s = MemoryStore::new(MemoryOptions {
                max_visitors: 100,
                max_campaigns: 100,
                max_retention_secs: rules.retention,
            });
            let mut model = Model { retention: u64::from(rules.retention), ..Model::default() };
            let mut now = T0;
            for op in ops {
                match op {
                    Op::Admit { v, c, dt } => {
                        now += dt;
                        let adv = rules.advertiser_of[c];
                        let r = AdmitRequest {
                            campaign: CAMPAIGNS[c],
                            campaign_caps: &rules.campaign_caps[c],
                            advertiser: adv.map(|a| ADVERTISERS[a]),
                            advertiser_caps: adv.map_or(&[][..], |a| &rules.advertiser_caps[a]),
                            visitor_caps: &rules.visitor_caps,
                            max_age_secs: rules.max_age,
                        };
                        let got = s.admit(VisitorKey(v), &r, now).unwrap();
                        let want = model.admit(v, &r, now);
                        prop_assert_eq!(got, want, "visitor {} campaign {} at +{}", v, c, now - T0);
                    }
                    Op::Erase { v } => {
                        s.erase(VisitorKey(v));
                        model.visitors.remove(&v);
                    }
                    Op::Burn { v, pattern, secs } => {
                        s.burn(VisitorKey(v), PATTERNS[pattern], now + secs, now).unwrap();
                        let m = model.visitors.entry(v).or_default();
                        let u = m.burns.entry(PATTERNS[pattern].to_owned()).or_insert(0);
                        *u = (*u).max(now + secs);
                    }
                    Op::Sweep => {
                        s.sweep(now);
                    }
                }
            }
        }
    }
}
