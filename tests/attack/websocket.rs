//! The live figures' WebSocket: a page of another site cannot open it with
//! the visitor's cookies (cross-site WebSocket hijacking), past
//! `api.max_websockets` one more is refused 503 before the upgrade, and a
//! client that sends an oversized message is cut off; the server-sent
//! event stream keeps its own cap.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::common::TestEnv;
use crate::{config, Server};

/// Sends a WebSocket handshake for `/stats/ws` with `extra` headers;
/// returns the connection and the status line.
fn handshake(port: u16, extra: &[(&str, &str)]) -> (TcpStream, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut request = format!(
        "GET /stats/ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    );
    for (k, v) in extra {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    s.write_all(request.as_bytes()).expect("write");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 8192 {
        match s.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => break,
        }
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let status = text.lines().next().unwrap_or_default().to_string();
    (s, status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_websocket_is_same_site_capped_and_bounded() {
    let env = TestEnv::new("attack_websocket").await;
    let port = crate::http::free_port();
    let cfg = config(
        &env,
        &[],
        port,
        "max_websockets = 1\nmax_sse_streams = 1",
        "",
    );
    // Live stats on: the attack suite's config turns them off.
    let text = std::fs::read_to_string(&cfg).expect("config").replace(
        "[live_stats]\nenabled = false",
        "[live_stats]\nenabled = true",
    );
    std::fs::write(&cfg, text).expect("config");
    let server = Server::start(&env, &cfg, "serve", port);

    // A page of another site: refused before the upgrade.
    for origin in ["http://evil.example", "null"] {
        let (_, status) = handshake(port, &[("Origin", origin)]);
        assert!(status.starts_with("HTTP/1.1 403"), "{origin}: {status}");
    }
    let (_, status) = handshake(port, &[("Sec-Fetch-Site", "cross-site")]);
    assert!(status.starts_with("HTTP/1.1 403"), "{status}");

    // The console's own page may (its origin is this API).
    let own = format!("http://127.0.0.1:{port}");
    // (The live consumer answers 503 until it reads the topics.)
    let mut opened = None;
    for _ in 0..100 {
        let (s, status) = handshake(port, &[("Origin", &own)]);
        if status.starts_with("HTTP/1.1 101") {
            opened = Some(s);
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut first = opened.expect("the live figures' WebSocket opens");
    // The cap: one more is refused while the first is open.
    let (_, status) = handshake(port, &[("Origin", &own)]);
    assert!(status.starts_with("HTTP/1.1 503"), "{status}");

    // An oversized message (64 KiB, masked as a client's must be) ends
    // the connection; the place it held is free again.
    let payload = vec![b'x'; 65_536];
    let mut frame = vec![0x81u8, 0x80 | 127];
    frame.extend_from_slice(&(payload.len() as u64).to_be_bytes());
    frame.extend_from_slice(&[1, 2, 3, 4]);
    frame.extend(
        payload
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ [1, 2, 3, 4][i % 4]),
    );
    let _ = first.write_all(&frame);
    let mut rest = Vec::new();
    let _ = first.read_to_end(&mut rest);
    drop(first);
    let mut freed = false;
    for _ in 0..50 {
        let (_, status) = handshake(port, &[("Origin", &own)]);
        if status.starts_with("HTTP/1.1 101") {
            freed = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(freed, "the oversized client's place was not given back");
    drop(server);
    env.cleanup().await;
}
