//! Reliability: a daemon that starts before its address exists, clean
//! SIGTERM, and a brick whose disk fills up.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::{bin, eventually, manifest, read, unique_port, wait_until, Cluster};

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn have(cmd: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {cmd}"))
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

struct Netns(String);

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

struct Proc(std::process::Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A daemon started before its listen address exists keeps retrying and
/// comes up by itself once the address appears. The test runs in a private
/// network namespace, where it adds the (IPv6) address to the namespace's
/// own loopback interface after the daemon has started; no traffic leaves it.
#[test]
fn daemon_comes_up_when_its_address_appears() {
    if !is_root() || !have("ip") {
        eprintln!("SKIP daemon_comes_up_when_its_address_appears: needs root and iproute2");
        return;
    }
    let ns = Netns(format!("gsync-t{}-{}", std::process::id(), unique_port()));
    if !Command::new("ip")
        .args(["netns", "add", &ns.0])
        .status()
        .is_ok_and(|s| s.success())
    {
        eprintln!(
            "SKIP daemon_comes_up_when_its_address_appears: cannot create a network namespace here"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let port = unique_port().to_string();
    let spawn = |n: u32| {
        let state = dir.path().join(format!("n{n}"));
        std::fs::create_dir_all(&state).unwrap();
        let log = std::fs::File::create(dir.path().join(format!("n{n}.out"))).unwrap();
        Proc(
            Command::new("ip")
                .args(["netns", "exec", &ns.0])
                .arg(bin())
                .args(["daemon", "--listen", &format!("[fd00:77::{n}]:{port}")])
                .env("GSYNC_STATE_DIR", &state)
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap(),
        )
    };
    let cli = |n: u32, args: &[&str]| {
        Command::new(bin())
            .args(args)
            .env("GSYNC_STATE_DIR", dir.path().join(format!("n{n}")))
            .output()
            .unwrap()
    };
    let mut d1 = spawn(1);
    wait_until(
        Duration::from_secs(10),
        "the daemon reports the missing address",
        || read(&dir.path().join("n1.out")).contains("cannot bind"),
    );
    assert!(
        d1.0.try_wait().unwrap().is_none(),
        "daemon exited instead of waiting"
    );
    // The address appears.
    let ip = |args: &[&str]| {
        let mut a = vec!["netns", "exec", &ns.0, "ip"];
        a.extend_from_slice(args);
        assert!(
            Command::new("ip").args(&a).status().unwrap().success(),
            "ip {args:?}"
        );
    };
    ip(&["link", "set", "lo", "up"]);
    ip(&["-6", "addr", "add", "fd00:77::1/128", "dev", "lo", "nodad"]);
    ip(&["-6", "addr", "add", "fd00:77::2/128", "dev", "lo", "nodad"]);
    wait_until(Duration::from_secs(15), "daemon up", || {
        cli(1, &["peer", "status"]).status.success()
    });
    let _d2 = spawn(2);
    wait_until(Duration::from_secs(15), "second daemon up", || {
        cli(2, &["peer", "status"]).status.success()
    });
    let out = cli(1, &["peer", "probe", &format!("[fd00:77::2]:{port}")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_until(Duration::from_secs(10), "peers connected", || {
        String::from_utf8_lossy(&cli(2, &["peer", "status"]).stdout).contains("(Connected)")
    });
}

/// SIGTERM stops a busy daemon within 5 s and leaves no partial file in its
/// brick or mount; after a restart everything converges.
#[test]
fn sigterm_is_clean() {
    let mut c = Cluster::start(3);
    c.form_pool();
    c.create_volume("t");
    let m1 = c.mount("t", 1);
    let m2 = c.mount("t", 2);
    let big: Vec<u8> = (0..24u32 << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(m1.join("big.bin"), &big).unwrap();
    for i in 0..50 {
        std::fs::write(m1.join(format!("f{i}.conf")), format!("{i}\n")).unwrap();
    }
    c.node_mut(2).stop(); // asserts the stop takes at most 5 s
    let leftovers = |root: &Path| {
        manifest::of(root)
            .keys()
            .filter(|k| k.contains(".gsync-tmp-"))
            .count()
    };
    assert_eq!(leftovers(&m2), 0);
    if let Ok(m) = std::fs::metadata(c.brick("t", 2).join("big.bin")) {
        // Present means complete: never a torn file at the real path.
        assert_eq!(m.len(), big.len() as u64);
    }
    c.node_mut(2).start();
    wait_until(
        Duration::from_secs(60),
        "m2 converges after restart",
        || manifest::diff(&manifest::of(&m1), &manifest::of(&m2)).is_none(),
    );
    assert_eq!(std::fs::read(m2.join("big.bin")).unwrap(), big);
    c.assert_no_panics();
}

/// A brick on a full filesystem fails its writes cleanly and is reported;
/// the other bricks go on; once space returns it heals; nothing already
/// stored is damaged.
#[test]
fn full_disk_on_one_brick() {
    if !is_root() {
        eprintln!("SKIP full_disk_on_one_brick: needs root to mount a small tmpfs as the brick");
        return;
    }
    let c = Cluster::start(3);
    c.form_pool();
    let b3 = c.brick("full", 3);
    std::fs::create_dir_all(&b3).unwrap();
    if !Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=12m", "tmpfs"])
        .arg(&b3)
        .status()
        .is_ok_and(|s| s.success())
    {
        eprintln!("SKIP full_disk_on_one_brick: cannot mount a tmpfs here");
        return;
    }
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
    let _u = Unmount(b3.clone());
    std::fs::set_permissions(&b3, std::fs::Permissions::from_mode(0o755)).unwrap();
    c.create_volume("full");
    let m1 = c.mount("full", 1);
    for i in 0..10 {
        std::fs::write(m1.join(format!("small{i}.conf")), format!("value {i}\n")).unwrap();
    }
    wait_until(Duration::from_secs(30), "small files on brick 3", || {
        (0..10).all(|i| read(&b3.join(format!("small{i}.conf"))) == format!("value {i}\n"))
    });
    let before: Vec<String> = (0..10)
        .map(|i| read(&b3.join(format!("small{i}.conf"))))
        .collect();

    // 20 MiB cannot fit in 12 MiB.
    let big: Vec<u8> = (0..20u32 << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 11) as u8)
        .collect();
    std::fs::write(m1.join("big.bin"), &big).unwrap();
    std::fs::write(m1.join("after.conf"), "written after the big file\n").unwrap();
    wait_until(Duration::from_secs(60), "bricks 1 and 2 carry on", || {
        std::fs::metadata(c.brick("full", 2).join("big.bin"))
            .is_ok_and(|m| m.len() == big.len() as u64)
            && c.brick("full", 2).join("after.conf").exists()
    });
    wait_until(Duration::from_secs(30), "the failure is reported", || {
        let j = c
            .node(1)
            .cli(&["--json", "volume", "heal", "full", "info"])
            .json();
        let arr = j.as_array().cloned().unwrap_or_default();
        let pending_for_3 = arr
            .iter()
            .take(2)
            .any(|b| b["info"]["total"].as_u64().unwrap_or(0) > 0);
        let err3 = arr
            .get(2)
            .and_then(|b| b["info"]["last_error"].as_str().map(String::from))
            .unwrap_or_default();
        pending_for_3 && err3.to_lowercase().contains("space")
    });
    // Nothing stored on brick 3 was damaged, and no partial big file shows.
    let now: Vec<String> = (0..10)
        .map(|i| read(&b3.join(format!("small{i}.conf"))))
        .collect();
    assert_eq!(before, now);
    assert!(
        !b3.join("big.bin").exists()
            || std::fs::metadata(b3.join("big.bin")).unwrap().len() == big.len() as u64
    );

    // Space returns: the brick heals by itself.
    assert!(Command::new("mount")
        .args(["-o", "remount,size=96m"])
        .arg(&b3)
        .status()
        .unwrap()
        .success());
    let healed = eventually(Duration::from_secs(60), || {
        c.node(1)
            .cli(&["volume", "heal", "full", "info"])
            .stdout
            .matches("Number of entries: 0")
            .count()
            == 3
    });
    assert!(
        healed,
        "{}",
        c.node(1).cli(&["volume", "heal", "full", "info"]).stdout
    );
    assert_eq!(std::fs::read(b3.join("big.bin")).unwrap(), big);
    assert!(b3.join("after.conf").exists());
    c.assert_no_panics();
}
