//! Changesets as users meet them: files written together in one mount go
//! live together in the others, a validator can veto a set before it goes
//! live, --on-change runs once per set, and a set whose member never comes
//! holds back later changes only for a bound.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::support::mounts::{mount_list, wait_content};
use crate::support::{read, wait_until, Cluster};

const T: Duration = Duration::from_secs(30);

/// A replica-2 volume "v" with a mount on node 1 (the writer, with
/// `writer` options) and one on node 2 with the options `reader` gives.
fn pair(writer: &[&str], reader: impl Fn(&Cluster) -> Vec<String>) -> (Cluster, PathBuf, PathBuf) {
    let c = Cluster::start(2);
    c.form_pool();
    c.create_volume("v");
    let (m1, m2) = (c.mount_dir(1), c.mount_dir(2));
    let writer: Vec<String> = writer.iter().map(|s| s.to_string()).collect();
    for (i, dir, extra) in [(1, &m1, writer), (2, &m2, reader(&c))] {
        let n = c.node(i);
        let mut args = vec![
            "mount".to_string(),
            format!("{}:/v", n.ip),
            dir.to_string_lossy().into_owned(),
        ];
        args.extend(extra);
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        n.cli(&a).ok();
    }
    (c, m1, m2)
}

/// Writes version `v` of `n` files `f00.conf`.. (and, if `big`, a 24 MiB
/// `00-big.bin` first in name order) through a staging dir and renames,
/// like an untar.
fn write_set(m: &Path, v: u32, n: usize, big: bool) {
    let stage = m.with_extension(format!("stage-{v}"));
    std::fs::create_dir_all(&stage).unwrap();
    if big {
        let body: Vec<u8> = (0..24u32 << 20)
            .map(|i| (i.wrapping_mul(2654435761) ^ v) as u8)
            .collect();
        let mut b = format!("v{v}\n").into_bytes();
        b.extend(body);
        std::fs::write(stage.join("00-big.bin"), b).unwrap();
    }
    for i in 0..n {
        std::fs::write(stage.join(format!("f{i:02}.conf")), format!("v{v} {i}\n")).unwrap();
    }
    for e in std::fs::read_dir(&stage).unwrap() {
        let e = e.unwrap();
        std::fs::rename(e.path(), m.join(e.file_name())).unwrap();
    }
    let _ = std::fs::remove_dir(&stage);
}

/// The version file `f` of a set shows now (`None`: missing).
fn version_of(m: &Path, f: &str) -> Option<u32> {
    let mut head = [0u8; 8];
    let k = std::fs::File::open(m.join(f))
        .and_then(|mut h| std::io::Read::read(&mut h, &mut head))
        .ok()?;
    let s = String::from_utf8_lossy(&head[..k]).into_owned();
    s.strip_prefix('v')?
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// The version each file of the set shows now, in name order (`None`:
/// missing).
fn versions(m: &Path, n: usize, big: bool) -> Vec<Option<u32>> {
    let mut names: Vec<String> = (0..n).map(|i| format!("f{i:02}.conf")).collect();
    if big {
        names.insert(0, "00-big.bin".into());
    }
    names.iter().map(|f| version_of(m, f)).collect()
}

/// One pass of a reader over the set: the version of each file.
type Sample = Vec<Option<u32>>;

/// A reader taking samples in a loop (at most 200,000) until finished.
struct Sampler {
    stop: Arc<AtomicBool>,
    handle: std::thread::JoinHandle<Vec<Sample>>,
}

impl Sampler {
    fn start(pass: impl Fn() -> Sample + Send + 'static) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let s2 = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut out = Vec::new();
            while !s2.load(Ordering::Relaxed) && out.len() < 200_000 {
                out.push(pass());
            }
            out
        });
        Self { stop, handle }
    }

    fn finish(self) -> Vec<Sample> {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().expect("sampler")
    }
}

/// A non-atomic mount makes a changeset live only once every member is
/// staged: while a 24 MiB member is still in transfer, none of the 20
/// small files it was written with goes live (applied file by file, the
/// small ones would be live long before it).
#[test]
fn a_changeset_goes_live_only_once_every_member_is_staged() {
    let (c, m1, m2) = pair(&["--settle", "300ms"], |_| Vec::new());
    write_set(&m1, 1, 20, true);
    wait_until(T, "set 1 in m2", || {
        versions(&m2, 20, true).iter().all(|v| *v == Some(1))
    });
    // The small files are read first and the big one last: a small file
    // of the new set seen before the big one still shows the old set
    // means it went live first.
    let dir = m2.clone();
    let reader = Sampler::start(move || {
        let small = versions(&dir, 20, false);
        let mut s = vec![version_of(&dir, "00-big.bin")];
        s.extend(small);
        s
    });
    write_set(&m1, 2, 20, true);
    wait_until(T * 2, "set 2 in m2", || {
        versions(&m2, 20, true).iter().all(|v| *v == Some(2))
    });
    let samples = reader.finish();
    let mixed = samples
        .iter()
        .filter(|s| s.iter().any(|v| *v != s[0]))
        .count();
    println!(
        "{} samples, {mixed} saw the burst of renames under way",
        samples.len()
    );
    // Never a small file of the new set live before its big member.
    let early = samples
        .iter()
        .find(|s| s[0] == Some(1) && s[1..].contains(&Some(2)));
    assert!(
        early.is_none(),
        "a member went live before the whole set was staged: {early:?}"
    );
    assert!(
        samples.iter().all(|s| s.iter().all(|v| v.is_some())),
        "a file was missing"
    );
    c.assert_no_panics();
}

/// An `--atomic` mount: DIR is a symlink swapped to a new generation per
/// changeset. A reader that resolves DIR once per pass over the 20 files
/// never sees a mix while the writer rewrites all 20, again and again, and
/// ends with the newest set; old generations are pruned.
#[test]
fn an_atomic_mount_never_shows_a_mix() {
    let (c, m1, m2) = pair(&["--settle", "300ms"], |_| vec!["--atomic".into()]);
    assert!(std::fs::symlink_metadata(&m2)
        .unwrap()
        .file_type()
        .is_symlink());
    write_set(&m1, 1, 20, false);
    wait_until(T, "set 1 in m2", || {
        versions(&m2, 20, false).iter().all(|v| *v == Some(1))
    });
    let dir = m2.clone();
    // Resolving DIR once per pass, as `cd DIR` does.
    let reader = Sampler::start(move || match std::fs::canonicalize(&dir) {
        Ok(real) => versions(&real, 20, false),
        Err(_) => vec![None],
    });
    for v in 2..=4 {
        write_set(&m1, v, 20, false);
        wait_until(T, "the new set in m2", || {
            versions(&m2, 20, false).iter().all(|x| *x == Some(v))
        });
    }
    let samples = reader.finish();
    println!("{} samples of the atomic mount", samples.len());
    let bad = samples
        .iter()
        .find(|s| s.len() != 20 || s.iter().any(|v| v.is_none() || *v != s[0]));
    assert!(bad.is_none(), "a pass saw a mix or a missing file: {bad:?}");
    assert!(!samples.is_empty());
    assert!(versions(&m2, 20, false).iter().all(|v| *v == Some(4)));
    // Old generations are pruned: the live one and the one before stay.
    let base = m2.with_file_name(".m2.gsync");
    let gens = std::fs::read_dir(&base)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("gen-"))
        .count();
    assert!(gens <= 2, "{gens} generations kept");
    c.assert_no_panics();
}

/// Runs logged by an --on-change command writing `$GSYNC_CHANGED` then `---`.
fn hook_runs(log: &Path) -> Vec<Vec<String>> {
    read(log)
        .split("---\n")
        .filter(|b| !b.trim().is_empty())
        .map(|b| {
            let mut v: Vec<String> = b.lines().map(String::from).collect();
            v.sort();
            v
        })
        .collect()
}

/// `--on-change` runs once per changeset that went live, with exactly its
/// paths, even with a long --on-change-delay.
#[test]
fn on_change_runs_once_per_changeset() {
    let (c, m1, m2) = pair(&["--settle", "300ms"], |c| {
        let cmd = format!(
            "printf '%s\\n---\\n' \"$GSYNC_CHANGED\" >> '{}'",
            c.path("hook.log").display()
        );
        vec![
            "--on-change".into(),
            cmd,
            "--on-change-delay".into(),
            "5s".into(),
        ]
    });
    let log = c.path("hook.log");
    let names = |set: &str, n: usize| -> Vec<String> {
        let mut v: Vec<String> = (0..n).map(|i| format!("{set}-{i}.conf")).collect();
        v.sort();
        v
    };
    for (k, (set, n)) in [("a", 3), ("b", 4)].into_iter().enumerate() {
        for f in names(set, n) {
            std::fs::write(m1.join(&f), format!("{set}\n")).unwrap();
        }
        wait_content(&m2, &format!("{set}-0.conf"), &format!("{set}\n"), T);
        wait_until(T, "the hook ran for the set", || hook_runs(&log).len() > k);
    }
    // Nothing else runs later.
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(hook_runs(&log), vec![names("a", 3), names("b", 4)]);
    c.assert_no_panics();
}

/// A validator that rejects any tree holding the marker BROKEN, naming the
/// first file that does.
const CHECK: &str = "if grep -rq BROKEN .; then echo \"marker BROKEN found in $(grep -rl BROKEN . | head -1)\" >&2; exit 1; fi";

/// The rejections `--json volume heal v info` on node `i` reports, as
/// (node, mount folder, paths sorted).
fn rejected_json(c: &Cluster, i: usize) -> Vec<(String, String, Vec<String>)> {
    let j = c
        .node(i)
        .cli(&["--json", "volume", "heal", "v", "info"])
        .ok()
        .json();
    let mut out = Vec::new();
    for b in j.as_array().into_iter().flatten() {
        for r in b["rejected"].as_array().into_iter().flatten() {
            let mut paths: Vec<String> = r["paths"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| p.as_str().map(String::from))
                .collect();
            paths.sort();
            out.push((
                r["node"].as_str().unwrap_or("").to_string(),
                r["dir"].as_str().unwrap_or("").to_string(),
                paths,
            ));
        }
    }
    out
}

/// A validator that finds a marker rejects the changeset: the live folder
/// keeps the good set, the state, the events and `heal info` (text and
/// JSON) say so, the staged tree is kept; the next good changeset is
/// validated with what is still pending and goes live.
#[test]
fn a_validator_rejects_a_bad_changeset_and_accepts_the_next_good_one() {
    let (c, m1, m2) = pair(&["--settle", "300ms"], |_| {
        vec!["--validate".into(), CHECK.into()]
    });
    let write = |app: &str, site: Option<&str>| {
        std::fs::write(m1.join("app.conf"), app).unwrap();
        if let Some(s) = site {
            std::fs::write(m1.join("site.conf"), s).unwrap();
        }
    };
    write("app 1\n", Some("site 1\n"));
    wait_content(&m2, "app.conf", "app 1\n", T);
    wait_content(&m2, "site.conf", "site 1\n", T);

    write("app 2 BROKEN\n", Some("site 2\n"));
    wait_until(T, "the rejection in the mount state", || {
        mount_list(&c, 2).contains("rejected: changeset")
    });
    let state = mount_list(&c, 2);
    assert!(
        state.contains("(validator exit 1: marker BROKEN found in ./app.conf)"),
        "{state}"
    );
    // The live folder keeps the good set, whole.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(read(&m2.join("app.conf")), "app 1\n");
    assert_eq!(read(&m2.join("site.conf")), "site 1\n");
    // The staged tree is kept for inspection.
    let staged: Vec<PathBuf> = std::fs::read_dir(m2.join(".gsync/staged"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(
        staged
            .iter()
            .any(|s| read(&s.join("app.conf")) == "app 2 BROKEN\n"
                && read(&s.join("site.conf")) == "site 2\n"),
        "{staged:?}"
    );
    // heal info names the rejected paths on that node.
    let info = c.node(2).cli(&["volume", "heal", "v", "info"]).ok().stdout;
    assert!(info.contains("Rejected by the validator of"), "{info}");
    assert!(
        info.contains("app.conf") && info.contains("site.conf"),
        "{info}"
    );
    // So does its JSON form, with the node and the folder.
    let got = rejected_json(&c, 2);
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(got[0].0.contains(&c.node(2).ip), "{got:?}");
    assert_eq!(got[0].1, m2.to_string_lossy());
    assert_eq!(got[0].2, ["app.conf", "site.conf"]);
    let events = c.node(2).cli(&["events", "--json"]).ok().stdout;
    assert!(events.contains("changeset-rejected"), "{events}");
    assert!(!mount_list(&c, 2).contains("in sync"));

    // A fix of app.conf alone: validated with site.conf still pending, and
    // both go live.
    write("app 3\n", None);
    wait_content(&m2, "app.conf", "app 3\n", T);
    wait_content(&m2, "site.conf", "site 2\n", T);
    wait_until(T, "the rejection cleared", || {
        let s = mount_list(&c, 2);
        !s.contains("rejected") && s.contains("in sync")
    });
    assert!(rejected_json(&c, 2).is_empty());
    c.assert_no_panics();
}

/// A changeset whose last member does not come (the link between the
/// bricks is cut while it is in transfer) holds back itself and the changes
/// behind it only for the bound, then goes live with a warning; the member
/// comes later, when the link is back.
#[test]
fn a_changeset_with_a_lost_member_does_not_block_later_ones() {
    let c = Cluster::start(2);
    c.form_pool();
    c.create_volume("v");
    let m1 = c.mount("v", 1);
    let m2 = c.mount("v", 2);
    let other = c.path("m2b");
    c.mount_from(2, 2, "v", &other);
    std::fs::write(m1.join("warm.conf"), "w\n").unwrap();
    wait_content(&m2, "warm.conf", "w\n", T);
    // 20 small files and a 64 MiB one, as one changeset.
    let big: Vec<u8> = (0..64u32 << 20)
        .map(|i| i.wrapping_mul(2654435761) as u8)
        .collect();
    let stage = c.path("stage");
    std::fs::create_dir_all(&stage).unwrap();
    std::fs::write(stage.join("00-big.bin"), &big).unwrap();
    for i in 0..20 {
        std::fs::write(stage.join(format!("s{i:02}.conf")), format!("set {i}\n")).unwrap();
    }
    for e in std::fs::read_dir(&stage).unwrap() {
        let e = e.unwrap();
        std::fs::rename(e.path(), m1.join(e.file_name())).unwrap();
    }
    // The small members reach brick 2; the link is cut before the big one.
    let b2 = c.brick("v", 2);
    let deadline = std::time::Instant::now() + T;
    while !(0..20).all(|i| b2.join(format!("s{i:02}.conf")).exists()) {
        assert!(
            std::time::Instant::now() < deadline,
            "small members on brick 2"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    c.partition(1, 2);
    if std::fs::read(b2.join("00-big.bin")).is_ok_and(|b| b == big) {
        eprintln!("SKIP: the big member reached brick 2 before the link was cut");
        return;
    }
    // A later change, made on node 2, is held behind the incomplete set
    // for the bound only.
    std::fs::write(other.join("later.conf"), "later\n").unwrap();
    for i in 0..20 {
        wait_content(&m2, &format!("s{i:02}.conf"), &format!("set {i}\n"), T);
    }
    wait_content(&m2, "later.conf", "later\n", T);
    let events = c.node(2).cli(&["events", "--json"]).ok().stdout;
    assert!(
        events.contains("changeset-incomplete"),
        "the set was applied as incomplete: {events}"
    );
    assert!(!std::fs::read(m2.join("00-big.bin")).is_ok_and(|b| b == big));
    // The lost member comes once the link is back.
    c.heal_network();
    wait_until(T * 3, "the big member in m2", || {
        std::fs::read(m2.join("00-big.bin")).is_ok_and(|b| b == big)
    });
    c.assert_no_panics();
}

/// A rejection outlives the agent: after a kill -9 of the daemon that runs
/// the mount and a restart, the very first state of the mount still says
/// which changeset was rejected and why, `heal info` (text and JSON) still
/// lists its paths, and the folder still lacks its content, until a later
/// good changeset is accepted.
#[test]
fn a_rejection_survives_a_restart_of_the_agent() {
    let (mut c, m1, m2) = pair(&["--settle", "300ms"], |_| {
        vec!["--validate".into(), CHECK.into()]
    });
    std::fs::write(m1.join("app.conf"), "app 1\n").unwrap();
    std::fs::write(m1.join("site.conf"), "site 1\n").unwrap();
    wait_content(&m2, "app.conf", "app 1\n", T);
    wait_content(&m2, "site.conf", "site 1\n", T);
    std::fs::write(m1.join("app.conf"), "app 2 BROKEN\n").unwrap();
    std::fs::write(m1.join("site.conf"), "site 2\n").unwrap();
    wait_until(T, "the rejection in the mount state", || {
        mount_list(&c, 2).contains("rejected: changeset")
    });
    let before = mount_list(&c, 2);
    let line = |s: &str| {
        s.split("rejected: ")
            .nth(1)
            .and_then(|r| r.split(')').next())
            .map(|r| format!("{r})"))
            .unwrap_or_default()
    };
    let rejected = line(&before);
    assert!(
        rejected.ends_with("(validator exit 1: marker BROKEN found in ./app.conf)"),
        "{before}"
    );

    c.node_mut(2).kill9();
    c.node_mut(2).start();
    // From the first answer of the restarted daemon on.
    let after = mount_list(&c, 2);
    assert_eq!(line(&after), rejected, "{after}");
    let info = c.node(2).cli(&["volume", "heal", "v", "info"]).ok().stdout;
    assert!(info.contains("Rejected by the validator of"), "{info}");
    assert!(
        info.contains("/app.conf") && info.contains("/site.conf"),
        "{info}"
    );
    let got = rejected_json(&c, 2);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].2, ["app.conf", "site.conf"]);
    // The agent follows its brick again, and still keeps the set out: the
    // set the brick delivers again is the one already rejected, so it is
    // neither validated nor reported a second time.
    wait_until(T, "the mount following its brick", || {
        mount_list(&c, 2).contains("following")
    });
    std::thread::sleep(Duration::from_secs(2));
    let s = mount_list(&c, 2);
    assert_eq!(line(&s), rejected, "{s}");
    assert!(!s.contains("in sync"), "{s}");
    let events = c.node(2).cli(&["events", "--json"]).ok().stdout;
    assert_eq!(
        events.matches("\"changeset-rejected\"").count(),
        1,
        "one rejection, reported once: {events}"
    );
    assert_eq!(read(&m2.join("app.conf")), "app 1\n");
    assert_eq!(read(&m2.join("site.conf")), "site 1\n");

    // A fix goes live with the rest of the rejected set.
    std::fs::write(m1.join("app.conf"), "app 3\n").unwrap();
    wait_content(&m2, "app.conf", "app 3\n", T);
    wait_content(&m2, "site.conf", "site 2\n", T);
    wait_until(T, "the rejection cleared", || {
        let s = mount_list(&c, 2);
        !s.contains("rejected") && s.contains("in sync")
    });
    assert!(rejected_json(&c, 2).is_empty());
    // And stays cleared across another restart.
    c.node_mut(2).kill9();
    c.node_mut(2).start();
    assert!(!mount_list(&c, 2).contains("rejected"));
    wait_until(T, "in sync after the restart", || {
        mount_list(&c, 2).contains("in sync")
    });
    c.assert_no_panics();
}

/// A volume with content (one file carrying the marker) mounted on node 2
/// at `m2` (first prepared by `prep`), with a validator and `extra`
/// options; the writer's mount is on node 1. Returns the two folders.
fn bad_volume_then_mount(extra: &[&str], prep: impl Fn(&Path)) -> (Cluster, PathBuf, PathBuf) {
    let c = Cluster::start(2);
    c.form_pool();
    c.create_volume("v");
    let m1 = c.mount("v", 1);
    std::fs::create_dir_all(m1.join("sites")).unwrap();
    std::fs::write(m1.join("app.conf"), "app 1 BROKEN\n").unwrap();
    std::fs::write(m1.join("sites/site.conf"), "site 1\n").unwrap();
    let b2 = c.brick("v", 2);
    wait_until(T, "the content on brick 2", || {
        read(&b2.join("app.conf")) == "app 1 BROKEN\n"
            && read(&b2.join("sites/site.conf")) == "site 1\n"
    });
    let dir = c.mount_dir(2);
    prep(&dir);
    let mut args = vec![
        "mount".to_string(),
        format!("{}:/v", c.node(2).ip),
        dir.to_string_lossy().into_owned(),
        "--validate".into(),
        CHECK.into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = c.node(2).cli(&a);
    assert!(
        out.stdout.contains("rejected: changeset"),
        "gsync mount says the first content was rejected: {out:?}"
    );
    (c, m1, dir)
}

/// The names in a folder, but the mount's reserved directory.
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n != ".gsync")
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// A new mount with `--validate` attaching to a volume with content
/// validates that content before any of it goes live: rejected, the folder
/// keeps what it had (here one file of its own, pushed as usual), `gsync
/// mount` and `heal info` report it; a later fix goes live with the rest.
#[test]
fn the_first_content_of_a_new_mount_is_validated() {
    let (c, m1, dir) = bad_volume_then_mount(&[], |d| {
        std::fs::create_dir_all(d).unwrap();
        std::fs::write(d.join("mine.txt"), "mine\n").unwrap();
    });
    let s = mount_list(&c, 2);
    assert!(
        s.contains("(validator exit 1: marker BROKEN found in ./app.conf)"),
        "{s}"
    );
    assert_eq!(names(&dir), ["mine.txt"]);
    wait_content(&m1, "mine.txt", "mine\n", T);
    let info = c.node(2).cli(&["volume", "heal", "v", "info"]).ok().stdout;
    assert!(
        info.contains("/app.conf") && info.contains("/sites/site.conf"),
        "{info}"
    );
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(names(&dir), ["mine.txt"]);

    std::fs::write(m1.join("app.conf"), "app 2\n").unwrap();
    wait_content(&dir, "app.conf", "app 2\n", T);
    wait_content(&dir, "sites/site.conf", "site 1\n", T);
    wait_until(T, "the rejection cleared", || {
        let s = mount_list(&c, 2);
        !s.contains("rejected") && s.contains("in sync")
    });
    assert_eq!(read(&dir.join("mine.txt")), "mine\n");
    c.assert_no_panics();
}

/// The same for an `--atomic` mount: its first generation is validated, a
/// rejection leaves DIR pointing at an empty generation, and the fix goes
/// live as one new generation.
#[test]
fn the_first_generation_of_an_atomic_mount_is_validated() {
    let (c, m1, dir) = bad_volume_then_mount(&["--atomic"], |_| {});
    assert!(std::fs::symlink_metadata(&dir)
        .unwrap()
        .file_type()
        .is_symlink());
    assert!(names(&dir).is_empty(), "{:?}", names(&dir));
    std::thread::sleep(Duration::from_secs(1));
    assert!(names(&dir).is_empty(), "{:?}", names(&dir));
    std::fs::write(m1.join("app.conf"), "app 2\n").unwrap();
    wait_content(&dir, "app.conf", "app 2\n", T);
    assert_eq!(read(&dir.join("sites/site.conf")), "site 1\n");
    wait_until(T, "the rejection cleared", || {
        !mount_list(&c, 2).contains("rejected")
    });
    c.assert_no_panics();
}

/// With `--prefer remote`, a file the new mount's folder holds in another
/// version than the volume is replaced by the volume's version, and that
/// goes through the validator too: rejected, the folder keeps its own file
/// (not pushed either: no split-brain), and the fix replaces it.
#[test]
fn a_version_preferred_on_first_contact_is_validated_too() {
    let (c, m1, dir) = bad_volume_then_mount(&["--prefer", "remote"], |d| {
        std::fs::create_dir_all(d).unwrap();
        std::fs::write(d.join("app.conf"), "app of my own\n").unwrap();
    });
    let s = mount_list(&c, 2);
    assert!(
        s.contains("(validator exit 1: marker BROKEN found in ./app.conf)"),
        "{s}"
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(names(&dir), ["app.conf"]);
    assert_eq!(read(&dir.join("app.conf")), "app of my own\n");
    assert_eq!(read(&m1.join("app.conf")), "app 1 BROKEN\n");
    assert!(!mount_list(&c, 2).contains("split-brain"));
    assert!(!mount_list(&c, 1).contains("split-brain"));

    std::fs::write(m1.join("app.conf"), "app 2\n").unwrap();
    wait_content(&dir, "app.conf", "app 2\n", T);
    wait_content(&dir, "sites/site.conf", "site 1\n", T);
    wait_until(T, "in sync", || {
        let s = mount_list(&c, 2);
        !s.contains("rejected") && s.contains("in sync")
    });
    assert_eq!(read(&m1.join("app.conf")), "app 2\n");
    c.assert_no_panics();
}
