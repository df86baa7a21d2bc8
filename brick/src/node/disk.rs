//! What `volume status VOL detail` shows of a brick's disk, as GlusterFS
//! does: free and total space, inodes, the file system, its device and
//! mount options. Read with statvfs(3) and /proc/self/mountinfo on the
//! node that holds the brick.

use std::path::Path;

use crate::status::DiskInfo;

/// The disk under `path`, or `None` when it cannot be read.
pub fn disk_info(path: &Path) -> Option<DiskInfo> {
    let real = std::fs::canonicalize(path).ok()?;
    let c = std::ffi::CString::new(real.as_os_str().as_encoded_bytes()).ok()?;
    // SAFETY: statvfs(3) fills the struct we own from a valid C string.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    let frag = st.f_frsize as u64;
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let m = mount_of(&mountinfo, &real.to_string_lossy());
    Some(DiskInfo {
        filesystem: m.as_ref().map_or_else(String::new, |m| m.fstype.clone()),
        device: m.as_ref().map_or_else(String::new, |m| m.device.clone()),
        mount_options: m.as_ref().map_or_else(String::new, |m| m.options.clone()),
        mount_point: m.as_ref().map_or_else(String::new, |m| m.point.clone()),
        free_bytes: st.f_bavail as u64 * frag,
        total_bytes: st.f_blocks as u64 * frag,
        inodes_total: st.f_files as u64,
        inodes_free: st.f_favail as u64,
        block_size: st.f_bsize as u64,
    })
}

/// The disks under this node's bricks of `volume`.
pub fn local_bricks(node: &super::Node, volume: &str) -> Vec<(u64, DiskInfo)> {
    let cfg = node.config();
    let Some(v) = cfg.volume(volume) else {
        return Vec::new();
    };
    v.bricks
        .iter()
        .filter(|b| b.node == node.me.uuid)
        .filter_map(|b| Some((b.id, disk_info(Path::new(&b.path))?)))
        .collect()
}

/// One line of mountinfo, the parts shown.
#[derive(Debug, Clone, PartialEq)]
pub struct Mount {
    /// Where it is mounted.
    pub point: String,
    /// File system type.
    pub fstype: String,
    /// Source device.
    pub device: String,
    /// Per-mount options, then the super block's (without repeats).
    pub options: String,
}

/// Undoes mountinfo's octal escapes (`\040` for a space).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && b.len() - i >= 4 {
            let digits = std::str::from_utf8(&b[i + 1..i + 4]).ok();
            if let Some(v) = digits.and_then(|d| u8::from_str_radix(d, 8).ok()) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The mount holding `path` (the longest mount point that contains it;
/// the last such line wins, as later mounts hide earlier ones).
pub fn mount_of(mountinfo: &str, path: &str) -> Option<Mount> {
    let mut best: Option<Mount> = None;
    for line in mountinfo.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let l: Vec<&str> = left.split(' ').collect();
        let r: Vec<&str> = right.split(' ').collect();
        if l.len() < 6 || r.len() < 2 {
            continue;
        }
        let point = unescape(l[4]);
        let inside = path == point
            || point == "/"
            || path.starts_with(&point) && path.as_bytes().get(point.len()) == Some(&b'/');
        if !inside {
            continue;
        }
        if best.as_ref().is_some_and(|b| b.point.len() > point.len()) {
            continue;
        }
        let mut opts: Vec<&str> = l[5].split(',').collect();
        for o in r.get(2).map_or("", |s| *s).split(',') {
            if !o.is_empty() && !opts.contains(&o) {
                opts.push(o);
            }
        }
        best = Some(Mount {
            point,
            fstype: r[0].to_string(),
            device: unescape(r[1]),
            options: opts.join(","),
        });
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    const INFO: &str = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw,errors=remount-ro
30 22 0:26 / /srv rw,nosuid shared:2 - xfs /dev/sdb1 rw,attr2,inode64
31 30 0:27 / /srv/my\\040data rw,noatime - btrfs /dev/sdc rw,ssd
";

    #[test]
    fn the_deepest_mount_holding_a_path_wins() {
        let cases = [
            (
                "/home/x",
                "/",
                "ext4",
                "/dev/sda1",
                "rw,relatime,errors=remount-ro",
            ),
            (
                "/srv/b1",
                "/srv",
                "xfs",
                "/dev/sdb1",
                "rw,nosuid,attr2,inode64",
            ),
            (
                "/srvx/b1",
                "/",
                "ext4",
                "/dev/sda1",
                "rw,relatime,errors=remount-ro",
            ),
            (
                "/srv/my data/b",
                "/srv/my data",
                "btrfs",
                "/dev/sdc",
                "rw,noatime,ssd",
            ),
            (
                "/srv",
                "/srv",
                "xfs",
                "/dev/sdb1",
                "rw,nosuid,attr2,inode64",
            ),
        ];
        for (path, point, fs, dev, opts) in cases {
            let m = mount_of(INFO, path).expect(path);
            assert_eq!(
                (
                    m.point.as_str(),
                    m.fstype.as_str(),
                    m.device.as_str(),
                    m.options.as_str()
                ),
                (point, fs, dev, opts),
                "{path}"
            );
        }
    }

    #[test]
    fn a_real_directory_has_a_disk() {
        let d = disk_info(Path::new("/")).expect("root fs");
        assert!(d.total_bytes > 0 && d.free_bytes <= d.total_bytes);
        assert!(!d.filesystem.is_empty());
    }
}
