//! The process allocator: mimalloc, configured so that large blocks come straight from the
//! operating system and go straight back.
//!
//! The store's index is a set of hash tables that double as visitors arrive; each doubling frees
//! the shard's old table. Held in mimalloc's arenas, those freed tables (and the unused tails of
//! transparent huge pages around them) stayed resident: 75 bytes per stored key at 10 million
//! keys instead of the 62 the tables need. Blocks above [`ARENA_MAX_OBJECT_KIB`] are therefore
//! mapped and unmapped on their own, as the system allocator does; the small per-request
//! allocations of the proxy keep mimalloc's fast thread-local pages.

/// The global allocator the `kappe` binary installs.
pub type Allocator = mimalloc::MiMalloc;

/// The largest block, in KiB, that mimalloc serves from its arenas.
pub const ARENA_MAX_OBJECT_KIB: i64 = 1024;

/// `mi_option_arena_max_object_size` in mimalloc 3's option enumeration.
const MI_OPTION_ARENA_MAX_OBJECT_SIZE: libmimalloc_sys::mi_option_t = 45;

/// Applies kappe's allocator settings. Call first thing in `main`, before threads start.
#[allow(unsafe_code)]
pub fn configure() {
    // SAFETY: `mi_option_set` takes plain integers; it is not thread-safe, and `main` calls it
    // before any other thread exists.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_ARENA_MAX_OBJECT_SIZE, ARENA_MAX_OBJECT_KIB) }
}
