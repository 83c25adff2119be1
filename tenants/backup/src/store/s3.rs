//! S3-compatible object storage (`s3://<bucket>/<prefix>`): AWS S3, MinIO,
//! Ceph RGW, Cloudflare R2 and the like.
//!
//! Each request is a SigV4 presigned URL made by `rusty-s3` (sans-IO: it
//! signs and parses, it sends nothing), sent with the workspace's blocking
//! `ureq`. So the store blocks like every other backup function and brings
//! no async runtime; `object_store` would bring tokio, reqwest and hyper.
//!
//! Object names are `<prefix>/<key>`. Uploads up to [`MULTIPART_THRESHOLD`]
//! are one `PUT`; larger files go up as a multipart upload in parts of
//! [`PART_SIZE`] (more when 10,000 parts would not hold the file), which S3
//! makes visible only once complete: a reader sees the whole object or none.
//! A failed upload is aborted; one a killed process left behind is aborted by
//! [`ArtifactStore::remove_incomplete`] (the backup sweep).
//!
//! Errors keep what the store answered ([`S3Status`]) or the connection's
//! error as their source; presigned URLs (their signature is a credential
//! for [`SIGNED_FOR`]) never appear in an error's text.

use std::fmt;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::time::{Duration, SystemTime};

use rusty_s3::actions::{CreateMultipartUpload, ListObjectsV2};
use rusty_s3::{Bucket, Credentials, Map, Method, S3Action, UrlStyle};
use tenantplane_fleet::urls::redact_url;

use super::{check_key, ArtifactStore, StoreError, StoredObject};

/// How long a presigned request stays valid. Each request is signed right
/// before it is sent and S3 checks the time when the request arrives, so
/// this only needs to cover clock skew.
pub const SIGNED_FOR: Duration = Duration::from_secs(15 * 60);
/// Files larger than this go up as a multipart upload.
pub const MULTIPART_THRESHOLD: u64 = 64 << 20;
/// The part size of a multipart upload (S3: at least 5 MiB, at most 10,000
/// parts).
pub const PART_SIZE: u64 = 64 << 20;
const MAX_PARTS: u64 = 10_000;
/// Tries per part of a multipart upload (a transient failure of one part
/// does not restart a large upload).
const PART_ATTEMPTS: u32 = 3;
/// Keys per list request (S3's maximum).
const PAGE_SIZE: usize = 1000;
/// The most of an error answer that is read.
const ERROR_BODY_LIMIT: u64 = 64 << 10;
/// The most of a listing answer that is read.
const LIST_BODY_LIMIT: u64 = 32 << 20;

const CREDENTIALS_HINT: &str = "credentials never go in the store URL: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN if needed) in the environment";

/// Where an S3 store points and how it signs, from its URL and the
/// environment ([`S3Config::from_url`]).
#[derive(Clone)]
pub struct S3Config {
    pub bucket: String,
    /// Prefix of every object name, without slashes at either end; empty
    /// for none.
    pub prefix: String,
    /// `http(s)://host[:port][/path]`.
    pub endpoint: String,
    pub region: String,
    /// Path-style requests (`<endpoint>/<bucket>/<key>`) instead of
    /// virtual-host style (`<bucket>.<endpoint host>/<key>`).
    pub path_style: bool,
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

impl fmt::Debug for S3Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Config")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("endpoint", &redact_url(&self.endpoint))
            .field("region", &self.region)
            .field("path_style", &self.path_style)
            .finish_non_exhaustive()
    }
}

impl S3Config {
    /// Reads `s3://<bucket>[/<prefix>][?endpoint=<url>&region=<r>&style=path|virtual]`
    /// and the environment `env` answers for:
    ///
    /// - endpoint: the URL's `endpoint`, else `TENANTPLANE_S3_ENDPOINT`,
    ///   `AWS_ENDPOINT_URL_S3`, `AWS_ENDPOINT_URL`, else AWS
    ///   (`https://s3.<region>.amazonaws.com`);
    /// - region: the URL's `region`, else `AWS_REGION`,
    ///   `AWS_DEFAULT_REGION`, else `us-east-1`;
    /// - style: the URL's `style`, else path style for a custom endpoint
    ///   and virtual-host style for AWS;
    /// - credentials: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
    ///   optionally `AWS_SESSION_TOKEN`; never from the URL (refused).
    pub fn from_url(
        url: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<S3Config, StoreError> {
        // Errors show the URL without its query (an endpoint parameter could
        // hold a password) and with any user info hidden.
        let shown = redact_url(url.split(['?', '#']).next().unwrap_or(url));
        let bad = |why: String| StoreError::Config(format!("{shown}: {why}"));
        let env = |name: &str| env(name).filter(|v| !v.trim().is_empty());

        let parsed = url::Url::parse(url).map_err(|e| bad(format!("not a URL ({e})")))?;
        if parsed.scheme() != "s3" {
            return Err(bad("not an s3:// URL".into()));
        }
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(bad(CREDENTIALS_HINT.into()));
        }
        if parsed.port().is_some() || parsed.fragment().is_some() {
            return Err(bad(
                "the form is s3://<bucket>[/<prefix>][?endpoint=…&region=…&style=path|virtual]"
                    .into(),
            ));
        }
        let bucket = parsed.host_str().unwrap_or_default().to_string();
        check_bucket(&bucket).map_err(bad)?;
        // The prefix as written (the parsed path has `..` resolved).
        let written = url
            .strip_prefix("s3://")
            .unwrap_or(url)
            .split(['?', '#'])
            .next()
            .unwrap_or_default();
        let prefix = written
            .split_once('/')
            .map(|(_, path)| path.trim_matches('/'))
            .unwrap_or_default()
            .to_string();
        if !prefix.is_empty() && check_key(&prefix).is_err() {
            return Err(bad(format!(
                "invalid prefix {prefix:?}: segments of letters, digits, '.', '_', '-' separated by '/', none starting with '.'"
            )));
        }
        let (mut endpoint, mut region, mut style) = (None, None, None);
        for (name, value) in parsed.query_pairs() {
            let value = Some(value.into_owned()).filter(|v| !v.is_empty());
            match name.as_ref() {
                "endpoint" => endpoint = value,
                "region" => region = value,
                "style" => style = value,
                other => {
                    return Err(bad(format!(
                        "unknown parameter {other:?} (known: endpoint, region, style); {CREDENTIALS_HINT}"
                    )))
                }
            }
        }
        let region = region
            .or_else(|| env("AWS_REGION"))
            .or_else(|| env("AWS_DEFAULT_REGION"))
            .unwrap_or_else(|| "us-east-1".to_string());
        let endpoint = endpoint
            .or_else(|| env("TENANTPLANE_S3_ENDPOINT"))
            .or_else(|| env("AWS_ENDPOINT_URL_S3"))
            .or_else(|| env("AWS_ENDPOINT_URL"));
        let path_style = match style.as_deref() {
            Some("path") => true,
            Some("virtual") => false,
            Some(other) => {
                return Err(bad(format!("style must be path or virtual, not {other:?}")))
            }
            None => endpoint.is_some(),
        };
        let endpoint = endpoint.unwrap_or_else(|| format!("https://s3.{region}.amazonaws.com"));
        let (Some(access_key_id), Some(secret_access_key)) =
            (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY"))
        else {
            return Err(bad(
                "the S3 store needs AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the environment"
                    .into(),
            ));
        };
        Ok(S3Config {
            bucket,
            prefix,
            endpoint,
            region,
            path_style,
            access_key_id,
            secret_access_key,
            session_token: env("AWS_SESSION_TOKEN"),
        })
    }
}

/// S3's bucket naming rules: 3–63 of `[a-z0-9.-]`, starting and ending
/// with a letter or digit.
fn check_bucket(name: &str) -> Result<(), String> {
    let ok = (3..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-'))
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid bucket name {name:?}: 3 to 63 lowercase letters, digits, '.' and '-'"
        ))
    }
}

/// Artifacts as objects in an S3-compatible bucket: `<prefix>/<key>`.
pub struct S3Store {
    bucket: Bucket,
    credentials: Credentials,
    /// `""` or `"<prefix>/"`.
    prefix: String,
    shown: String,
    agent: ureq::Agent,
    page_size: usize,
    multipart_threshold: u64,
    part_size: u64,
}

impl fmt::Debug for S3Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Store")
            .field("url", &self.shown)
            .finish_non_exhaustive()
    }
}

impl S3Store {
    /// Checks the settings; contacts nothing.
    pub fn new(config: S3Config) -> Result<S3Store, StoreError> {
        let bad = |why: String| StoreError::Config(format!("s3://{}: {why}", config.bucket));
        check_bucket(&config.bucket).map_err(bad)?;
        let prefix = config.prefix.trim_matches('/');
        if !prefix.is_empty() && check_key(prefix).is_err() {
            return Err(bad(format!("invalid prefix {prefix:?}")));
        }
        if config.region.is_empty()
            || !config
                .region
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
        {
            return Err(bad(format!("invalid region {:?}", config.region)));
        }
        let mut endpoint = url::Url::parse(&config.endpoint).map_err(|e| {
            bad(format!(
                "the endpoint {} is not a URL ({e})",
                redact_url(&config.endpoint)
            ))
        })?;
        if !endpoint.username().is_empty() || endpoint.password().is_some() {
            return Err(bad(format!(
                "the endpoint has user info; {CREDENTIALS_HINT}"
            )));
        }
        if endpoint.query().is_some() || endpoint.fragment().is_some() {
            return Err(bad("the endpoint takes no query".into()));
        }
        if !endpoint.path().ends_with('/') {
            let path = format!("{}/", endpoint.path());
            endpoint.set_path(&path);
        }
        if !config.path_style
            && matches!(
                endpoint.host(),
                Some(url::Host::Ipv4(_) | url::Host::Ipv6(_))
            )
        {
            return Err(bad(
                "virtual-host style needs a host name in the endpoint, not an address: add style=path"
                    .into(),
            ));
        }
        let shown_endpoint = endpoint.as_str().trim_end_matches('/').to_string();
        let style = if config.path_style {
            UrlStyle::Path
        } else {
            UrlStyle::VirtualHost
        };
        let bucket = Bucket::new(
            endpoint,
            style,
            config.bucket.clone(),
            config.region.clone(),
        )
        .map_err(|e| bad(format!("the endpoint {shown_endpoint} does not fit: {e}")))?;
        let credentials = match &config.session_token {
            Some(token) => {
                Credentials::new_with_token(&config.access_key_id, &config.secret_access_key, token)
            }
            None => Credentials::new(&config.access_key_id, &config.secret_access_key),
        };
        let shown = format!(
            "s3://{}{}{prefix}?endpoint={shown_endpoint}&region={}&style={}",
            config.bucket,
            if prefix.is_empty() { "" } else { "/" },
            config.region,
            if config.path_style { "path" } else { "virtual" },
        );
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(10))
            .timeout_read(Duration::from_secs(60))
            .timeout_write(Duration::from_secs(60))
            // A redirect (a bucket in another region) is an error to show,
            // not a request to repeat elsewhere.
            .redirects(0)
            .user_agent(concat!("tenantplane/", env!("CARGO_PKG_VERSION")))
            .build();
        Ok(S3Store {
            bucket,
            credentials,
            prefix: if prefix.is_empty() {
                String::new()
            } else {
                format!("{prefix}/")
            },
            shown,
            agent,
            page_size: PAGE_SIZE,
            multipart_threshold: MULTIPART_THRESHOLD,
            part_size: PART_SIZE,
        })
    }

    /// [`S3Config::from_url`] with the process environment.
    pub fn from_env(url: &str) -> Result<S3Store, StoreError> {
        S3Store::new(S3Config::from_url(url, &|name| std::env::var(name).ok())?)
    }

    /// Keys per list request.
    #[cfg(test)]
    pub(crate) fn with_page_size(mut self, keys: usize) -> S3Store {
        self.page_size = keys;
        self
    }

    /// Files larger than `threshold` go up in parts of `part_size`.
    #[cfg(test)]
    pub(crate) fn with_parts(mut self, threshold: u64, part_size: u64) -> S3Store {
        self.multipart_threshold = threshold;
        self.part_size = part_size;
        self
    }

    fn object(&self, key: &str) -> Result<String, StoreError> {
        check_key(key)?;
        Ok(format!("{}{key}", self.prefix))
    }

    fn creds(&self) -> Option<&Credentials> {
        Some(&self.credentials)
    }

    fn fail(&self, what: String, failure: Failure) -> StoreError {
        failure.into_store(format!("{what} ({})", self.shown))
    }

    /// Sends one request; anything but a 2xx answer is a [`Failure`].
    fn execute(&self, request: ureq::Request, body: Body<'_>) -> Result<ureq::Response, Failure> {
        let result = match body {
            Body::Empty => request.call(),
            Body::Bytes(bytes) => request.send_bytes(bytes),
            Body::File { len, file } => request
                .set("Content-Length", &len.to_string())
                .send(file.take(len)),
        };
        match result {
            Ok(response) if (200..300).contains(&response.status()) => Ok(response),
            Ok(response) | Err(ureq::Error::Status(_, response)) => {
                Err(Failure::Status(S3Status::read(response)))
            }
            Err(ureq::Error::Transport(t)) => Err(Failure::Transport(Box::new(t))),
        }
    }

    fn put_single(&self, key: &str, object: &str, file: &File, len: u64) -> Result<(), StoreError> {
        let url = self
            .bucket
            .put_object(self.creds(), object)
            .sign(SIGNED_FOR);
        self.execute(self.agent.put(url.as_str()), Body::File { len, file })
            .map_err(|f| self.fail(format!("cannot store {key}"), f))?;
        Ok(())
    }

    fn put_multipart(
        &self,
        key: &str,
        object: &str,
        file: &File,
        size: u64,
    ) -> Result<(), StoreError> {
        let what = || format!("cannot store {key}");
        let url = self
            .bucket
            .create_multipart_upload(self.creds(), object)
            .sign(SIGNED_FOR);
        let answer = self
            .execute(
                self.agent.post(url.as_str()).set("Content-Length", "0"),
                Body::Empty,
            )
            .and_then(|r| read_text(r, ERROR_BODY_LIMIT))
            .map_err(|f| self.fail(what(), f))?;
        let created = CreateMultipartUpload::parse_response(&answer)
            .map_err(|e| self.fail(what(), Failure::Malformed(Box::new(e))))?;
        let upload_id = created.upload_id().to_string();
        let done = self
            .upload_parts(object, &upload_id, file, size)
            .and_then(|etags| self.complete(object, &upload_id, &etags))
            .map_err(|f| self.fail(what(), f));
        if done.is_err() {
            let url = self
                .bucket
                .abort_multipart_upload(self.creds(), object, &upload_id)
                .sign(SIGNED_FOR);
            if let Err(f) = self.execute(self.agent.delete(url.as_str()), Body::Empty) {
                let e = self.fail(format!("cannot abort the upload of {key}"), f);
                tracing::warn!(key, error = %tenantplane_control_db::error::report(&e),
                    "unfinished upload left behind; the backup sweep aborts it");
            }
        }
        done
    }

    /// Uploads the parts in order; returns their ETags.
    fn upload_parts(
        &self,
        object: &str,
        upload_id: &str,
        mut file: &File,
        size: u64,
    ) -> Result<Vec<String>, Failure> {
        let part_size = part_size_for(size, self.part_size);
        let parts = size.div_ceil(part_size);
        let mut etags = Vec::new();
        for index in 0..parts {
            let number = u16::try_from(index + 1)
                .map_err(|_| Failure::Malformed("more than 65,535 parts".into()))?;
            let offset = index * part_size;
            let len = part_size.min(size - offset);
            let mut attempt = 1;
            let etag = loop {
                file.seek(SeekFrom::Start(offset)).map_err(Failure::Local)?;
                let url = self
                    .bucket
                    .upload_part(self.creds(), object, number, upload_id)
                    .sign(SIGNED_FOR);
                match self.execute(self.agent.put(url.as_str()), Body::File { len, file }) {
                    Ok(response) => match response.header("ETag") {
                        Some(etag) => break etag.to_string(),
                        None => {
                            return Err(Failure::Malformed(
                                format!("no ETag for part {number}").into(),
                            ))
                        }
                    },
                    Err(f) if f.is_transient() && attempt < PART_ATTEMPTS => {
                        std::thread::sleep(Duration::from_secs(u64::from(attempt)));
                        attempt += 1;
                    }
                    Err(f) => return Err(f),
                }
            };
            etags.push(etag);
        }
        Ok(etags)
    }

    fn complete(&self, object: &str, upload_id: &str, etags: &[String]) -> Result<(), Failure> {
        let action = self.bucket.complete_multipart_upload(
            self.creds(),
            object,
            upload_id,
            etags.iter().map(String::as_str),
        );
        let url = action.sign(SIGNED_FOR);
        let body = action.body();
        let response = self.execute(self.agent.post(url.as_str()), Body::Bytes(body.as_bytes()))?;
        let status = response.status();
        // S3 may answer 200 and still report an error in the body.
        let answer = read_text(response, ERROR_BODY_LIMIT)?;
        if xml_first(&answer, "Error").is_some() {
            return Err(Failure::Status(S3Status::from_body(status, &answer, None)));
        }
        Ok(())
    }

    /// `HEAD` on the bucket: a 404 on an object is "no such key" only when
    /// the bucket is there (a `HEAD` answer has no body to tell).
    fn bucket_missing(&self) -> Option<Failure> {
        let url = self.bucket.head_bucket(self.creds()).sign(SIGNED_FOR);
        match self.execute(self.agent.head(url.as_str()), Body::Empty) {
            Ok(_) => None,
            Err(Failure::Status(s)) if s.status == 404 => Some(Failure::Status(S3Status {
                code: Some("NoSuchBucket".into()),
                message: Some(format!("the bucket {} does not exist", self.bucket.name())),
                ..s
            })),
            Err(f) => Some(f),
        }
    }

    fn abort(&self, object: &str, upload_id: &str) -> Result<bool, Failure> {
        let url = self
            .bucket
            .abort_multipart_upload(self.creds(), object, upload_id)
            .sign(SIGNED_FOR);
        match self.execute(self.agent.delete(url.as_str()), Body::Empty) {
            Ok(_) => Ok(true),
            Err(Failure::Status(s)) if s.code.as_deref() == Some("NoSuchUpload") => Ok(false),
            Err(f) => Err(f),
        }
    }
}

impl ArtifactStore for S3Store {
    fn url(&self) -> String {
        self.shown.clone()
    }

    /// One `PUT` up to the multipart threshold, else a multipart upload;
    /// S3 shows an object only once it is whole.
    fn put(&self, key: &str, local: &Path) -> Result<(), StoreError> {
        let object = self.object(key)?;
        let file = File::open(local)
            .map_err(StoreError::io(format!("cannot read {}", local.display())))?;
        let size = file
            .metadata()
            .map_err(StoreError::io(format!("cannot stat {}", local.display())))?
            .len();
        if size <= self.multipart_threshold {
            self.put_single(key, &object, &file, size)
        } else {
            self.put_multipart(key, &object, &file, size)
        }
    }

    /// Downloads to a temporary file next to `dest`, checks the size the
    /// store announced, and renames it into place.
    fn get(&self, key: &str, dest: &Path) -> Result<(), StoreError> {
        let object = self.object(key)?;
        let what = || format!("cannot fetch {key}");
        let url = self
            .bucket
            .get_object(self.creds(), &object)
            .sign(SIGNED_FOR);
        let response = match self.execute(self.agent.get(url.as_str()), Body::Empty) {
            Ok(r) => r,
            Err(f) if f.is_missing_object() => return Err(StoreError::NotFound(key.to_string())),
            Err(f) => return Err(self.fail(what(), f)),
        };
        let announced: Option<u64> = response
            .header("Content-Length")
            .and_then(|v| v.trim().parse().ok());
        let dir = dest
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let mut tmp = tempfile::Builder::new()
            .prefix(".tp-get-")
            .tempfile_in(dir)
            .map_err(StoreError::io(format!(
                "cannot create a file in {}",
                dir.display()
            )))?;
        let mut reader = response.into_reader();
        let mut buf = vec![0u8; 1 << 16];
        let mut got: u64 = 0;
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.fail(what(), Failure::Body(e))),
            };
            tmp.write_all(&buf[..n])
                .map_err(StoreError::io(format!("cannot write {}", dest.display())))?;
            got += n as u64;
        }
        if let Some(want) = announced.filter(|&want| want != got) {
            return Err(self.fail(
                what(),
                Failure::Body(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("the download ended after {got} of {want} bytes"),
                )),
            ));
        }
        tmp.persist(dest)
            .map_err(|e| StoreError::io(format!("cannot write {}", dest.display()))(e.error))?;
        Ok(())
    }

    fn delete(&self, key: &str) -> Result<(), StoreError> {
        let object = self.object(key)?;
        let url = self
            .bucket
            .delete_object(self.creds(), &object)
            .sign(SIGNED_FOR);
        match self.execute(self.agent.delete(url.as_str()), Body::Empty) {
            Ok(_) => Ok(()),
            Err(f) if f.is_missing_object() => Ok(()),
            Err(f) => Err(self.fail(format!("cannot delete {key}"), f)),
        }
    }

    fn exists(&self, key: &str) -> Result<bool, StoreError> {
        let object = self.object(key)?;
        let what = || format!("cannot look up {key}");
        let url = self
            .bucket
            .head_object(self.creds(), &object)
            .sign(SIGNED_FOR);
        match self.execute(self.agent.head(url.as_str()), Body::Empty) {
            Ok(_) => Ok(true),
            Err(Failure::Status(s)) if s.status == 404 => match self.bucket_missing() {
                None => Ok(false),
                Some(f) => Err(self.fail(what(), f)),
            },
            Err(f) => Err(self.fail(what(), f)),
        }
    }

    /// `ListObjectsV2`, page after page (continuation tokens).
    fn list(&self, prefix: &str) -> Result<Vec<StoredObject>, StoreError> {
        let what = || format!("cannot list {prefix:?}");
        let full_prefix = format!("{}{prefix}", self.prefix);
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut action = self.bucket.list_objects_v2(self.creds());
            action.with_prefix(full_prefix.as_str());
            action.with_max_keys(self.page_size);
            if let Some(t) = &token {
                action.with_continuation_token(t.as_str());
            }
            let url = action.sign(SIGNED_FOR);
            let answer = self
                .execute(self.agent.get(url.as_str()), Body::Empty)
                .and_then(|r| read_text(r, LIST_BODY_LIMIT))
                .map_err(|f| self.fail(what(), f))?;
            let page = ListObjectsV2::parse_response(&answer)
                .map_err(|e| self.fail(what(), Failure::Malformed(Box::new(e))))?;
            for object in page.contents {
                let Some(key) = object.key.strip_prefix(&self.prefix) else {
                    continue;
                };
                // Whatever else is in the bucket under the prefix (a folder
                // marker, a foreign name) is not an artifact.
                if check_key(key).is_err() {
                    continue;
                }
                out.push(StoredObject {
                    key: key.to_string(),
                    size: object.size.unwrap_or(0),
                    // A missing or unreadable time counts as new: the sweep
                    // removes only old objects.
                    modified: object
                        .last_modified
                        .as_deref()
                        .and_then(parse_time)
                        .unwrap_or_else(SystemTime::now),
                });
            }
            match page.next_continuation_token.filter(|t| !t.is_empty()) {
                Some(next) if token.as_deref() != Some(next.as_str()) => token = Some(next),
                Some(_) => {
                    return Err(self.fail(
                        what(),
                        Failure::Malformed("the same continuation token twice".into()),
                    ))
                }
                None => break,
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    /// Aborts the multipart uploads under the prefix started before
    /// `older_than` ago (`ListMultipartUploads`, then `AbortMultipartUpload`
    /// each).
    fn remove_incomplete(&self, older_than: Duration) -> Result<usize, StoreError> {
        let what = || "cannot list unfinished uploads".to_string();
        let cutoff = SystemTime::now()
            .checked_sub(older_than)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let mut removed = 0;
        let mut marker: Option<(String, String)> = None;
        loop {
            // rusty-s3 has no ListMultipartUploads action: sign it with its
            // signer.
            let mut query = Map::new();
            query.insert("uploads", "");
            if !self.prefix.is_empty() {
                query.insert("prefix", self.prefix.as_str());
            }
            if let Some((key, id)) = &marker {
                query.insert("key-marker", key.as_str());
                query.insert("upload-id-marker", id.as_str());
            }
            let url = rusty_s3::signing::sign(
                &jiff::Timestamp::now(),
                Method::Get,
                self.bucket.base_url().clone(),
                self.credentials.key(),
                self.credentials.secret(),
                self.credentials.token(),
                self.bucket.region(),
                SIGNED_FOR.as_secs(),
                query.iter(),
                Map::new().iter(),
            );
            let answer = self
                .execute(self.agent.get(url.as_str()), Body::Empty)
                .and_then(|r| read_text(r, LIST_BODY_LIMIT))
                .map_err(|f| self.fail(what(), f))?;
            let page = parse_uploads(&answer);
            for upload in page.uploads {
                let old = upload.initiated.is_some_and(|t| t < cutoff);
                if old && upload.key.starts_with(&self.prefix) {
                    let aborted = self.abort(&upload.key, &upload.upload_id).map_err(|f| {
                        self.fail(format!("cannot abort the upload of {}", upload.key), f)
                    })?;
                    if aborted {
                        tracing::info!(key = %upload.key, "unfinished upload aborted");
                        removed += 1;
                    }
                }
            }
            match page.next {
                Some(next) if marker.as_ref() != Some(&next) => marker = Some(next),
                _ => break,
            }
        }
        Ok(removed)
    }
}

/// A request body.
enum Body<'a> {
    Empty,
    Bytes(&'a [u8]),
    /// `len` bytes from the file's current position.
    File {
        len: u64,
        file: &'a File,
    },
}

/// Why a request failed.
#[derive(Debug)]
enum Failure {
    /// The store answered with something other than 2xx.
    Status(S3Status),
    /// No answer: DNS, connection, TLS, I/O on the socket.
    Transport(Box<ureq::Transport>),
    /// The answer's body broke off or came short.
    Body(io::Error),
    /// The answer is not what S3 sends.
    Malformed(Box<dyn std::error::Error + Send + Sync>),
    /// Reading the local file failed.
    Local(io::Error),
}

impl Failure {
    fn is_transient(&self) -> bool {
        match self {
            Failure::Status(s) => s.is_transient(),
            Failure::Transport(t) => transport_is_transient(t.kind()),
            Failure::Body(_) => true,
            Failure::Malformed(_) | Failure::Local(_) => false,
        }
    }

    /// A 404 that is not about the bucket.
    fn is_missing_object(&self) -> bool {
        matches!(self, Failure::Status(s) if s.status == 404 && s.code.as_deref() != Some("NoSuchBucket"))
    }

    fn into_store(self, what: String) -> StoreError {
        let transient = self.is_transient();
        let (status, source): (Option<u16>, Box<dyn std::error::Error + Send + Sync>) = match self {
            Failure::Status(s) => (Some(s.status), Box::new(s)),
            Failure::Transport(t) => (None, Box::new(Unreachable(t))),
            Failure::Body(e) => (None, Box::new(e)),
            Failure::Malformed(e) => (None, e),
            Failure::Local(source) => return StoreError::Io { what, source },
        };
        StoreError::Remote {
            what,
            status,
            transient,
            source,
        }
    }
}

/// 5xx (but 501 Not Implemented), 408 and 429, and S3's own codes for
/// "try again" (`RequestTimeout` comes as a 400).
fn status_is_transient(status: u16, code: Option<&str>) -> bool {
    (status >= 500 && status != 501)
        || matches!(status, 408 | 429)
        || matches!(
            code,
            Some("RequestTimeout" | "SlowDown" | "InternalError" | "ServiceUnavailable")
        )
}

/// A failed DNS look-up or connection, or a socket error: the network or
/// the store may be back soon. A bad URL, a proxy's refusal or an answer
/// that is not HTTP are not cured by waiting.
fn transport_is_transient(kind: ureq::ErrorKind) -> bool {
    use ureq::ErrorKind as K;
    matches!(kind, K::Dns | K::ConnectionFailed | K::Io | K::ProxyConnect)
}

/// A connection failure without its URL (a presigned URL's signature is a
/// credential).
struct Unreachable(Box<ureq::Transport>);

impl fmt::Display for Unreachable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.kind())?;
        if let Some(message) = self.0.message() {
            write!(f, ": {message}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Unreachable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::error::Error for Unreachable {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(&*self.0)
    }
}

/// What an S3-compatible store answered instead of success: the status and
/// the `Code`/`Message` of its XML error body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Status {
    pub status: u16,
    pub code: Option<String>,
    pub message: Option<String>,
    pub request_id: Option<String>,
}

impl S3Status {
    fn read(response: ureq::Response) -> S3Status {
        let status = response.status();
        let request_id = response.header("x-amz-request-id").map(str::to_string);
        let mut body = String::new();
        // A body that cannot be read leaves the status alone to tell.
        let _ = response
            .into_reader()
            .take(ERROR_BODY_LIMIT)
            .read_to_string(&mut body);
        S3Status::from_body(status, &body, request_id)
    }

    fn from_body(status: u16, body: &str, request_id: Option<String>) -> S3Status {
        S3Status {
            status,
            code: xml_first(body, "Code").filter(|c| !c.is_empty()),
            message: xml_first(body, "Message").filter(|m| !m.is_empty()),
            request_id: request_id.or_else(|| xml_first(body, "RequestId")),
        }
    }

    pub fn is_transient(&self) -> bool {
        status_is_transient(self.status, self.code.as_deref())
    }
}

impl fmt::Display for S3Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HTTP {}", self.status)?;
        match (&self.code, &self.message) {
            (Some(code), Some(message)) => write!(f, " {code}: {message}")?,
            (Some(code), None) => write!(f, " {code}")?,
            (None, Some(message)) => write!(f, ": {message}")?,
            (None, None) => {
                let reason = match self.status {
                    301 | 307 => " (the bucket is in another region or behind another endpoint)",
                    400 => " Bad Request",
                    403 => " Forbidden (wrong credentials, or no permission)",
                    404 => " Not Found",
                    _ => "",
                };
                f.write_str(reason)?;
            }
        }
        if let Some(id) = &self.request_id {
            write!(f, " (request id {id})")?;
        }
        Ok(())
    }
}

impl std::error::Error for S3Status {}

/// The answer's body as text, at most `limit` bytes.
fn read_text(response: ureq::Response, limit: u64) -> Result<String, Failure> {
    let mut text = String::new();
    response
        .into_reader()
        .take(limit + 1)
        .read_to_string(&mut text)
        .map_err(Failure::Body)?;
    if text.len() as u64 > limit {
        return Err(Failure::Malformed(
            format!("an answer longer than {limit} bytes").into(),
        ));
    }
    Ok(text)
}

/// The part size for a file of `size` bytes: `base`, or more (whole MiB)
/// when 10,000 parts of `base` would not hold it.
fn part_size_for(size: u64, base: u64) -> u64 {
    const MIB: u64 = 1 << 20;
    let least = size.div_ceil(MAX_PARTS);
    if least <= base {
        base.max(1)
    } else {
        least.div_ceil(MIB) * MIB
    }
}

fn parse_time(text: &str) -> Option<SystemTime> {
    chrono::DateTime::parse_from_rfc3339(text.trim())
        .ok()
        .map(SystemTime::from)
}

/// One unfinished multipart upload.
#[derive(Debug, PartialEq)]
struct Upload {
    key: String,
    upload_id: String,
    initiated: Option<SystemTime>,
}

#[derive(Debug, PartialEq)]
struct UploadsPage {
    uploads: Vec<Upload>,
    /// The key and upload id markers of the next page, when truncated.
    next: Option<(String, String)>,
}

/// A `ListMultipartUploadsResult`.
fn parse_uploads(xml: &str) -> UploadsPage {
    let uploads = xml_elements(xml, "Upload")
        .into_iter()
        .filter_map(|block| {
            Some(Upload {
                key: xml_first(block, "Key")?,
                upload_id: xml_first(block, "UploadId")?,
                initiated: xml_first(block, "Initiated").and_then(|t| parse_time(&t)),
            })
        })
        .collect();
    let truncated = xml_first(xml, "IsTruncated").as_deref() == Some("true");
    let next = match (
        truncated,
        xml_first(xml, "NextKeyMarker"),
        xml_first(xml, "NextUploadIdMarker"),
    ) {
        (true, Some(key), Some(id)) => Some((key, id)),
        _ => None,
    };
    UploadsPage { uploads, next }
}

/// The raw contents of each `<tag>…</tag>` (no attributes) in `xml`. S3's
/// answers never nest an element inside one of the same name.
fn xml_elements<'a>(xml: &'a str, tag: &str) -> Vec<&'a str> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(start) = rest.find(&open) {
        let after = &rest[start + open.len()..];
        let Some(end) = after.find(&close) else {
            break;
        };
        out.push(&after[..end]);
        rest = &after[end + close.len()..];
    }
    out
}

/// The text of the first `<tag>…</tag>`, entities decoded.
fn xml_first(xml: &str, tag: &str) -> Option<String> {
    xml_elements(xml, tag).first().map(|raw| xml_unescape(raw))
}

/// Decodes XML's five named entities and character references.
fn xml_unescape(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let tail = &rest[amp..];
        let decoded = tail.find(';').and_then(|semi| {
            let entity = &tail[1..semi];
            let c = match entity {
                "amp" => Some('&'),
                "lt" => Some('<'),
                "gt" => Some('>'),
                "quot" => Some('"'),
                "apos" => Some('\''),
                _ => entity
                    .strip_prefix("#x")
                    .and_then(|h| u32::from_str_radix(h, 16).ok())
                    .or_else(|| entity.strip_prefix('#').and_then(|d| d.parse().ok()))
                    .and_then(char::from_u32),
            }?;
            Some((c, semi + 1))
        });
        match decoded {
            Some((c, len)) => {
                out.push(c);
                rest = &tail[len..];
            }
            None => {
                out.push('&');
                rest = &tail[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| vars.get(name).cloned()
    }

    const KEYS: &[(&str, &str)] = &[
        ("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE"),
        ("AWS_SECRET_ACCESS_KEY", "very-secret"),
    ];

    #[test]
    fn config_from_url_and_environment() {
        let c = S3Config::from_url("s3://backups/prod/eu", &env(KEYS)).unwrap();
        assert_eq!(c.bucket, "backups");
        assert_eq!(c.prefix, "prod/eu");
        assert_eq!(c.region, "us-east-1");
        assert_eq!(c.endpoint, "https://s3.us-east-1.amazonaws.com");
        assert!(!c.path_style);
        assert_eq!(c.session_token, None);
        let dbg = format!("{c:?}");
        assert!(
            !dbg.contains("very-secret") && !dbg.contains("AKID"),
            "{dbg}"
        );

        let mut vars = KEYS.to_vec();
        vars.extend([
            ("AWS_REGION", "eu-central-1"),
            ("AWS_ENDPOINT_URL", "http://aws-endpoint:9000"),
            ("AWS_SESSION_TOKEN", "tok"),
        ]);
        let c = S3Config::from_url("s3://backups/", &env(&vars)).unwrap();
        assert_eq!(c.prefix, "");
        assert_eq!(c.region, "eu-central-1");
        assert_eq!(c.endpoint, "http://aws-endpoint:9000");
        assert!(c.path_style);
        assert_eq!(c.session_token.as_deref(), Some("tok"));

        vars.push(("TENANTPLANE_S3_ENDPOINT", "http://ours:9000"));
        let c = S3Config::from_url("s3://backups", &env(&vars)).unwrap();
        assert_eq!(c.endpoint, "http://ours:9000");
        let c = S3Config::from_url(
            "s3://backups/p?endpoint=http://minio.internal:9000&region=local&style=virtual",
            &env(&vars),
        )
        .unwrap();
        assert_eq!(c.endpoint, "http://minio.internal:9000");
        assert_eq!(c.region, "local");
        assert!(!c.path_style);

        let store = S3Store::new(c).unwrap();
        assert_eq!(
            store.url(),
            "s3://backups/p?endpoint=http://minio.internal:9000&region=local&style=virtual"
        );
        let dbg = format!("{store:?}");
        assert!(!dbg.contains("very-secret"), "{dbg}");
    }

    #[test]
    fn bad_urls_are_refused_without_echoing_secrets() {
        let cases = [
            ("s3://AKID:very-secret@backups/p", "AWS_ACCESS_KEY_ID"),
            (
                "s3://backups/p?secret_access_key=very-secret",
                "unknown parameter",
            ),
            (
                "s3://backups/p?endpoint=http://u:very-secret@h:9000",
                "user info",
            ),
            ("s3://Backups/p", "invalid bucket name"),
            ("s3://b/p", "invalid bucket name"),
            ("s3://backups/a/../b", "invalid prefix"),
            ("s3://backups/p?style=sideways", "style must be"),
            ("s3://backups:9000/p", "the form is"),
            ("s3://backups/p?endpoint=ftp://h", "does not fit"),
            (
                "s3://backups/p?endpoint=http://127.0.0.1:9000&style=virtual",
                "add style=path",
            ),
            ("s3://backups/.hidden", "invalid prefix"),
        ];
        for (url, want) in cases {
            let err = S3Config::from_url(url, &env(KEYS))
                .and_then(S3Store::new)
                .unwrap_err()
                .to_string();
            assert!(err.contains(want), "{url}: {err}");
            assert!(!err.contains("very-secret"), "{url}: {err}");
            assert!(matches!(
                S3Config::from_url(url, &env(KEYS)).and_then(S3Store::new),
                Err(StoreError::Config(_))
            ));
        }
        let err = S3Config::from_url("s3://backups", &env(&[]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("AWS_SECRET_ACCESS_KEY"), "{err}");
    }

    #[test]
    fn statuses_and_connection_failures_are_classified() {
        for (status, code, transient) in [
            (500, None, true),
            (502, None, true),
            (503, Some("SlowDown"), true),
            (504, None, true),
            (501, Some("NotImplemented"), false),
            (429, None, true),
            (408, None, true),
            (400, Some("RequestTimeout"), true),
            (400, Some("InvalidArgument"), false),
            (403, Some("SignatureDoesNotMatch"), false),
            (403, Some("InvalidAccessKeyId"), false),
            (404, Some("NoSuchBucket"), false),
            (301, Some("PermanentRedirect"), false),
        ] {
            assert_eq!(
                status_is_transient(status, code),
                transient,
                "{status} {code:?}"
            );
        }
        use ureq::ErrorKind as K;
        for kind in [K::Dns, K::ConnectionFailed, K::Io, K::ProxyConnect] {
            assert!(transport_is_transient(kind), "{kind:?}");
        }
        for kind in [
            K::InvalidUrl,
            K::UnknownScheme,
            K::BadStatus,
            K::ProxyUnauthorized,
        ] {
            assert!(!transport_is_transient(kind), "{kind:?}");
        }
    }

    #[test]
    fn error_bodies_are_read() {
        let body = r#"<?xml version="1.0" encoding="UTF-8"?>
<Error><Code>NoSuchBucket</Code><Message>The specified bucket does not exist</Message><BucketName>nope</BucketName><RequestId>4442587FB7D0A2F9</RequestId></Error>"#;
        let s = S3Status::from_body(404, body, None);
        assert_eq!(s.code.as_deref(), Some("NoSuchBucket"));
        assert_eq!(
            s.to_string(),
            "HTTP 404 NoSuchBucket: The specified bucket does not exist (request id 4442587FB7D0A2F9)"
        );
        assert!(!s.is_transient());
        let s = S3Status::from_body(403, "", None);
        assert_eq!(
            s.to_string(),
            "HTTP 403 Forbidden (wrong credentials, or no permission)"
        );
        let f = Failure::Status(S3Status::from_body(404, "", None));
        assert!(f.is_missing_object());
        let f = Failure::Status(S3Status::from_body(404, body, None));
        assert!(!f.is_missing_object());
    }

    #[test]
    fn xml_helpers() {
        assert_eq!(
            xml_unescape("a &amp; b &lt;c&gt; &quot;&apos; &#65;&#x42; &bogus; &"),
            "a & b <c> \"' AB &bogus; &"
        );
        assert_eq!(xml_elements("<a>1</a><ab>x</ab><a>2</a>", "a"), ["1", "2"]);
        assert_eq!(xml_first("<a/>", "a"), None);
        let page = parse_uploads(
            r#"<ListMultipartUploadsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
<Bucket>b</Bucket><KeyMarker></KeyMarker><UploadIdMarker></UploadIdMarker>
<NextKeyMarker>p/t/b.gz</NextKeyMarker><NextUploadIdMarker>id-2</NextUploadIdMarker>
<MaxUploads>2</MaxUploads><IsTruncated>true</IsTruncated>
<Upload><Key>p/t/a.gz</Key><UploadId>id-1</UploadId><Initiator><ID>x</ID></Initiator><Initiated>2010-11-10T20:48:33.000Z</Initiated></Upload>
<Upload><Key>p/t/b&amp;.gz</Key><UploadId>id-2</UploadId><Initiated>not a time</Initiated></Upload>
</ListMultipartUploadsResult>"#,
        );
        assert_eq!(page.uploads.len(), 2);
        assert_eq!(page.uploads[0].key, "p/t/a.gz");
        assert_eq!(
            page.uploads[0].initiated,
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_289_422_113))
        );
        assert_eq!(page.uploads[1].key, "p/t/b&.gz");
        assert_eq!(page.uploads[1].initiated, None);
        assert_eq!(page.next, Some(("p/t/b.gz".into(), "id-2".into())));
        assert_eq!(
            parse_uploads("<ListMultipartUploadsResult><IsTruncated>false</IsTruncated></ListMultipartUploadsResult>"),
            UploadsPage { uploads: vec![], next: None }
        );
    }

    #[test]
    fn part_sizes_keep_within_ten_thousand_parts() {
        assert_eq!(part_size_for(100 << 20, PART_SIZE), PART_SIZE);
        let huge = 5u64 << 40; // 5 TiB, S3's largest object
        let part = part_size_for(huge, PART_SIZE);
        assert!(huge.div_ceil(part) <= MAX_PARTS);
        assert_eq!(part % (1 << 20), 0);
        assert_eq!(part_size_for(10, 4), 4);
    }
}
