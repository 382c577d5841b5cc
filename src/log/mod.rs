//! The append-only segmented log: bytes on disk (`frame`, `segment`), the
//! writable tail (`tail`), the next segment made ahead of need (`spare`)
//! and the readers' view (`view`).

pub mod frame;
pub mod segment;
pub(crate) mod spare;
pub(crate) mod tail;
pub(crate) mod view;
