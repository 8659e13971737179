//! A journal that cannot be written: a full disk, a read-only file system.
//!
//! The promise under test: while the journal cannot commit, every webhook request is answered
//! `503` (so Mailjet retries) and none of its events is stored; everything answered `200` before
//! is still there; `/readyz` says not ready; the process stays up; and once the disk takes writes
//! again the same bodies are accepted, each event stored exactly once.
//!
//! The file systems are real: a small tmpfs filled to `ENOSPC`, and an ext4 image on a loop
//! device whose kernel error handling turns it read-only under the running server. Mounting
//! needs root. Without it the tests print why they are skipped, unless `CI` is set, where a skip
//! would hide a regression and they fail instead.

mod common;

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Options, Server};

const ENOSPC: i32 = 28;
/// A disk error makes the kernel turn the file system read-only under every open file.
const EXT4_OPTIONS: &str = "loop,errors=remount-ro";

/// A file system mounted on a fresh temporary directory, unmounted on drop.
struct Mount {
    point: PathBuf,
    /// The file system image of a loop mount.
    image: Option<PathBuf>,
    /// Holds the mount point and the image. Dropped after the unmount.
    _tmp: tempfile::TempDir,
}

impl Mount {
    /// A tmpfs of `size` (e.g. `"8m"`).
    fn tmpfs(size: &str) -> Result<Mount, String> {
        let tmp = tempfile::tempdir().map_err(|e| format!("tempdir: {e}"))?;
        let point = tmp.path().join("mnt");
        std::fs::create_dir(&point).map_err(|e| format!("mkdir: {e}"))?;
        run(
            "mount",
            &["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"],
            &[&point],
        )?;
        Ok(Mount {
            point,
            image: None,
            _tmp: tmp,
        })
    }

    /// An ext4 image of `size_mb` on a loop device, mounted with `errors=remount-ro`.
    fn ext4_loop(size_mb: u64) -> Result<Mount, String> {
        let tmp = tempfile::tempdir().map_err(|e| format!("tempdir: {e}"))?;
        let image = tmp.path().join("ext4.img");
        let point = tmp.path().join("mnt");
        std::fs::create_dir(&point).map_err(|e| format!("mkdir: {e}"))?;
        std::fs::File::create(&image)
            .and_then(|f| f.set_len(size_mb << 20))
            .map_err(|e| format!("image: {e}"))?;
        run("mkfs.ext4", &["-q", "-F"], &[&image])?;
        run("mount", &["-o", EXT4_OPTIONS], &[&image, &point])?;
        Ok(Mount {
            point,
            image: Some(image),
            _tmp: tmp,
        })
    }

    /// What an operator does after an ext4 error: unmount, `e2fsck`, mount again.
    fn repair(&self) -> Result<(), String> {
        let image = self.image.as_deref().ok_or("not a loop mount")?;
        run("umount", &[], &[&self.point])?;
        let fsck = Command::new("e2fsck")
            .args(["-f", "-y"])
            .arg(image)
            .output()
            .map_err(|e| format!("cannot run e2fsck: {e}"))?;
        // 0: clean, 1: errors corrected; 4 and above: left uncorrected or failed.
        if fsck.status.code().is_none_or(|c| c >= 4) {
            return Err(format!(
                "e2fsck could not repair the image ({}): {}",
                fsck.status,
                String::from_utf8_lossy(&fsck.stdout)
            ));
        }
        run("mount", &["-o", EXT4_OPTIONS], &[image, &self.point])
    }

    fn path(&self) -> &Path {
        &self.point
    }

    fn remount(&self, mode: &str) -> Result<(), String> {
        run("mount", &["-o", &format!("remount,{mode}")], &[&self.point])
    }

    /// The block device under the mount, e.g. `loop3`.
    fn device(&self) -> String {
        let out = Command::new("findmnt")
            .args(["-n", "-o", "SOURCE"])
            .arg(&self.point)
            .output()
            .expect("findmnt");
        let source = String::from_utf8_lossy(&out.stdout).trim().to_string();
        source.rsplit('/').next().unwrap_or_default().to_string()
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if run("umount", &[], &[&self.point]).is_err() {
            let _ = run("umount", &["-l"], &[&self.point]);
        }
    }
}

/// Runs `program args paths...`; the error carries its stderr.
fn run(program: &str, args: &[&str], paths: &[&Path]) -> Result<(), String> {
    let out = Command::new(program)
        .args(args)
        .args(paths)
        .output()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{program} {args:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Mounts, or explains why the test cannot run: a failure under `CI`, a skip elsewhere.
fn mount_or_skip(test: &str, mount: Result<Mount, String>) -> Option<Mount> {
    match mount {
        Ok(m) => Some(m),
        Err(why) if std::env::var_os("CI").is_some() => {
            panic!("{test}: cannot mount its file system ({why}); CI must run this test as root")
        }
        Err(why) => {
            eprintln!("SKIPPED {test}: cannot mount its file system ({why}); run it as root");
            None
        }
    }
}

/// One webhook body (a v2 array) and the MessageIDs in it.
#[derive(Debug, Clone)]
struct Batch {
    ids: Vec<u64>,
    json: String,
}

/// Batch `n` of `series`: `count` distinct events whose payload pads each to about `pad` bytes,
/// so a batch needs fresh pages in the journal. MessageIDs are above 2^60.
fn batch(series: u64, n: u64, count: u64, pad: usize) -> Batch {
    let payload = "x".repeat(pad);
    let ids: Vec<u64> = (0..count)
        .map(|k| (1 << 60) + (series << 32) + (n << 8) + k)
        .collect();
    let events: Vec<String> = ids
        .iter()
        .map(|id| {
            format!(
                r#"{{"event":"sent","time":1780000000,"MessageID":{id},"email":"r{id}@example.com","mj_campaign_id":1,"mj_contact_id":2,"customcampaign":"disk","CustomID":"","Payload":"{payload}"}}"#
            )
        })
        .collect();
    Batch {
        ids,
        json: format!("[{}]", events.join(",")),
    }
}

/// What the receiver answered.
struct Answer {
    status: u16,
    retry_after: Option<String>,
    text: String,
}

async fn post(server: &Server, batch: &Batch) -> Answer {
    let r = common::client()
        .post(server.url("/webhooks/mailjet"))
        .header("content-type", "application/json")
        .body(batch.json.clone())
        .send()
        .await
        .expect("the server answers POST");
    let status = r.status().as_u16();
    let retry_after = r
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let text = r.text().await.unwrap_or_default();
    Answer {
        status,
        retry_after,
        text,
    }
}

/// The receipt of a `200`: (stored, duplicates).
fn receipt(answer: &Answer) -> (u64, u64) {
    let v: serde_json::Value = serde_json::from_str(&answer.text)
        .unwrap_or_else(|e| panic!("200 receipt is not JSON ({e}): {}", answer.text));
    (
        v["stored"].as_u64().expect("stored"),
        v["duplicates"].as_u64().expect("duplicates"),
    )
}

async fn status(server: &Server, path: &str) -> u16 {
    common::client()
        .get(server.url(path))
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {path}: the server does not answer: {e}"))
        .status()
        .as_u16()
}

/// Rows per MessageID, read from the SQLite file itself.
fn stored_counts(dir: &Path) -> HashMap<u64, usize> {
    let conn = common::open_journal(dir);
    let mut stmt = conn
        .prepare("SELECT message_id FROM events")
        .expect("prepare");
    let ids = stmt
        .query_map([], |r| r.get::<_, String>(0))
        .expect("query events");
    let mut counts = HashMap::new();
    for id in ids {
        let id: u64 = id
            .expect("row")
            .parse()
            .expect("message_id is an unsigned integer");
        *counts.entry(id).or_insert(0) += 1;
    }
    counts
}

/// Every acknowledged event is stored once; no refused one is stored at all.
fn check_journal(dir: &Path, acked: &HashSet<u64>, refused: &[Batch], server: &Server, what: &str) {
    let counts = stored_counts(dir);
    let mut missing: Vec<_> = acked
        .iter()
        .filter(|id| counts.get(id) != Some(&1))
        .collect();
    missing.sort_unstable();
    assert!(
        missing.is_empty(),
        "{what}: {} acknowledged events are not stored exactly once (first: {:?}); log tail:\n{}",
        missing.len(),
        &missing[..missing.len().min(5)],
        tail(server)
    );
    let stored_refused: Vec<_> = refused
        .iter()
        .flat_map(|b| &b.ids)
        .filter(|id| counts.contains_key(id))
        .collect();
    assert!(
        stored_refused.is_empty(),
        "{what}: {} events answered 503 are in the journal (first: {:?}); log tail:\n{}",
        stored_refused.len(),
        &stored_refused[..stored_refused.len().min(5)],
        tail(server)
    );
}

/// The server's first `journal commit failed` line, to show what the disk said.
fn first_commit_failure(server: &Server) -> String {
    server
        .logs()
        .into_iter()
        .find(|l| l.contains("journal commit failed"))
        .unwrap_or_else(|| {
            format!(
                "no `journal commit failed` line; log tail:\n{}",
                tail(server)
            )
        })
}

fn tail(server: &Server) -> String {
    let logs = server.logs();
    logs[logs.len().saturating_sub(30)..].join("\n")
}

/// Writes `path` until the file system reports `ENOSPC`; returns the bytes written.
fn fill(path: &Path) -> u64 {
    let mut file = std::fs::File::create(path).expect("create the filler file");
    let chunk = vec![0xa5u8; 64 << 10];
    let mut written = 0u64;
    loop {
        match file.write(&chunk) {
            Ok(0) => panic!("write returned 0 before ENOSPC"),
            Ok(n) => written += n as u64,
            Err(e) if e.raw_os_error() == Some(ENOSPC) => return written,
            Err(e) => panic!("filling {}: {e}", path.display()),
        }
    }
}

/// Posts `batch` (Mailjet retrying) until it gets a `200`, for up to `within`.
async fn post_until_accepted(server: &Server, batch: &Batch, within: Duration) -> Answer {
    let deadline = Instant::now() + within;
    loop {
        let answer = post(server, batch).await;
        if answer.status == 200 || Instant::now() > deadline {
            return answer;
        }
        assert_eq!(answer.status, 503, "unexpected answer: {}", answer.text);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn wait_for_status(server: &Server, path: &str, want: u16, within: Duration) -> u16 {
    let deadline = Instant::now() + within;
    loop {
        let got = status(server, path).await;
        if got == want || Instant::now() > deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Posts fresh batches while the journal cannot commit: each must be `503` with `Retry-After`.
/// Returns the refused batches.
async fn expect_refusals(server: &Server, series: u64, count: u64) -> Vec<Batch> {
    let mut refused = Vec::new();
    for n in 0..count {
        let b = batch(series, n, 20, 1024);
        let answer = post(server, &b).await;
        assert_eq!(
            answer.status,
            503,
            "a post to an unwritable journal was answered {}: {}\nlog tail:\n{}",
            answer.status,
            answer.text,
            tail(server)
        );
        assert!(answer.retry_after.is_some(), "503 without Retry-After");
        refused.push(b);
    }
    refused
}

/// Posts distinct batches to a full disk until three are refused; returns those. SQLite may
/// still find room in pages it already owns, so the first posts may succeed, and from then on
/// `200`s and `503`s may mix: each `200` goes into `acked`.
async fn post_until_refused(server: &Server, series: u64, acked: &mut HashSet<u64>) -> Vec<Batch> {
    let mut refused = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut n = 0;
    while refused.len() < 3 {
        assert!(
            n < 300 && Instant::now() < deadline,
            "{n} batches posted to a full disk and only {} refused; log tail:\n{}",
            refused.len(),
            tail(server)
        );
        let b = batch(series, n, 20, 1024);
        n += 1;
        let answer = post(server, &b).await;
        match answer.status {
            200 => acked.extend(&b.ids),
            503 => {
                assert!(answer.retry_after.is_some(), "503 without Retry-After");
                refused.push(b);
            }
            other => panic!(
                "a post to a full disk was answered {other}: {}",
                answer.text
            ),
        }
    }
    refused
}

/// Re-posts what was refused, as Mailjet would: all of it must now be stored, none of it as a
/// duplicate (a duplicate would mean a `503` had stored it after all).
async fn repost_refused(server: &Server, refused: &[Batch], acked: &mut HashSet<u64>) {
    for b in refused {
        let answer = post_until_accepted(server, b, Duration::from_secs(10)).await;
        assert_eq!(
            answer.status,
            200,
            "the journal does not take writes again: {}\nlog tail:\n{}",
            answer.text,
            tail(server)
        );
        assert_eq!(
            receipt(&answer),
            (b.ids.len() as u64, 0),
            "a refused batch was partly stored already: {}",
            answer.text
        );
        acked.extend(&b.ids);
    }
}

async fn storage_counters(server: &Server) -> (f64, f64) {
    (
        server
            .metric("bouncewatch_receiver_unavailable_total{reason=\"storage\"}")
            .await,
        server
            .metric("bouncewatch_journal_commit_failures_total")
            .await,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_disk_answers_503_stores_nothing_and_recovers_when_space_returns() {
    let test = "full_disk_answers_503_stores_nothing_and_recovers_when_space_returns";
    let Some(fs) = mount_or_skip(test, Mount::tmpfs("8m")) else {
        return;
    };
    let dir = fs.path().join("data");
    let server = Server::start_with(Options::default().data_dir(&dir));
    let mut acked = HashSet::new();

    for n in 0..3 {
        let b = batch(1, n, 10, 200);
        let answer = post(&server, &b).await;
        assert_eq!(answer.status, 200, "{}", answer.text);
        acked.extend(&b.ids);
    }

    let filler = fs.path().join("filler");
    let filled = fill(&filler);

    let refused = post_until_refused(&server, 2, &mut acked).await;
    eprintln!(
        "filled {filled} bytes; then {} batches refused",
        refused.len()
    );

    // A probe may still fit in WAL space left by a failed batch; once one fails, all do.
    let ready = wait_for_status(&server, "/readyz", 503, Duration::from_secs(5)).await;
    assert_eq!(
        ready,
        503,
        "/readyz on a full disk; log tail:\n{}",
        tail(&server)
    );
    for _ in 0..3 {
        assert_eq!(
            status(&server, "/readyz").await,
            503,
            "/readyz flapped on a full disk"
        );
    }
    assert_eq!(
        status(&server, "/healthz").await,
        200,
        "the process must stay up"
    );
    let (unavailable, failures) = storage_counters(&server).await;
    assert!(
        unavailable >= refused.len() as f64,
        "unavailable{{storage}} = {unavailable}"
    );
    assert!(failures > 0.0, "journal_commit_failures_total = {failures}");
    let failure = first_commit_failure(&server);
    eprintln!("{failure}");
    assert!(
        failure.contains("full"),
        "the commit failure should name the full disk"
    );
    check_journal(&dir, &acked, &refused, &server, "while the disk is full");

    std::fs::remove_file(&filler).expect("remove the filler file");
    repost_refused(&server, &refused, &mut acked).await;
    let fresh = batch(3, 0, 20, 1024);
    let answer = post(&server, &fresh).await;
    assert_eq!(
        answer.status, 200,
        "fresh batch after space returned: {}",
        answer.text
    );
    acked.extend(&fresh.ids);
    let ready = wait_for_status(&server, "/readyz", 200, Duration::from_secs(5)).await;
    assert_eq!(
        ready,
        200,
        "/readyz after space returned; log tail:\n{}",
        tail(&server)
    );

    server.kill9();
    let server = Server::start_with(Options::default().data_dir(&dir));
    check_journal(&dir, &acked, &[], &server, "after a restart");
    let total: usize = stored_counts(&dir).values().sum();
    assert_eq!(
        total,
        acked.len(),
        "rows in the journal vs events acknowledged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_on_a_full_disk_answers_503_until_space_returns() {
    let test = "restart_on_a_full_disk_answers_503_until_space_returns";
    let Some(fs) = mount_or_skip(test, Mount::tmpfs("8m")) else {
        return;
    };
    let dir = fs.path().join("data");
    let opts = Options::default().data_dir(&dir);
    let server = Server::start_with(opts.clone());
    let mut acked = HashSet::new();
    let before = batch(1, 0, 10, 200);
    assert_eq!(post(&server, &before).await.status, 200);
    acked.extend(&before.ids);
    let filler = fs.path().join("filler");
    fill(&filler);
    // A crash, an OOM kill or a deploy while the disk is full.
    server.kill9();

    let server = match Server::try_start(opts) {
        Ok(server) => server,
        Err((exit, logs)) => panic!(
            "bouncewatch does not start on a full disk ({exit:?}), so Mailjet gets connection \
             errors instead of 503 and nothing recovers by itself when space returns:\n{}",
            logs.join("\n")
        ),
    };
    let refused = post_until_refused(&server, 2, &mut acked).await;
    let ready = wait_for_status(&server, "/readyz", 503, Duration::from_secs(5)).await;
    assert_eq!(ready, 503, "/readyz on a full disk");
    std::fs::remove_file(&filler).expect("remove the filler file");
    repost_refused(&server, &refused, &mut acked).await;
    let ready = wait_for_status(&server, "/readyz", 200, Duration::from_secs(5)).await;
    assert_eq!(ready, 200, "/readyz after space returned");
    check_journal(&dir, &acked, &[], &server, "after space returned");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_file_system_acknowledges_nothing_and_recovers_when_writable() {
    let test = "read_only_file_system_acknowledges_nothing_and_recovers_when_writable";
    let Some(fs) = mount_or_skip(test, Mount::tmpfs("8m")) else {
        return;
    };
    let dir = fs.path().join("data");
    let opts = Options::default().data_dir(&dir);
    let server = Server::start_with(opts.clone());
    let mut acked = HashSet::new();
    let before = batch(1, 0, 10, 200);
    assert_eq!(post(&server, &before).await.status, 200);
    acked.extend(&before.ids);

    let refused = match fs.remount("ro") {
        Ok(()) => {
            // Some kernels may allow it; then the running server must refuse every post.
            let refused = expect_refusals(&server, 2, 5).await;
            assert_eq!(
                status(&server, "/readyz").await,
                503,
                "/readyz on a read-only disk"
            );
            assert_eq!(
                status(&server, "/healthz").await,
                200,
                "the process must stay up"
            );
            let (unavailable, failures) = storage_counters(&server).await;
            assert!(
                unavailable >= 5.0 && failures > 0.0,
                "{unavailable} / {failures}"
            );
            fs.remount("rw").expect("remount rw");
            repost_refused(&server, &refused, &mut acked).await;
            server.kill9();
            refused
        }
        Err(why) => {
            // Linux refuses `remount,ro` while a file on the file system is open for writing,
            // and the journal is: a running server never sees its tmpfs turn read-only (the
            // ext4 test below covers a disk going read-only under it). What remains is a
            // server started on a read-only file system: it must not acknowledge anything.
            assert!(
                why.contains("busy"),
                "remount,ro failed for another reason: {why}"
            );
            eprintln!("remount,ro refused while the journal is open (as expected on Linux): {why}");
            server.kill9();
            fs.remount("ro")
                .expect("remount ro once the server is gone");
            let refused = match Server::try_start(opts.clone()) {
                Err((exit, logs)) => {
                    assert!(
                        exit.is_some_and(|s| !s.success()),
                        "the server neither started nor failed: {exit:?}"
                    );
                    let text = logs.join("\n");
                    assert!(
                        text.contains("journal") && text.contains("readonly"),
                        "the refusal to start should name the read-only journal:\n{text}"
                    );
                    Vec::new()
                }
                Ok(server) => {
                    let refused = expect_refusals(&server, 2, 5).await;
                    assert_eq!(status(&server, "/readyz").await, 503, "/readyz read-only");
                    refused
                }
            };
            fs.remount("rw").expect("remount rw");
            let server = Server::start_with(opts.clone());
            repost_refused(&server, &refused, &mut acked).await;
            refused
        }
    };
    let after = batch(3, 0, 10, 200);
    let server = Server::start_with(opts);
    assert_eq!(post(&server, &after).await.status, 200);
    acked.extend(&after.ids);
    check_journal(
        &dir,
        &acked,
        &[],
        &server,
        "after the file system is writable again",
    );
    let total: usize = stored_counts(&dir).values().sum();
    assert_eq!(
        total,
        acked.len(),
        "rows vs acknowledged ({} refused)",
        refused.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_turning_read_only_under_the_server_acknowledges_nothing() {
    let test = "disk_turning_read_only_under_the_server_acknowledges_nothing";
    let Some(disk) = mount_or_skip(test, Mount::ext4_loop(32)) else {
        return;
    };
    let dir = disk.path().join("data");
    let opts = Options::default().data_dir(&dir);
    let server = Server::start_with(opts.clone());
    let mut acked = HashSet::new();
    for n in 0..5 {
        let b = batch(1, n, 10, 200);
        let answer = post(&server, &b).await;
        assert_eq!(answer.status, 200, "{}", answer.text);
        acked.extend(&b.ids);
    }

    // What `errors=remount-ro` does on a real disk error: the kernel turns the file system
    // read-only under every open file, the journal's included. `trigger_fs_error` is ext4's
    // own switch for raising such an error.
    let trigger = PathBuf::from(format!("/sys/fs/ext4/{}/trigger_fs_error", disk.device()));
    std::fs::write(&trigger, "bouncewatch disk_full test\n")
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", trigger.display()));

    let refused = expect_refusals(&server, 2, 5).await;
    assert_eq!(
        status(&server, "/readyz").await,
        503,
        "/readyz on a read-only disk"
    );
    assert_eq!(
        status(&server, "/healthz").await,
        200,
        "the process must stay up"
    );
    let (unavailable, failures) = storage_counters(&server).await;
    assert!(unavailable >= 5.0, "unavailable{{storage}} = {unavailable}");
    assert!(failures > 0.0, "journal_commit_failures_total = {failures}");
    eprintln!("{}", first_commit_failure(&server));
    let logs = server.logs();
    server.kill9();

    // An ext4 that turned read-only on an error stays so until it is unmounted and checked.
    disk.repair().expect("repair the file system");

    let server = Server::start_with(opts);
    let counts = stored_counts(&dir);
    let lost: Vec<_> = acked
        .iter()
        .filter(|id| counts.get(id) != Some(&1))
        .collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged events lost when the disk failed; server log before the kill:\n{}",
        lost.len(),
        logs[logs.len().saturating_sub(30)..].join("\n")
    );
    check_journal(
        &dir,
        &acked,
        &refused,
        &server,
        "after the disk was repaired",
    );
    repost_refused(&server, &refused, &mut acked).await;
    let total: usize = stored_counts(&dir).values().sum();
    assert_eq!(
        total,
        acked.len(),
        "rows in the journal vs events acknowledged"
    );
}
