//! The append-only segmented log: bytes on disk (`frame`, `segment`), the
//! writable tail (`tail`), the next segment made ahead of need (`spare`),
//! zeros written ahead of the appender (`ahead`) and the readers' view
//! (`view`).

pub(crate) mod ahead;
pub mod frame;
pub mod segment;
pub(crate) mod spare;
pub(crate) mod tail;
pub(crate) mod view;
