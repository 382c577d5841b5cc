//! Named, durable checkpoints: how far a subscriber has processed the log.
//!
//! All checkpoints of a store live in one small file, `checkpoints`, in the
//! store directory (format in `docs/FORMAT.md`). A save rewrites the whole
//! file atomically (temporary file, fsync, rename, directory fsync), so
//! after a crash each checkpoint holds its old or its new value, never a
//! mix and never garbage. A save refuses a position beyond the store's last
//! event, and in the periodic and buffered durability modes syncs the log
//! before writing, so a checkpoint is never ahead of the events it refers
//! to, even after a power loss.

use std::collections::BTreeMap;
use std::sync::{Arc, Weak};

use parking_lot::Mutex;

use crate::error::{Error, IoContext, Result};
use crate::io::{self, FileSystem, StdFs};
use crate::options::Durability;
use crate::store::{Core, Store};
use crate::subscription::hub::Hub;

/// Name of the checkpoint file in the store directory.
pub const CHECKPOINTS_FILE_NAME: &str = "checkpoints";

/// First bytes of the checkpoint file.
pub(crate) const MAGIC: &[u8; 8] = b"ANNALCKP";
/// Format version of the checkpoint file.
const VERSION: u32 = 1;
// Field offsets of the header, each derived from the one before.
const H_MAGIC: usize = 0;
const H_VERSION: usize = H_MAGIC + 8;
const H_STORE_ID: usize = H_VERSION + 4;
const H_COUNT: usize = H_STORE_ID + 16;
/// Magic, version, store id, count.
const HEADER_BYTES: usize = H_COUNT + 4;
/// An entry's name length field; the name follows it, then the position.
const E_NAME_LEN_BYTES: usize = 2;
/// An entry's position field.
const E_POSITION_BYTES: usize = 8;
/// The CRC after the last entry.
const CRC_BYTES: usize = 4;
pub use crate::limits::CHECKPOINT_NAME_BYTES_MAX;

/// The checkpoints as last read or written (`None`: not loaded yet, or
/// unknown after a failed save). Saves are serialized by its lock.
#[derive(Debug, Default)]
pub(crate) struct CheckpointCache {
    map: Mutex<Option<BTreeMap<String, u64>>>,
}

impl CheckpointCache {
    /// Waits for a save in progress (a store's close does, having marked
    /// the store closed, which saves check under the same lock).
    pub(crate) fn wait_for_save(&self) {
        drop(self.map.lock());
    }
}

/// The checkpoint store of an open store (see [`Store::checkpoints`]).
/// Cheap to clone; does not keep the store open.
pub struct Checkpoints<F: FileSystem = StdFs> {
    core: Weak<Core<F>>,
    hub: Arc<Hub>,
}

impl<F: FileSystem> Clone for Checkpoints<F> {
    fn clone(&self) -> Self {
        Checkpoints {
            core: self.core.clone(),
            hub: self.hub.clone(),
        }
    }
}

impl<F: FileSystem> std::fmt::Debug for Checkpoints<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpoints").finish_non_exhaustive()
    }
}

impl<F: FileSystem> Checkpoints<F> {
    fn core(&self) -> Result<Arc<Core<F>>> {
        if self.hub.is_closed() {
            return Err(Error::Closed);
        }
        self.core.upgrade().ok_or(Error::Closed)
    }

    /// The position saved under `name`, `None` when there is none. A name
    /// no checkpoint can have (empty, or longer than
    /// [`CHECKPOINT_NAME_BYTES_MAX`]) is [`Error::InvalidInput`], as in
    /// `save` and `remove`.
    ///
    /// A checkpoint past the log's last event (the log lost events to
    /// damage or a deleted file) is reported as [`Error::Corruption`]
    /// rather than returned: resuming after it would skip the events
    /// appended from now on up to it. While such a checkpoint exists, the
    /// store refuses appends with the same error, so that it cannot come
    /// to look valid. `annal repair` lowers such checkpoints to the log's
    /// end; saving it lower or removing it also ends the refusal.
    pub fn load(&self, name: &str) -> Result<Option<u64>> {
        check_name(name)?;
        let core = self.core()?;
        let mut cache = core.checkpoint_cache.map.lock();
        let position = loaded(&core, &mut cache)?.get(name).copied();
        let last = core.published.read().index.last_position();
        match position {
            Some(p) if p > last => Err(Error::corruption(
                core.dir.join(CHECKPOINTS_FILE_NAME),
                0,
                format!("checkpoint '{name}' at {p} is past the log's last position {last} (repair lowers it)"),
            )),
            _ => Ok(position),
        }
    }

    /// Every checkpoint, by name, as saved: an inventory, which includes
    /// any checkpoint past the log's last event (see [`Checkpoints::load`],
    /// which refuses to return one, and `annal repair`, which lowers it).
    /// Resume consumers with `load`, not from this list.
    pub fn list(&self) -> Result<BTreeMap<String, u64>> {
        let core = self.core()?;
        let mut cache = core.checkpoint_cache.map.lock();
        Ok(loaded(&core, &mut cache)?.clone())
    }

    /// Saves `position` under `name`, durably, and returns once it is on
    /// stable storage. Refuses ([`Error::InvalidInput`]) a position beyond
    /// the store's last event; in the periodic and buffered modes, first
    /// syncs the log so the checkpoint never gets ahead of it. Fails with
    /// [`Error::ReadOnly`] on a read-only store.
    pub fn save(&self, name: &str, position: u64) -> Result<()> {
        check_name(name)?;
        let core = self.core()?;
        core.check_writable()?;
        let last = core.published.read().index.last_position();
        if position > last {
            return Err(Error::InvalidInput(format!(
                "checkpoint '{name}' at {position} would be ahead of the log, which ends at {last}"
            )));
        }
        // Everything published so far (up to `last`) is written; make it
        // durable before a checkpoint can point at it (unless a sync since
        // it was published already has: the projection runner's, say).
        core.sync_through(position)?;
        self.update(&core, |map| {
            map.insert(name.to_string(), position);
        })?;
        guard_appends(&core);
        Ok(())
    }

    /// Makes every published event durable: a sync of the log in the
    /// periodic and buffered modes, nothing in durable mode (published
    /// events were synced). The projection runner calls it before a
    /// projection commits its read model, so that no read model can name
    /// a position a power loss could still take from the log.
    pub(crate) fn sync_log(&self) -> Result<()> {
        let core = self.core()?;
        if core.options.durability != Durability::Sync {
            core.sync_tail()?;
        }
        Ok(())
    }

    /// Removes the checkpoint `name` (a no-op when absent), durably: a
    /// projection with no checkpoint starts from the first event. Fails
    /// with [`Error::ReadOnly`] on a read-only store, and with
    /// [`Error::InvalidInput`] for a name no checkpoint can have.
    pub fn remove(&self, name: &str) -> Result<()> {
        check_name(name)?;
        let core = self.core()?;
        core.check_writable()?;
        self.update(&core, |map| {
            map.remove(name);
        })?;
        guard_appends(&core);
        Ok(())
    }

    fn update(&self, core: &Core<F>, change: impl FnOnce(&mut BTreeMap<String, u64>)) -> Result<()> {
        let mut cache = core.checkpoint_cache.map.lock();
        // Again under the lock that close takes: a save that passed the
        // first check as another thread closed the store writes nothing
        // once that close has returned.
        if self.hub.is_closed() {
            return Err(Error::Closed);
        }
        let mut map = loaded(core, &mut cache)?.clone();
        change(&mut map);
        let bytes = encode(core.store_id, &map);
        // Until the write succeeds the file holds the old or the new map.
        *cache = None;
        io::write_atomic(&core.fs, &core.dir, CHECKPOINTS_FILE_NAME, &bytes)
            .ctx(|| format!("saving checkpoints in {}", core.dir.display()))?;
        *cache = Some(map);
        Ok(())
    }
}

/// Refuses appends while a checkpoint names a position past the log's last
/// event, and accepts them again once none does. That happens only after
/// the log lost acknowledged events (damage cut by `repair`, a deleted
/// segment): new appends would take the positions the checkpoint's
/// consumer counts as processed, and it would skip them. Checked at open
/// and after each change of the checkpoints; an unreadable checkpoints
/// file is left to [`Checkpoints::load`] to report.
pub(crate) fn guard_appends<F: FileSystem>(core: &Core<F>) {
    // The flag is set under the cache's lock: two saves or removals that
    // race set it in the order they read the map (the later one's view
    // last). Lock order: checkpoint cache, then writer.
    let mut cache = core.checkpoint_cache.map.lock();
    let ahead = {
        let last = core.published.read().index.last_position();
        loaded(core, &mut cache).ok().and_then(|map| {
            let (name, position) = map.iter().filter(|(_, p)| **p > last).max_by_key(|(_, p)| **p)?;
            Some((
                core.dir.join(CHECKPOINTS_FILE_NAME),
                format!(
                    "checkpoint '{name}' at {position} is past the log's last position {last}: the log lost \
                     acknowledged events, and appends would take positions its consumer counts as done; \
                     appends are refused until `annal repair` lowers it or it is saved lower or removed"
                ),
            ))
        })
    };
    core.writer.lock().set_checkpoint_ahead(ahead);
}

/// The cached map, read from the file first if needed.
fn loaded<'a, F: FileSystem>(
    core: &Core<F>,
    cache: &'a mut Option<BTreeMap<String, u64>>,
) -> Result<&'a BTreeMap<String, u64>> {
    if cache.is_none() {
        *cache = Some(read_file(core)?);
    }
    cache.as_ref().ok_or(Error::Closed)
}

fn read_file<F: FileSystem>(core: &Core<F>) -> Result<BTreeMap<String, u64>> {
    let path = core.dir.join(CHECKPOINTS_FILE_NAME);
    let Some(bytes) = io::read_if_exists(&core.fs, &path).ctx(|| format!("reading {}", path.display()))? else {
        return Ok(BTreeMap::new());
    };
    decode(&bytes, core.store_id).map_err(|(offset, reason)| Error::corruption(&path, offset, reason))
}

/// The checkpoint with the highest position in the checkpoints file of
/// store `store_id` in `dir`, read through `fs`. A saved checkpoint proves
/// the log was durable up to its position (a save refuses positions past
/// the log and syncs the log first), so open, `verify` and `repair` use it
/// as a floor below which damage is never a torn tail. `None` when there
/// is no file or its bytes do not decode: such a file proves nothing here,
/// and is reported where checkpoints are loaded. A file that cannot be
/// read is an error (see [`io::read_witness`]): taking it for absent could
/// let damage under a checkpoint be cut as a torn tail.
pub(crate) fn furthest_in<F: FileSystem>(
    fs: &F,
    dir: &std::path::Path,
    store_id: uuid::Uuid,
) -> Result<Option<(String, u64)>> {
    let Some(bytes) = io::read_witness(fs, &dir.join(CHECKPOINTS_FILE_NAME))? else {
        return Ok(None);
    };
    let Ok(map) = decode(&bytes, store_id) else {
        return Ok(None);
    };
    Ok(map.into_iter().max_by_key(|(_, position)| *position))
}

fn check_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > CHECKPOINT_NAME_BYTES_MAX {
        return Err(Error::InvalidInput(format!(
            "checkpoint name must be 1 to {CHECKPOINT_NAME_BYTES_MAX} bytes, got {}",
            name.len()
        )));
    }
    Ok(())
}

/// Encodes the checkpoint file (see docs/FORMAT.md).
pub(crate) fn encode(store_id: uuid::Uuid, map: &BTreeMap<String, u64>) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_BYTES + CRC_BYTES + map.len() * 32);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(store_id.as_bytes());
    out.extend_from_slice(&(map.len() as u32).to_le_bytes());
    for (name, position) in map {
        out.extend_from_slice(&(name.len() as u16).to_le_bytes());
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(&position.to_le_bytes());
    }
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// The store id of a checkpoints file whose CRC, magic and version check
/// out (whatever its entries).
pub(crate) fn store_id_of(bytes: &[u8]) -> Option<uuid::Uuid> {
    let body = bytes.get(..bytes.len().checked_sub(CRC_BYTES)?)?;
    let crc = bytes.get(body.len()..)?;
    let fits = body.len() >= HEADER_BYTES
        && crc32fast::hash(body).to_le_bytes() == crc
        && &body[H_MAGIC..H_VERSION] == MAGIC
        && body[H_VERSION..H_STORE_ID] == VERSION.to_le_bytes();
    fits.then(|| uuid::Uuid::from_slice(&body[H_STORE_ID..H_COUNT]).ok())?
}

/// Decodes the checkpoint file; on failure, the offset and what is wrong.
pub(crate) fn decode(bytes: &[u8], store_id: uuid::Uuid) -> Result<BTreeMap<String, u64>, (u64, String)> {
    let bad = |offset: usize, reason: &str| (offset as u64, reason.to_string());
    if bytes.len() < HEADER_BYTES + CRC_BYTES {
        return Err(bad(0, "checkpoint file too short"));
    }
    let (body, crc) = bytes.split_at(bytes.len() - CRC_BYTES);
    let crc = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
    if crc32fast::hash(body) != crc {
        return Err(bad(0, "checkpoint file checksum mismatch"));
    }
    let u32_at = |at: usize| u32::from_le_bytes([body[at], body[at + 1], body[at + 2], body[at + 3]]);
    if &body[H_MAGIC..H_VERSION] != MAGIC {
        return Err(bad(H_MAGIC, "not a checkpoint file (bad magic)"));
    }
    let version = u32_at(H_VERSION);
    if version != VERSION {
        return Err(bad(
            H_VERSION,
            &format!("checkpoint file version {version}, this build reads {VERSION}"),
        ));
    }
    if body[H_STORE_ID..H_COUNT] != store_id.as_bytes()[..] {
        return Err(bad(H_STORE_ID, "checkpoint file belongs to another store"));
    }
    let count = u32_at(H_COUNT);
    let mut map = BTreeMap::new();
    let mut at = HEADER_BYTES;
    for _ in 0..count {
        let name_at = at + E_NAME_LEN_BYTES;
        let len = body
            .get(at..name_at)
            .map(|b| usize::from(u16::from_le_bytes([b[0], b[1]])))
            .ok_or_else(|| bad(at, "truncated checkpoint entry"))?;
        if len == 0 || len > CHECKPOINT_NAME_BYTES_MAX {
            return Err(bad(
                at,
                &format!("checkpoint name length {len}, not 1 to {CHECKPOINT_NAME_BYTES_MAX}"),
            ));
        }
        let name = body
            .get(name_at..name_at + len)
            .and_then(|b| std::str::from_utf8(b).ok())
            .ok_or_else(|| bad(at, "bad checkpoint name"))?;
        let position = body
            .get(name_at + len..name_at + len + E_POSITION_BYTES)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map(u64::from_le_bytes)
            .ok_or_else(|| bad(at, "truncated checkpoint entry"))?;
        map.insert(name.to_string(), position);
        at = name_at + len + E_POSITION_BYTES;
    }
    if at != body.len() {
        return Err(bad(at, "trailing bytes after the last checkpoint"));
    }
    Ok(map)
}

impl<F: FileSystem> Store<F> {
    /// The store's named checkpoints (see [`Checkpoints`]).
    pub fn checkpoints(&self) -> Checkpoints<F> {
        Checkpoints {
            core: Arc::downgrade(self.core_arc()),
            hub: self.core_arc().subscriptions.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_matches_format_md() {
        crate::format_doc::assert_layout(
            "## Checkpoint file (`checkpoints`)",
            &[H_MAGIC, H_VERSION, H_STORE_ID, H_COUNT],
            HEADER_BYTES,
        );
        crate::format_doc::assert_layout("Entry:", &[0], E_NAME_LEN_BYTES);
    }

    #[test]
    fn round_trip_and_damage() {
        let id = uuid::Uuid::from_u128(5);
        let mut map = BTreeMap::new();
        map.insert("a".to_string(), 7);
        map.insert("read-model".to_string(), u64::MAX);
        let bytes = encode(id, &map);
        assert_eq!(decode(&bytes, id).unwrap(), map);
        assert!(decode(&bytes, uuid::Uuid::from_u128(6)).is_err());
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x10;
            assert!(decode(&b, id).is_err(), "flip at {i} accepted");
            assert!(decode(&bytes[..i], id).is_err(), "cut at {i} accepted");
        }
        assert!(decode(&encode(id, &BTreeMap::new()), id).unwrap().is_empty());
    }

    /// A file with a valid CRC whose entry names no checkpoint a save could
    /// have made (an empty name, or one past the limit) is refused, as
    /// FORMAT.md's entry table says.
    #[test]
    fn a_name_length_outside_the_limits_is_refused() {
        let id = uuid::Uuid::from_u128(5);
        let crafted = |name: &str| {
            let mut map = BTreeMap::new();
            map.insert(name.to_string(), 3);
            encode(id, &map)
        };
        let longest = "n".repeat(CHECKPOINT_NAME_BYTES_MAX);
        assert_eq!(decode(&crafted(&longest), id).unwrap().get(&longest), Some(&3));
        let (offset, reason) = decode(&crafted(""), id).unwrap_err();
        assert_eq!(offset, HEADER_BYTES as u64);
        assert!(reason.contains("name length 0"), "{reason}");
        let too_long = "n".repeat(CHECKPOINT_NAME_BYTES_MAX + 1);
        let (_, reason) = decode(&crafted(&too_long), id).unwrap_err();
        assert!(reason.contains("name length 1025"), "{reason}");
    }
}
