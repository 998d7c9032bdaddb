//! Byte-level plumbing shared by both directions: the original destination of a redirected
//! connection, socket options, protocol detection, opaque copying, and I/O watched as it
//! passes ([`watched`]).

pub mod copy;
pub mod detect;
pub mod mesh;
pub mod orig_dst;
pub mod socket;
pub mod watched;
