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

/// `mi_option_arena_max_object_size` in mimalloc 3's option enumeration. The index is only
/// valid for that major version, which [`configure`] checks before using it.
const MI_OPTION_ARENA_MAX_OBJECT_SIZE: libmimalloc_sys::mi_option_t = 45;

/// The mimalloc major version whose option enumeration [`MI_OPTION_ARENA_MAX_OBJECT_SIZE`]
/// belongs to; `mi_version()` encodes 3.3.2 as 30302.
const MIMALLOC_MAJOR: i32 = 3;

/// The mimalloc major version linked in.
#[allow(unsafe_code)]
fn mimalloc_major() -> i32 {
    // SAFETY: `mi_version` takes no arguments and only returns a constant.
    let version = unsafe { libmimalloc_sys::mi_version() };
    version / 10_000
}

/// Applies kappe's allocator settings. Call first thing in `main`, before threads start. With
/// another mimalloc major version the option index would name a different option, so nothing
/// is set (and the unit test below fails, pointing here).
#[allow(unsafe_code)]
pub fn configure() {
    if mimalloc_major() != MIMALLOC_MAJOR {
        return;
    }
    // SAFETY: `mi_option_set` takes plain integers; it is not thread-safe, and `main` calls it
    // before any other thread exists.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_ARENA_MAX_OBJECT_SIZE, ARENA_MAX_OBJECT_KIB) }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The linked mimalloc is the major version whose option index `configure` uses, and after
    /// `configure` that option reads back as the intended size. A mimalloc upgrade that moves
    /// the enumeration fails here instead of silently setting another option.
    #[test]
    #[allow(unsafe_code)]
    fn configure_sets_the_arena_object_limit() {
        assert_eq!(mimalloc_major(), MIMALLOC_MAJOR);
        configure();
        // SAFETY: `mi_option_get` takes a plain integer.
        let set = unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_ARENA_MAX_OBJECT_SIZE) };
        assert_eq!(set, ARENA_MAX_OBJECT_KIB);
    }
}
