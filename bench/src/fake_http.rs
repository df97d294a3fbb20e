//! A tiny HTTP/1.1 server on loopback standing in for what a homeserver
//! calls out to (a push gateway, an application service): every request
//! is recorded (its arrival time, path, `Authorization` header and JSON
//! body) and answered 200 with a fixed JSON body. Blocking threads, one a
//! connection, keep-alive, `Content-Length` or chunked bodies; the arrival
//! time is taken when the body has been read, before it is parsed.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::Context;
use serde_json::Value;

/// One request received.
pub struct Received {
    pub at: Instant,
    pub path: String,
    pub authorization: Option<String>,
    pub body: Value,
}

/// What has been received, and a wake-up for the waiting task.
#[derive(Default)]
pub struct Inbox {
    pub received: Mutex<Vec<Received>>,
    pub notify: tokio::sync::Notify,
}

pub struct FakeHttp {
    /// `http://{address}{path}`.
    pub url: String,
    pub inbox: Arc<Inbox>,
}

impl FakeHttp {
    /// Listens on `addr` (`127.0.0.1:0`: any port); `path` is only for
    /// [`FakeHttp::url`]; every request is answered with `answer`.
    pub fn start(addr: &str, path: &str, answer: &'static str) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(addr).with_context(|| format!("cannot bind {addr}"))?;
        let url = format!("http://{}{path}", listener.local_addr()?);
        let inbox = Arc::new(Inbox::default());
        let accept_inbox = inbox.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let inbox = accept_inbox.clone();
                std::thread::spawn(move || {
                    if let Err(e) = serve(stream, &inbox, answer.as_bytes()) {
                        eprintln!("fake http server: {e}");
                    }
                });
            }
        });
        Ok(Self { url, inbox })
    }
}

/// One connection's requests until the peer closes it.
fn serve(stream: TcpStream, inbox: &Inbox, answer: &[u8]) -> std::io::Result<()> {
    // The answer goes in one write, without Nagle's wait: a head and a body
    // written apart would wait for the client's delayed ACK (40 ms) after
    // the head, and every request would seem to take that long.
    stream.set_nodelay(true)?;
    let mut response = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        answer.len()
    )
    .into_bytes();
    response.extend_from_slice(answer);
    let mut out = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        if line.trim().is_empty() {
            continue;
        }
        let path = line.split_whitespace().nth(1).unwrap_or("").to_owned();
        let (mut length, mut chunked, mut close) = (0usize, false, false);
        let mut authorization = None;
        loop {
            let mut header = String::new();
            reader.read_line(&mut header)?;
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            let Some((name, value)) = header.split_once(':') else {
                continue;
            };
            let value = value.trim();
            match name.trim().to_ascii_lowercase().as_str() {
                "content-length" => length = value.parse().unwrap_or(0),
                "transfer-encoding" => chunked = value.eq_ignore_ascii_case("chunked"),
                "connection" => close = value.eq_ignore_ascii_case("close"),
                "authorization" => authorization = Some(value.to_owned()),
                _ => {}
            }
        }
        let body = if chunked {
            read_chunked(&mut reader)?
        } else {
            let mut b = vec![0; length];
            reader.read_exact(&mut b)?;
            b
        };
        let at = Instant::now();
        let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
        inbox.received.lock().expect("inbox lock").push(Received {
            at,
            path,
            authorization,
            body,
        });
        inbox.notify.notify_one();
        out.write_all(&response)?;
        out.flush()?;
        if close {
            return Ok(());
        }
    }
}

fn read_chunked(reader: &mut impl BufRead) -> std::io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let mut size = String::new();
        reader.read_line(&mut size)?;
        let size = usize::from_str_radix(size.trim().split(';').next().unwrap_or("0"), 16)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        let mut chunk = vec![0; size + 2];
        reader.read_exact(&mut chunk)?;
        if size == 0 {
            return Ok(body);
        }
        body.extend_from_slice(&chunk[..size]);
    }
}
