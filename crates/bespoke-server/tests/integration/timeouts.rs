//! Slow clients (issue 13): a stalled request head, a stalled body, a body trickled past the
//! request deadline, idle keep-alive connections and the connection limit. Each test talks raw
//! TCP, since an HTTP client library would not stall on purpose. Every wait is bounded by
//! `tokio::time::timeout`; no test sleeps and hopes.

use std::net::SocketAddr;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::{TestServer, start_with};

/// Far past every timeout the tests configure (1 s), so that a slow machine never fails a test;
/// a server that never cuts a client off still fails it.
const BOUND: Duration = Duration::from_secs(10);

/// What a raw connection got.
#[derive(Debug, PartialEq)]
enum Answer {
    /// A complete response: status and JSON body (`Null` when the body is not JSON).
    Response(u16, Value),
    /// The server closed the connection (or reset it) without a response.
    Closed,
}

fn addr(ts: &TestServer) -> SocketAddr {
    ts.base
        .strip_prefix("http://")
        .expect("http base")
        .parse()
        .expect("socket address")
}

async fn connect(ts: &TestServer) -> TcpStream {
    TcpStream::connect(addr(ts)).await.expect("connect")
}

/// A complete response at the start of `data`, if there is one (`content-length` bodies only,
/// which is what the server sends).
fn parse_response(data: &[u8]) -> Option<(Answer, usize)> {
    let end = data.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = std::str::from_utf8(&data[..end]).expect("UTF-8 head");
    let status: u16 = head.split(' ').nth(1)?.parse().ok()?;
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0);
    let body = data.get(end..end + length)?;
    let value = serde_json::from_slice(body).unwrap_or(Value::Null);
    Some((Answer::Response(status, value), end + length))
}

/// Reads until a complete response arrives or the server closes; panics after [`BOUND`].
async fn answer(stream: &mut TcpStream) -> Answer {
    let mut data = Vec::new();
    let read = async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => data.extend_from_slice(&buf[..n]),
            }
            if let Some((answer, _)) = parse_response(&data) {
                return answer;
            }
        }
        assert!(
            data.is_empty(),
            "incomplete response before close: {:?}",
            String::from_utf8_lossy(&data)
        );
        Answer::Closed
    };
    tokio::time::timeout(BOUND, read)
        .await
        .expect("the server neither answered nor closed the connection in time")
}

fn post_events_head(ts: &TestServer, content_length: usize) -> String {
    format!(
        "POST /v1/events HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}\r\n\
         content-type: application/json\r\ncontent-length: {content_length}\r\n\r\n",
        ts.admin_key
    )
}

fn assert_timeout(got: &Answer, code: &str) {
    let Answer::Response(status, body) = got else {
        panic!("expected a 408 {code}, got {got:?}");
    };
    assert_eq!(*status, 408, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty())
    );
}

/// Stored events of `user`, 0 when the user does not exist.
async fn stored_events(ts: &TestServer, user: &str) -> usize {
    let (status, body) = ts.get(&format!("/v1/users/{user}/events")).await;
    match status {
        StatusCode::NOT_FOUND => 0,
        StatusCode::OK => body["events"].as_array().expect("events").len(),
        other => panic!("listing events: {other} {body}"),
    }
}

#[tokio::test]
async fn issue_13_stalled_heads_and_bodies_are_cut_off() {
    let ts = start_with(|s| {
        s.server.header_timeout_secs = 1;
        s.server.body_timeout_secs = 1;
    })
    .await;
    let event = json!({ "events": [{ "user": "slow", "item": "i1", "type": "view" }] }).to_string();

    // (a) A head that never ends, (d) a connection that sends nothing at all.
    let mut head = connect(&ts).await;
    head.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    let mut silent = connect(&ts).await;
    // (b) 4 of 50 body bytes; (c) 2 of 5, the whole event being longer than both.
    let mut long_body = connect(&ts).await;
    long_body
        .write_all(format!("{}{}", post_events_head(&ts, 50), &event[..4]).as_bytes())
        .await
        .unwrap();
    let mut short_body = connect(&ts).await;
    short_body
        .write_all(format!("{}{}", post_events_head(&ts, 5), &event[..2]).as_bytes())
        .await
        .unwrap();

    // Meanwhile an ordinary client is served.
    assert_eq!(ts.get("/healthz").await.0, StatusCode::OK);
    ts.events(&[("fast", "i1", "view")]).await;

    // hyper writes no response when a head times out; it closes the connection.
    assert_eq!(answer(&mut head).await, Answer::Closed);
    assert_eq!(answer(&mut silent).await, Answer::Closed);
    assert_timeout(&answer(&mut long_body).await, "body_timeout");
    assert_timeout(&answer(&mut short_body).await, "body_timeout");

    // Nothing of the half-received bodies was stored; the ordinary write was.
    assert_eq!(stored_events(&ts, "slow").await, 0);
    assert_eq!(stored_events(&ts, "fast").await, 1);
    assert_eq!(ts.counts().await["events"], 1);
    ts.stop().await;
}

#[tokio::test]
async fn issue_13_idle_keep_alive_connections_are_closed() {
    let ts = start_with(|s| s.server.header_timeout_secs = 1).await;
    let mut conn = connect(&ts).await;
    conn.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    assert!(matches!(answer(&mut conn).await, Answer::Response(200, _)));
    // The connection stays open for another request, until the head timeout closes it idle.
    assert_eq!(answer(&mut conn).await, Answer::Closed);
    ts.stop().await;
}

#[tokio::test]
async fn issue_13_a_body_trickled_past_the_request_deadline_is_cut_off() {
    let ts = start_with(|s| {
        s.server.request_timeout_secs = 1;
        // Far above the trickle's pauses, so that only the request deadline can fire.
        s.server.body_timeout_secs = 30;
    })
    .await;
    let (mut rx, mut tx) = connect(&ts).await.into_split();
    tx.write_all(post_events_head(&ts, 1000).as_bytes())
        .await
        .unwrap();
    // One byte every 100 ms: never idle long enough for the body timeout, never done.
    let trickle = tokio::spawn(async move {
        let mut ticker = tokio::time::interval(Duration::from_millis(100));
        loop {
            ticker.tick().await;
            if tx.write_all(b" ").await.is_err() {
                break;
            }
        }
    });
    let got = tokio::time::timeout(BOUND, async {
        let mut data = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let n = rx.read(&mut buf).await.unwrap_or(0);
            assert!(n > 0, "closed without an answer");
            data.extend_from_slice(&buf[..n]);
            if let Some((answer, _)) = parse_response(&data) {
                return answer;
            }
        }
    })
    .await
    .expect("the request deadline did not fire");
    trickle.abort();
    assert_timeout(&got, "request_timeout");
    assert_eq!(ts.counts().await["events"], 0);
    ts.stop().await;
}

#[tokio::test]
async fn issue_13_long_admin_routes_have_no_request_deadline() {
    let ts = start_with(|s| s.server.request_timeout_secs = 1).await;
    let mut conn = connect(&ts).await;
    let head = format!(
        "PUT /v1/loops/slow HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}\r\n\
         content-type: application/json\r\ncontent-length: 2\r\n\r\n{{",
        ts.admin_key
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    // Hold the rest of the body back for twice the deadline, which would have fired meanwhile
    // (a slow server could only start its clock later, never earlier).
    tokio::time::sleep(Duration::from_secs(2)).await;
    conn.write_all(b"}").await.unwrap();
    let got = answer(&mut conn).await;
    assert!(matches!(got, Answer::Response(200, _)), "{got:?}");
    ts.stop().await;
}

#[tokio::test]
async fn issue_13_connections_past_the_limit_wait_for_a_free_slot() {
    let ts = start_with(|s| s.server.max_connections = 2).await;
    let request = b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n";
    // Two connections served and kept alive take both slots.
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut conn = connect(&ts).await;
        conn.write_all(request).await.unwrap();
        assert!(matches!(answer(&mut conn).await, Answer::Response(200, _)));
        held.push(conn);
    }
    // A third is connected by the kernel (listen backlog) but not served...
    let mut waiting = connect(&ts).await;
    waiting.write_all(request).await.unwrap();
    let mut byte = [0u8; 1];
    assert!(
        tokio::time::timeout(Duration::from_millis(500), waiting.read(&mut byte))
            .await
            .is_err(),
        "a connection past max_connections was served"
    );
    // ...until one of the two closes.
    drop(held.pop());
    assert!(matches!(
        answer(&mut waiting).await,
        Answer::Response(200, _)
    ));
    // The one still held works as before.
    held[0].write_all(request).await.unwrap();
    assert!(matches!(
        answer(&mut held[0]).await,
        Answer::Response(200, _)
    ));
    ts.stop().await;
}
