//! WebSocket clients (tungstenite's own client) of a daemon's `--ws-bind` port, and a daemon
//! serving them ([`Browsers`]), for the browser-side tests (`websocket`, `cluster_chat`,
//! `json_protocol`).

use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;

use super::{Client, Daemon, TIMEOUT, admin_command, eventually, temp_path};

/// A WebSocket client of `addr`'s `/ws` (with an `Origin` header if given), its reads bounded
/// by [`TIMEOUT`]; the handshake's failure as an error.
pub fn try_ws_connect(
    addr: SocketAddr,
    origin: Option<&str>,
) -> Result<tungstenite::WebSocket<TcpStream>, tungstenite::Error> {
    let headers: Vec<(&str, &str)> = origin.map(|o| ("origin", o)).into_iter().collect();
    ws_handshake(TcpStream::connect(addr).unwrap(), addr, &headers)
}

/// The handshake for `/ws` on `sock` (connected to `addr`, maybe already written to), with
/// these extra headers; its reads bounded by [`TIMEOUT`].
pub fn ws_handshake(
    sock: TcpStream,
    addr: SocketAddr,
    headers: &[(&str, &str)],
) -> Result<tungstenite::WebSocket<TcpStream>, tungstenite::Error> {
    use tungstenite::client::IntoClientRequest;
    use tungstenite::http::HeaderName;
    sock.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut request = format!("ws://{addr}/ws").into_client_request().unwrap();
    for (name, value) in headers {
        let name: HeaderName = name.parse().unwrap();
        request.headers_mut().insert(name, value.parse().unwrap());
    }
    match tungstenite::client(request, sock) {
        Ok((ws, _)) => Ok(ws),
        Err(tungstenite::HandshakeError::Failure(e)) => Err(e),
        Err(e) => panic!("handshake interrupted: {e}"),
    }
}

/// [`try_ws_connect`], failing the test if the handshake fails.
pub fn ws_connect(addr: SocketAddr, origin: Option<&str>) -> tungstenite::WebSocket<TcpStream> {
    try_ws_connect(addr, origin).unwrap_or_else(|e| panic!("websocket handshake: {e}"))
}

/// The next text message (pings are answered by tungstenite as it reads).
pub fn ws_text(ws: &mut tungstenite::WebSocket<TcpStream>) -> String {
    use tungstenite::Message;
    loop {
        match ws.read().expect("a message") {
            Message::Text(t) => return t.to_string(),
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("expected a text message, got {other:?}"),
        }
    }
}

/// A daemon with a TCP port, a `--ws-bind` port and an admin socket.
pub struct Browsers {
    pub d: Daemon,
    pub ws: SocketAddr,
    pub admin: PathBuf,
}

impl Browsers {
    pub fn spawn(args: &[&str]) -> Browsers {
        let admin = temp_path("ws-admin");
        let admin_s = admin.to_str().unwrap().to_string();
        let mut all = vec!["--ws-bind", "127.0.0.1:0", "--admin", &admin_s];
        all.extend_from_slice(args);
        let d = Daemon::spawn(&all);
        let ws = d.ws_addr();
        Browsers { d, ws, admin }
    }

    pub fn tcp(&self) -> Client {
        self.d.connect()
    }

    pub fn ws(&self) -> tungstenite::WebSocket<TcpStream> {
        ws_connect(self.ws, None)
    }

    pub fn clients(&self) -> Vec<String> {
        admin_command(&self.admin, "clients")
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect()
    }

    pub fn admin(&self, command: &str) -> String {
        admin_command(&self.admin, command)
    }

    /// Waits until `n` clients are registered: lines sent from now on reach all of them.
    pub fn wait_clients(&self, n: usize) {
        eventually(&format!("{n} clients"), || self.clients().len() == n);
    }
}

impl Drop for Browsers {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.admin);
    }
}
