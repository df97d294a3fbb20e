//! A fake web site on loopback for URL previews: raw HTTP/1.1 answers the
//! test chooses per path (HTML, images, chunked bodies without a length,
//! redirects), and a count of the requests each path got, so a cache hit is
//! seen as no new request.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How a path answers.
#[derive(Clone)]
pub enum Page {
    /// 200 with this type and body, `Content-Length` set.
    Body(&'static str, Vec<u8>),
    /// 200 with this type and body, chunked (no `Content-Length`).
    Chunked(&'static str, Vec<u8>),
    /// 302 to this URL.
    Redirect(String),
    /// This status, empty body.
    Status(u16),
    /// No answer: the connection is held open for a minute (a server that
    /// times out).
    Hang,
}

#[derive(Default)]
struct Site {
    pages: HashMap<String, Page>,
    hits: HashMap<String, usize>,
}

pub struct FakeSite {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    pub port: u16,
    site: Arc<Mutex<Site>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeSite {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A small PNG of `w`×`h` pixels.
pub fn png(w: u32, h: u32) -> Vec<u8> {
    let img = image::RgbImage::from_pixel(w, h, image::Rgb([200, 30, 90]));
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

impl FakeSite {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let site = Arc::new(Mutex::new(Site::default()));
        let shared = site.clone();
        let task = tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                tokio::spawn(answer(conn, shared.clone()));
            }
        });
        Self {
            base: format!("http://127.0.0.1:{port}"),
            port,
            site,
            task,
        }
    }

    /// Serves `page` at `path`; returns the page's URL.
    pub fn serve(&self, path: &str, page: Page) -> String {
        self.site.lock().pages.insert(path.to_owned(), page);
        format!("{}{path}", self.base)
    }

    /// Requests `path` got so far.
    pub fn hits(&self, path: &str) -> usize {
        self.site.lock().hits.get(path).copied().unwrap_or(0)
    }
}

async fn answer(mut conn: tokio::net::TcpStream, site: Arc<Mutex<Site>>) {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match conn.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let head = String::from_utf8_lossy(&head);
    let path = head.split(' ').nth(1).unwrap_or("/").to_owned();
    let page = {
        let mut site = site.lock();
        *site.hits.entry(path.clone()).or_default() += 1;
        site.pages.get(&path).cloned()
    };
    let mut out = Vec::new();
    match page.unwrap_or(Page::Status(404)) {
        Page::Body(kind, body) => {
            out.extend_from_slice(
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                )
                .as_bytes(),
            );
            out.extend_from_slice(&body);
        }
        Page::Chunked(kind, body) => {
            out.extend_from_slice(
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: {kind}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                )
                .as_bytes(),
            );
            for chunk in body.chunks(1000) {
                out.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
                out.extend_from_slice(chunk);
                out.extend_from_slice(b"\r\n");
            }
            out.extend_from_slice(b"0\r\n\r\n");
        }
        Page::Redirect(to) => out.extend_from_slice(
            format!("HTTP/1.1 302 Found\r\nLocation: {to}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        ),
        Page::Hang => {
            tokio::time::sleep(std::time::Duration::from_secs(60)).await;
            return;
        }
        Page::Status(code) => out.extend_from_slice(
            format!("HTTP/1.1 {code} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").as_bytes(),
        ),
    }
    let _ = conn.write_all(&out).await;
    let _ = conn.shutdown().await;
}
