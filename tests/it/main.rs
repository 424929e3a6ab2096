//! kappe's one integration test binary (`autotests = false`, so the suite links once). Each
//! module tests one area against real processes; `support` starts and stops them.

mod redis;
mod support;
