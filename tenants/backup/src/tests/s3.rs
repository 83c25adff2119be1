//! The `s3://` store against an S3-compatible server on loopback (moto in
//! server mode, started by the tests; without moto they print `SKIPPED`,
//! unless `CI` is set: then they fail), and against a one-answer HTTP
//! server for the error classification.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};
use tenantplane_control_db::error::report;
use tenantplane_control_db::states::BackupState;

use super::support::{actor, assert_same, exec, state, Env};
use crate::manifest::{Manifest, ServerKind};
use crate::rows::Reason;
use crate::store::{ArtifactStore, S3Config, S3Store, StoreError};
use crate::{create, restore_in_place, restore_new_tenant, sweep, verify};

const SECRET: &str = "test-secret-key";

/// moto's S3 server on a free loopback port; killed when the last test
/// holding it lets go.
struct Moto {
    child: Child,
    endpoint: String,
    _log: tempfile::NamedTempFile,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Moto {
    fn start() -> Option<Moto> {
        let installed = Command::new("python3")
            .args(["-c", "import moto.server"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !installed {
            if std::env::var_os("CI").is_some() {
                panic!("moto is required when CI is set: python3 -m pip install 'moto[server]'");
            }
            eprintln!("SKIPPED: moto is not installed (python3 -m pip install 'moto[server]')");
            return None;
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = tempfile::NamedTempFile::new().unwrap();
        let child = Command::new("python3")
            .args(["-m", "moto.server", "-H", "127.0.0.1", "-p"])
            .arg(port.to_string())
            .stdin(Stdio::null())
            .stdout(log.reopen().unwrap())
            .stderr(log.reopen().unwrap())
            .spawn()
            .unwrap();
        let mut moto = Moto {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
            _log: log,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match ureq::get(&moto.endpoint)
                .timeout(Duration::from_secs(2))
                .call()
            {
                Ok(_) | Err(ureq::Error::Status(..)) => return Some(moto),
                Err(_) => {}
            }
            let exited = moto.child.try_wait().unwrap();
            if exited.is_some() || Instant::now() > deadline {
                let log = std::fs::read_to_string(moto._log.path()).unwrap_or_default();
                panic!(
                    "moto did not answer at {} ({exited:?}):\n{log}",
                    moto.endpoint
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// The running moto, shared by the tests that overlap in time.
fn moto() -> Option<Arc<Moto>> {
    static SHARED: Mutex<Weak<Moto>> = Mutex::new(Weak::new());
    let mut shared = SHARED.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(m) = shared.upgrade() {
        return Some(m);
    }
    let m = Arc::new(Moto::start()?);
    *shared = Arc::downgrade(&m);
    Some(m)
}

fn config(endpoint: &str, bucket: &str, prefix: &str) -> S3Config {
    S3Config {
        bucket: bucket.into(),
        prefix: prefix.into(),
        endpoint: endpoint.into(),
        region: "us-east-1".into(),
        path_style: true,
        access_key_id: "test-key-id".into(),
        secret_access_key: SECRET.into(),
        session_token: None,
    }
}

/// A new, empty bucket (moto does not check signatures: a plain PUT).
fn new_bucket(moto: &Moto) -> String {
    let name = format!(
        "tp-test-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    );
    ureq::put(&format!("{}/{name}", moto.endpoint))
        .send_bytes(&[])
        .unwrap();
    name
}

fn store(moto: &Moto, bucket: &str, prefix: &str) -> S3Store {
    S3Store::new(config(&moto.endpoint, bucket, prefix)).unwrap()
}

fn keys(store: &dyn ArtifactStore, prefix: &str) -> Vec<String> {
    store
        .list(prefix)
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .collect()
}

#[test]
fn s3_store_puts_gets_lists_and_deletes() {
    let Some(moto) = moto() else {
        return;
    };
    let bucket = new_bucket(&moto);
    let store = store(&moto, &bucket, "prod/eu");
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("local");
    std::fs::write(&local, b"hello").unwrap();
    let empty = dir.path().join("empty");
    std::fs::write(&empty, b"").unwrap();

    store.put("tenants/t1/a.sqlite.gz", &local).unwrap();
    store.put("tenants/t2/b.pgcopy.gz", &local).unwrap();
    store.put("tenants/t2/empty", &empty).unwrap();
    assert!(store.exists("tenants/t1/a.sqlite.gz").unwrap());
    assert!(!store.exists("tenants/t1/zzz").unwrap());

    let back = dir.path().join("back");
    store.get("tenants/t1/a.sqlite.gz", &back).unwrap();
    assert_eq!(std::fs::read(&back).unwrap(), b"hello");
    store.get("tenants/t2/empty", &back).unwrap();
    assert_eq!(std::fs::read(&back).unwrap(), b"");
    let err = store.get("tenants/t1/missing", &back).unwrap_err();
    assert!(matches!(err, StoreError::NotFound(_)), "{err}");
    // Nothing of the failed download is left next to the destination.
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".tp-get-"))
        .collect();
    assert!(left.is_empty(), "{left:?}");

    let listed = store.list("tenants/").unwrap();
    let names: Vec<&str> = listed.iter().map(|o| o.key.as_str()).collect();
    assert_eq!(
        names,
        [
            "tenants/t1/a.sqlite.gz",
            "tenants/t2/b.pgcopy.gz",
            "tenants/t2/empty"
        ]
    );
    assert_eq!(listed[0].size, 5);
    let age = std::time::SystemTime::now()
        .duration_since(listed[0].modified)
        .unwrap_or_default();
    assert!(age < Duration::from_secs(300), "{age:?}");
    assert_eq!(keys(&store, "tenants/t2/").len(), 2);

    // The objects live under the prefix; the prefix stays out of keys.
    let root = self::store(&moto, &bucket, "");
    assert!(root.exists("prod/eu/tenants/t1/a.sqlite.gz").unwrap());
    assert_eq!(keys(&root, "").len(), 3);
    let other = self::store(&moto, &bucket, "prod/us");
    assert!(keys(&other, "").is_empty());

    store.delete("tenants/t1/a.sqlite.gz").unwrap();
    store.delete("tenants/t1/a.sqlite.gz").unwrap();
    assert!(!store.exists("tenants/t1/a.sqlite.gz").unwrap());
    assert!(matches!(
        store.put("../escape", &local),
        Err(StoreError::InvalidKey(_))
    ));
    assert!(store.url().starts_with("s3://"));
    assert!(!store.url().contains(SECRET));
    assert!(store.url().contains(&format!("{bucket}/prod/eu?endpoint=")));
    // A store is usable behind the trait object the worker installs.
    let shared: Arc<dyn ArtifactStore> = Arc::new(store);
    assert_eq!(keys(&*shared, "tenants/").len(), 2);
}

#[test]
fn s3_store_lists_across_pages() {
    let Some(moto) = moto() else {
        return;
    };
    let bucket = new_bucket(&moto);
    let store = store(&moto, &bucket, "p").with_page_size(2);
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("local");
    std::fs::write(&local, b"x").unwrap();
    let mut want = Vec::new();
    for i in 0..7 {
        let key = format!("tenants/t{}/b{i}.sqlite.gz", i % 3);
        store.put(&key, &local).unwrap();
        want.push(key);
    }
    // Outside the listed prefix: not listed.
    store.put("elsewhere/x", &local).unwrap();
    want.sort();

    // The server does cut the listing into pages of two.
    let b = Bucket::new(
        moto.endpoint.parse().unwrap(),
        UrlStyle::Path,
        bucket.clone(),
        "us-east-1",
    )
    .unwrap();
    let creds = Credentials::new("test-key-id", SECRET);
    let mut action = b.list_objects_v2(Some(&creds));
    action.with_max_keys(2);
    let answer = ureq::get(action.sign(Duration::from_secs(60)).as_str())
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    let page = rusty_s3::actions::ListObjectsV2::parse_response(&answer).unwrap();
    assert_eq!(page.contents.len(), 2);
    assert!(page.next_continuation_token.is_some());

    assert_eq!(keys(&store, "tenants/"), want);
    assert_eq!(keys(&store, "tenants/t1/").len(), 2);
    assert_eq!(keys(&store, "").len(), 8);
}

#[test]
fn s3_store_uploads_large_files_in_parts_and_aborts_leftovers() {
    let Some(moto) = moto() else {
        return;
    };
    let bucket = new_bucket(&moto);
    // 5 MiB is the smallest part S3 (and moto) take; three parts here.
    let store = store(&moto, &bucket, "big").with_parts(5 << 20, 5 << 20);
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("local");
    let data: Vec<u8> = (0..(11u32 << 20) + 3)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    std::fs::write(&local, &data).unwrap();
    store.put("tenants/t/large.sqlite.gz", &local).unwrap();
    let listed = store.list("tenants/").unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].size, data.len() as u64);
    let back = dir.path().join("back");
    store.get("tenants/t/large.sqlite.gz", &back).unwrap();
    assert!(std::fs::read(&back).unwrap() == data);
    let b = Bucket::new(
        moto.endpoint.parse().unwrap(),
        UrlStyle::Path,
        bucket.clone(),
        "us-east-1",
    )
    .unwrap();
    let creds = Credentials::new("test-key-id", SECRET);
    // A multipart upload's ETag ends in its number of parts.
    let url = b
        .head_object(Some(&creds), "big/tenants/t/large.sqlite.gz")
        .sign(Duration::from_secs(60));
    let head = ureq::head(url.as_str()).call().unwrap();
    let etag = head.header("ETag").unwrap_or_default();
    assert!(etag.ends_with("-3\""), "{etag}");

    // An upload a killed process left behind (moto dates every upload in
    // 2010, so it is old): removed by the sweep's `remove_incomplete`.
    for key in ["big/tenants/t/left.sqlite.gz", "other/kept.gz"] {
        let url = b
            .create_multipart_upload(Some(&creds), key)
            .sign(Duration::from_secs(60));
        ureq::post(url.as_str()).send_bytes(&[]).unwrap();
    }
    assert_eq!(store.remove_incomplete(Duration::from_secs(60)).unwrap(), 1);
    assert_eq!(store.remove_incomplete(Duration::from_secs(60)).unwrap(), 0);
    // Only under the store's prefix.
    let other = self::store(&moto, &bucket, "other");
    assert_eq!(other.remove_incomplete(Duration::ZERO).unwrap(), 1);
    assert_eq!(keys(&store, "").len(), 1);
}

#[test]
fn s3_store_missing_bucket_is_a_clear_permanent_error() {
    let Some(moto) = moto() else {
        return;
    };
    let store = store(&moto, "tp-test-no-such-bucket", "p");
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("local");
    std::fs::write(&local, b"x").unwrap();
    let failures = [
        store.put("tenants/t/a.gz", &local).unwrap_err(),
        store
            .get("tenants/t/a.gz", &dir.path().join("back"))
            .unwrap_err(),
        store.exists("tenants/t/a.gz").unwrap_err(),
        store.list("tenants/").unwrap_err(),
    ];
    for err in failures {
        let text = report(&err);
        assert!(
            matches!(err, StoreError::Remote { .. }),
            "not a remote error: {text}"
        );
        assert!(!err.is_transient(), "{text}");
        assert_eq!(err.status(), Some(404), "{text}");
        assert!(text.contains("NoSuchBucket"), "{text}");
        assert!(text.contains("tp-test-no-such-bucket"), "{text}");
        assert!(!text.contains(SECRET) && !text.contains("X-Amz-"), "{text}");
        let domain = err.for_tenant("shop", "storing the artifact");
        assert!(!domain.is_transient());
    }
    // Deleting from a missing bucket is an error too, not "already gone".
    assert!(store.delete("tenants/t/a.gz").is_err());
}

/// A loopback HTTP server that answers every request with `status` and
/// `body` (after reading the request whole).
fn answering(status: &'static str, body: &'static str) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            let _ = answer(conn, status, body);
        }
    });
    endpoint
}

fn answer(conn: TcpStream, status: &str, body: &str) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut len = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                len = value.trim().parse().unwrap_or(0);
            }
        }
    }
    std::io::copy(&mut reader.by_ref().take(len as u64), &mut std::io::sink())?;
    let mut conn = conn;
    write!(
        conn,
        "HTTP/1.1 {status}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    conn.flush()
}

#[test]
fn s3_errors_are_classified_by_status_and_keep_no_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("local");
    std::fs::write(&local, b"x").unwrap();
    let back = dir.path().join("back");

    // Wrong credentials: permanent, and says so.
    let denied = answering(
        "403 Forbidden",
        "<?xml version=\"1.0\"?><Error><Code>SignatureDoesNotMatch</Code><Message>The request signature we calculated does not match the signature you provided.</Message></Error>",
    );
    let s = S3Store::new(config(&denied, "bucket", "p")).unwrap();
    for (err, said) in [
        (s.put("tenants/t/a.gz", &local).unwrap_err(), true),
        (s.get("tenants/t/a.gz", &back).unwrap_err(), true),
        (s.list("").unwrap_err(), true),
        (s.delete("tenants/t/a.gz").unwrap_err(), true),
        // A HEAD answer has no body: the status alone tells.
        (s.exists("tenants/t/a.gz").unwrap_err(), false),
    ] {
        let text = report(&err);
        assert!(!err.is_transient(), "{text}");
        assert_eq!(err.status(), Some(403));
        let want = if said {
            "HTTP 403 SignatureDoesNotMatch: The request signature"
        } else {
            "HTTP 403 Forbidden (wrong credentials, or no permission)"
        };
        assert!(text.contains(want), "{text}");
        assert!(!text.contains(SECRET) && !text.contains("X-Amz-"), "{text}");
        assert!(!err
            .for_tenant("shop", "storing the artifact")
            .is_transient());
    }

    // Throttling and outages: transient, for the job's retry too.
    for (status, body) in [
        ("503 Service Unavailable", "<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>"),
        ("500 Internal Server Error", ""),
        ("429 Too Many Requests", ""),
    ] {
        let s = S3Store::new(config(&answering(status, body), "bucket", "")).unwrap();
        let err = s.put("tenants/t/a.gz", &local).unwrap_err();
        let text = report(&err);
        assert!(err.is_transient(), "{status}: {text}");
        assert!(err.for_tenant("shop", "storing the artifact").is_transient());
        assert!(text.contains(&format!("HTTP {}", &status[..3])), "{text}");
    }

    // Nobody listening: transient, without the request's URL.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let s = S3Store::new(config(&format!("http://127.0.0.1:{port}"), "bucket", "")).unwrap();
    let err = s.list("").unwrap_err();
    let text = report(&err);
    assert!(err.is_transient(), "{text}");
    assert_eq!(err.status(), None);
    assert!(
        !text.contains("X-Amz-") && !text.contains("test-key-id"),
        "{text}"
    );
    let debug = format!("{err:?}");
    assert!(!debug.contains("X-Amz-"), "{debug}");
}

/// A tenant backed up to S3, verified from it and restored from it, in
/// place and as a new tenant; the sweep keeps what rows point to.
#[test]
fn s3_backup_verify_and_restore_sqlite() {
    let Some(env) = Env::new(ServerKind::Sqlite) else {
        return;
    };
    let Some(moto) = moto() else {
        return;
    };
    let bucket = new_bucket(&moto);
    let s3 = store(&moto, &bucket, "tenantplane");
    let t = env.tenant("s3-shop", 2, 20);
    let before = state(&mut env.conn(&t.id));

    let b = create(&env.db, &s3, &t.id, Reason::Manual).unwrap();
    assert_eq!(b.state, BackupState::Completed.as_str());
    assert!(b.artifact.starts_with(&format!("tenants/{}/", t.id)));
    assert!(s3.exists(&b.artifact).unwrap());
    let dir = tempfile::tempdir().unwrap();
    let manifest_file = dir.path().join("manifest.json");
    s3.get(&Manifest::key_for(&b.artifact), &manifest_file)
        .unwrap();
    let stored = Manifest::from_json(&std::fs::read_to_string(&manifest_file).unwrap()).unwrap();
    assert_eq!(Some(stored), b.manifest);
    // Nothing went to the environment's file store.
    assert!(env.store.list("").unwrap().is_empty());

    let v = verify(&env.db, &s3, &b.id).unwrap();
    assert_eq!(
        v.state,
        BackupState::Verified.as_str(),
        "{:?}",
        v.verify_error
    );

    let mut c = env.conn(&t.id);
    exec(
        &mut c,
        "DELETE FROM reminder_log; UPDATE users SET full_name = 'changed';",
    );
    drop(c);
    let r = restore_in_place(&env.db, &s3, &b.id, &actor()).unwrap();
    let safety = r.safety_backup.unwrap();
    assert!(s3.exists(&safety.artifact).unwrap());
    assert_same(&before, &state(&mut env.conn(&t.id)), "restored from S3");

    let n = restore_new_tenant(&env.db, &s3, &b.id, "s3-shop-copy", None, &actor()).unwrap();
    assert_same(
        &before,
        &state(&mut env.conn(&n.tenant.id)),
        "restored from S3 as a new tenant",
    );

    // The sweep keeps every object a row points to and removes an orphan.
    let orphan = dir.path().join("orphan");
    File::create(&orphan).unwrap();
    s3.put(&format!("tenants/{}/orphan.sqlite.gz", t.id), &orphan)
        .unwrap();
    std::thread::sleep(Duration::from_millis(1100));
    let report = sweep(&env.db, &s3, crate::SweepAges::NOW).unwrap();
    assert_eq!(report.orphans_removed, 1, "{report:?}");
    assert!(s3.exists(&b.artifact).unwrap());
    assert!(s3.exists(&safety.artifact).unwrap());
    // Two backups, each an artifact and a manifest.
    assert_eq!(s3.list("tenants/").unwrap().len(), 4);
}
