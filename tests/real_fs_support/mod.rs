//! Small file systems mounted for one test (tmpfs, and images made by
//! `mkfs` on loop devices), and what the tests on them share: filling a
//! disk, giving space back, the error of a full disk. Used by
//! `tests/real_fs.rs` and `tests/real_fs_review.rs`; mounting needs root.
#![allow(dead_code)]

use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::process::Command;

use annal::{AppendResult, Error, EventData, ReadAll, Store, Uuid};

/// A file system mounted at a temporary directory for one test, unmounted
/// when dropped.
pub struct Mount {
    /// Where the file system is mounted.
    pub point: PathBuf,
    _dir: tempfile::TempDir,
    /// The directory of the image file, when the mount made it.
    _image_dir: Option<tempfile::TempDir>,
    /// The tmpfs that holds the image file, unmounted last.
    _holder: Option<Box<Mount>>,
    /// The image file of a loop-mounted file system.
    image: Option<PathBuf>,
}

impl Mount {
    /// A tmpfs of `mib` MiB, or `None` where it cannot be mounted.
    pub fn tmpfs(mib: u64) -> Option<Mount> {
        Mount::tmpfs_with(mib, "")
    }

    /// The same with more mount options (`,huge=always`).
    pub fn tmpfs_with(mib: u64, more: &str) -> Option<Mount> {
        let dir = tempfile::tempdir().ok()?;
        let point = dir.path().join("mnt");
        std::fs::create_dir(&point).ok()?;
        let size = format!("size={mib}m{more}");
        system("mount", &["-t", "tmpfs", "-o", &size, "tmpfs", point.to_str()?])?;
        Some(Mount {
            point,
            _dir: dir,
            _image_dir: None,
            _holder: None,
            image: None,
        })
    }

    /// An ext4 file system of `mib` MiB (made with the extra `mkfs.ext4`
    /// arguments `extra`) in an image file on a loop device, or `None`
    /// where it cannot be made or mounted.
    pub fn ext4(mib: u64, extra: &[&str]) -> Option<Mount> {
        let image_dir = tempfile::tempdir().ok()?;
        let image = image_dir.path().join("fs.img");
        let mut mount = Mount::ext4_in(&image, mib, extra)?;
        mount._image_dir = Some(image_dir);
        Some(mount)
    }

    /// The same, with its image (sparse) at `image`, where the caller
    /// removes it.
    pub fn ext4_in(image: &Path, mib: u64, extra: &[&str]) -> Option<Mount> {
        let mut args = vec!["-q", "-F"];
        args.extend_from_slice(extra);
        make_image("mkfs.ext4", &args, image, mib)?;
        Mount::loop_mount(image.to_path_buf(), None, None)
    }

    /// A file system made by `mkfs` (with `args`, the image path last) in
    /// a sparse image file of `mib` MiB on a tmpfs of its own (so that its
    /// syncs cost no disk time), mounted on a loop device; `None` where it
    /// cannot be made or mounted.
    pub fn made_by(mkfs: &str, args: &[&str], mib: u64) -> Option<Mount> {
        let holder = Mount::tmpfs(mib + 16)?;
        let image_dir = tempfile::tempdir_in(&holder.point).ok()?;
        let image = image_dir.path().join("fs.img");
        make_image(mkfs, args, &image, mib)?;
        Mount::loop_mount(image, Some(image_dir), Some(Box::new(holder)))
    }

    /// Mounts the file system in `image` on a loop device, at a new
    /// temporary directory; the image's directory and the tmpfs holding it
    /// (if any) are kept until the mount is dropped.
    fn loop_mount(image: PathBuf, image_dir: Option<tempfile::TempDir>, holder: Option<Box<Mount>>) -> Option<Mount> {
        let dir = tempfile::tempdir().ok()?;
        let point = dir.path().join("mnt");
        std::fs::create_dir(&point).ok()?;
        system("mount", &["-o", "loop", image.to_str()?, point.to_str()?])?;
        Some(Mount {
            point,
            _dir: dir,
            _image_dir: image_dir,
            _holder: holder,
            image: Some(image),
        })
    }

    /// Unmounts the file system and mounts its image again (after a shut
    /// down, say); whether that worked.
    pub fn mount_again(&self) -> bool {
        let (Some(point), Some(image)) = (self.point.to_str(), self.image.as_ref().and_then(|i| i.to_str())) else {
            return false;
        };
        system("umount", &[point]).is_some() && system("mount", &["-o", "loop", image, point]).is_some()
    }

    /// Mounts the file system again, read-only.
    pub fn remount_read_only(&self) {
        let point = self.point.to_str().expect("mount point is UTF-8");
        assert!(
            system("mount", &["-o", "remount,ro", point]).is_some(),
            "remounting {point} read-only failed"
        );
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if let Some(point) = self.point.to_str()
            && system("umount", &[point]).is_none()
        {
            let _ = system("umount", &["-l", point]);
        }
    }
}

/// Makes a file system with `mkfs` (with `args`, the image path added
/// last) in a new sparse image file of `mib` MiB at `image`.
fn make_image(mkfs: &str, args: &[&str], image: &Path, mib: u64) -> Option<()> {
    std::fs::File::create(image).ok()?.set_len(mib << 20).ok()?;
    let mut all = args.to_vec();
    all.push(image.to_str()?);
    // mkfs.xfs makes file systems under 300 MB only for test suites.
    let made = Command::new(mkfs)
        .args(&all)
        .envs([("TEST_DIR", "1"), ("TEST_DEV", "1"), ("QA_CHECK_FS", "1")])
        .output()
        .ok()?;
    made.status.success().then_some(())
}

/// Runs a command; `Some` when it ran and exited 0.
pub fn system(program: &str, args: &[&str]) -> Option<()> {
    let output = Command::new(program).args(args).output().ok()?;
    output.status.success().then_some(())
}

/// Sets or clears a file attribute (`+i`, `-i`); whether that worked.
pub fn chattr(flag: &str, path: &Path) -> bool {
    path.to_str().and_then(|p| system("chattr", &[flag, p])).is_some()
}

/// Says on stderr that a test checked nothing, and why.
pub fn skipped(test: &str, what: &str) {
    eprintln!("{test}: SKIPPED, could not mount {what} (needs root, mount, its mkfs, chattr and a loop device)");
}

pub fn io_kind(error: &Error) -> Option<ErrorKind> {
    match error {
        Error::Io { source, .. } => Some(source.kind()),
        _ => None,
    }
}

pub fn is_disk_full(error: &Error) -> bool {
    io_kind(error) == Some(ErrorKind::StorageFull)
}

/// Fills the disk with a file at `path`, written until the disk is full.
pub fn fill_disk(path: &Path) {
    use std::io::Write;
    let mut file = std::fs::File::create(path).unwrap();
    let chunk = vec![9u8; 16 << 10];
    loop {
        match file.write(&chunk) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::StorageFull => break,
            Err(e) => panic!("filling the disk: {e}"),
        }
    }
    while let Ok(1) = file.write(&[9]) {}
    let _ = file.sync_all();
}

/// Gives the space of the file at `path` back, and removes it. Cut to
/// nothing first: a child process that another test thread is starting
/// may hold the file open for a moment (it inherited the descriptor and
/// has not reached `exec` yet), and removing the name alone frees nothing
/// until it lets go. (A copy-on-write file system may have no room for
/// the cut itself: then the name alone goes.)
pub fn give_back(path: &Path) {
    let _ = std::fs::OpenOptions::new().write(true).open(path).unwrap().set_len(0);
    std::fs::remove_file(path).unwrap();
}

/// Each acknowledged append (its stream, its ids, its result), in order.
pub type Ledger = Vec<(String, Vec<Uuid>, AppendResult)>;

/// Every acknowledged append is in the store at the positions and
/// versions it was acknowledged with, positions are gapless, and the
/// failed append (if any) is there whole, once, or not at all. Returns
/// whether the failed one is there.
pub fn check(store: &Store, ledger: &Ledger, failed: Option<&(String, Vec<EventData>)>, what: &str) -> bool {
    let all = store.read_all(ReadAll::forward()).unwrap().collect_all().unwrap();
    assert_eq!(
        all.len() as u64,
        store.last_position(),
        "{what}: positions are not gapless"
    );
    for (i, event) in all.iter().enumerate() {
        assert_eq!(event.position(), i as u64 + 1, "{what}");
    }
    for (stream, ids, result) in ledger {
        for (j, id) in ids.iter().enumerate() {
            let position = result.first_position + j as u64;
            let event = all
                .get(position as usize - 1)
                .unwrap_or_else(|| panic!("{what}: acknowledged position {position} is lost"));
            assert_eq!(
                (event.id(), event.stream(), event.version()),
                (*id, stream.as_str(), result.first_version + j as u64),
                "{what}: position {position}"
            );
        }
    }
    let Some((_, events)) = failed else {
        return false;
    };
    let failed_ids: Vec<Uuid> = events.iter().map(EventData::id).collect();
    let found = all.iter().filter(|e| failed_ids.contains(&e.id())).count();
    assert!(
        found == 0 || found == failed_ids.len(),
        "{what}: the failed append is in the store in part or twice: {found} of {} events",
        failed_ids.len()
    );
    found > 0
}

pub fn ledger_end(ledger: &Ledger) -> u64 {
    ledger.last().map_or(0, |(_, _, r)| r.last_position)
}
