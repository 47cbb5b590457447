//! A TCP proxy that cuts a connection in the middle of what the client
//! sends: armed with a byte budget, it forwards client bytes until the
//! budget runs out, then drops both sides of that connection (once). For
//! tests of resumable uploads: the server sees a request body end early,
//! the client a broken connection.

#![allow(clippy::indexing_slicing)] // buffer indices are read counts

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// See the module documentation.
#[derive(Debug)]
pub struct CuttingProxy {
    addr: SocketAddr,
    /// Client bytes still to forward before the cut; `None`: not armed.
    budget: Arc<Mutex<Option<u64>>>,
    cuts: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl CuttingProxy {
    /// A proxy on a free loopback port in front of `upstream`.
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let budget: Arc<Mutex<Option<u64>>> = Arc::default();
        let cuts = Arc::new(AtomicU64::new(0));
        let (b, c) = (Arc::clone(&budget), Arc::clone(&cuts));
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(upstream).await else {
                    continue;
                };
                tokio::spawn(relay(client, server, Arc::clone(&b), Arc::clone(&c)));
            }
        });
        Self {
            addr,
            budget,
            cuts,
            task,
        }
    }

    /// The proxy's URL, for a client.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Cuts the connection that carries the client's `bytes`-th byte from
    /// now (counting every connection), then stops cutting.
    pub fn cut_after(&self, bytes: u64) {
        *self.budget.lock().unwrap() = Some(bytes);
    }

    /// How many connections it cut.
    pub fn cuts(&self) -> u64 {
        self.cuts.load(Ordering::SeqCst)
    }
}

impl Drop for CuttingProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn relay(
    client: TcpStream,
    server: TcpStream,
    budget: Arc<Mutex<Option<u64>>>,
    cuts: Arc<AtomicU64>,
) {
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let down = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
        let _ = client_write.shutdown().await;
    });
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match client_read.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let pass = {
            let mut budget = budget.lock().unwrap();
            match *budget {
                Some(left) if (n as u64) >= left => {
                    *budget = None;
                    Some(usize::try_from(left).unwrap())
                }
                Some(left) => {
                    *budget = Some(left - n as u64);
                    None
                }
                None => None,
            }
        };
        if let Some(pass) = pass {
            let _ = server_write.write_all(&buf[..pass]).await;
            // Let the server read what was passed before either side
            // notices the cut: otherwise the client's next request (on a
            // new connection) can overtake bytes still unread in the
            // server's socket, and "what arrived" depends on scheduling.
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            cuts.fetch_add(1, Ordering::SeqCst);
            down.abort();
            return; // drops both halves of both sockets
        }
        if server_write.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = server_write.shutdown().await;
    let _ = down.await;
}
