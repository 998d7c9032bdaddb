//! Byte-level plumbing shared by both directions: the original destination of a redirected
//! connection, socket options, protocol detection and opaque copying.

pub mod copy;
pub mod detect;
pub mod orig_dst;
pub mod socket;
