//! Object storage over the S3 protocol, against a real S3-compatible server (moto) that the
//! test starts. Needs moto: `pip install 'moto[server]'`. Without it this test fails (it does
//! not skip): the S3 path must be exercised wherever the tests run.

mod common;

use common::pages;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pages::{PagesCluster, SMALL_LAYERS, rebuild_scenario};

const BUCKET: &str = "sixfold-test";

/// A moto S3 server on a free port, killed on drop.
struct Moto {
    child: Child,
    port: u16,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One plain HTTP/1.1 request to moto (which does not check signatures); returns status and
/// body.
fn http(port: u16, method: &str, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    Ok((status, body))
}

fn start_moto() -> Moto {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let attempts: [(&str, Vec<String>); 2] = [
        ("moto_server", vec!["-p".into(), port.to_string()]),
        (
            "python3",
            vec![
                "-m".into(),
                "moto.server".into(),
                "-p".into(),
                port.to_string(),
            ],
        ),
    ];
    for (program, args) in attempts {
        let Ok(mut child) = Command::new(program)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
        else {
            continue;
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                break; // exited: not installed under this name
            }
            if http(port, "GET", "/").is_ok() {
                return Moto { child, port };
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    panic!(
        "moto is not installed or did not start: this test needs a local S3 server. \
         Install it with: pip install 'moto[server]'"
    );
}

/// Proves: with an S3 bucket as object storage (a real S3-protocol server, moto), storage
/// nodes upload their layer files and log to the bucket, and a node whose data directory is
/// deleted is rebuilt from the bucket plus its peers' logs and serves byte-identical pages
/// across the history, then keeps materializing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn wiped_node_is_rebuilt_from_an_s3_bucket() {
    let moto = start_moto();
    let (status, _) = http(moto.port, "PUT", &format!("/{BUCKET}")).expect("create bucket");
    assert_eq!(status, 200, "moto refused to create the bucket");
    let url = format!("s3://{BUCKET}/cluster-a");
    let endpoint = format!("http://127.0.0.1:{}", moto.port);
    let mut args: Vec<&str> = SMALL_LAYERS.to_vec();
    args.extend([
        "--object-store",
        &url,
        "--object-store-endpoint",
        &endpoint,
        "--object-store-allow-http",
        "--object-store-region",
        "us-east-1",
    ]);
    let env = [
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
    ];
    let mut cluster = PagesCluster::start(1, 32, &args, &env).await;
    rebuild_scenario(&mut cluster, 23).await;
    // The snapshots really are in the bucket, under each node's prefix.
    let (status, listing) = http(
        moto.port,
        "GET",
        &format!("/{BUCKET}?list-type=2&prefix=cluster-a/node-1/pg-0/"),
    )
    .expect("list bucket");
    assert_eq!(status, 200, "{listing}");
    assert!(
        listing.contains("cluster-a/node-1/pg-0/manifest"),
        "{listing}"
    );
    assert!(listing.contains("/layers/"), "no layer objects: {listing}");
}
