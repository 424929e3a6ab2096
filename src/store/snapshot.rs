//! snapshot placeholder
