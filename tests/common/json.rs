//! `relayd.v1.json` clients: a WebSocket client that offers the subprotocol, sends JSON
//! messages and reads each event parsed with serde_json (`json_protocol`).

use std::net::{SocketAddr, TcpStream};

use serde_json::Value;
use tungstenite::Message;
use tungstenite::client::IntoClientRequest;

use super::TIMEOUT;

pub const PROTOCOL: &str = "relayd.v1.json";

/// A client of `addr`'s `/ws?QUERY` offering `protocols` (comma-separated, as a browser sends
/// them; `None`: no header at all): the socket, and the protocol the answer confirmed.
pub fn handshake(
    addr: SocketAddr,
    query: &str,
    protocols: Option<&str>,
) -> (tungstenite::WebSocket<TcpStream>, Option<String>) {
    let sock = TcpStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(TIMEOUT)).unwrap();
    let url = match query {
        "" => format!("ws://{addr}/ws"),
        q => format!("ws://{addr}/ws?{q}"),
    };
    let mut request = url.into_client_request().unwrap();
    if let Some(p) = protocols {
        let headers = request.headers_mut();
        headers.insert("sec-websocket-protocol", p.parse().unwrap());
    }
    let (ws, response) =
        tungstenite::client(request, sock).unwrap_or_else(|e| panic!("websocket handshake: {e}"));
    let confirmed = response
        .headers()
        .get("sec-websocket-protocol")
        .map(|v| v.to_str().unwrap().to_string());
    (ws, confirmed)
}

/// A JSON client.
pub struct Json {
    pub ws: tungstenite::WebSocket<TcpStream>,
}

impl Json {
    /// Connects to `/ws?QUERY` offering the subprotocol, which must be confirmed.
    pub fn connect(addr: SocketAddr, query: &str) -> Json {
        let (ws, confirmed) = handshake(addr, query, Some(PROTOCOL));
        assert_eq!(confirmed.as_deref(), Some(PROTOCOL));
        Json { ws }
    }

    /// Sends one message as it is (JSON or not).
    pub fn send_text(&mut self, text: &str) {
        self.ws.send(Message::text(text)).unwrap();
    }

    pub fn send(&mut self, message: Value) {
        self.send_text(&message.to_string());
    }

    /// The next event, parsed; a text message that is not JSON fails the test.
    pub fn event(&mut self) -> Value {
        loop {
            match self.ws.read().expect("an event") {
                Message::Text(t) => {
                    return serde_json::from_str(&t)
                        .unwrap_or_else(|e| panic!("not JSON: {t:?}: {e}"));
                }
                Message::Ping(_) | Message::Pong(_) => {}
                other => panic!("expected a text message, got {other:?}"),
            }
        }
    }

    /// Reads the next event, which must be `want`.
    pub fn expect(&mut self, want: Value) {
        assert_eq!(self.event(), want);
    }

    /// Closes the connection as a browser does, and waits for relayd's close.
    pub fn close(&mut self) {
        self.ws.close(None).unwrap();
        while self.ws.read().is_ok() {}
    }

    /// The events up to and including the first for which `last` holds.
    pub fn until(&mut self, mut last: impl FnMut(&Value) -> bool) -> Vec<Value> {
        let mut seen = Vec::new();
        loop {
            let event = self.event();
            let done = last(&event);
            seen.push(event);
            if done {
                return seen;
            }
        }
    }

    /// Waits for the welcome and the lobby's presence, and returns the name it was given.
    pub fn welcomed(&mut self) -> String {
        let welcome = self.event();
        assert_eq!(welcome["kind"], "welcome", "{welcome}");
        let presence = self.event();
        assert_eq!(presence["type"], "presence", "{presence}");
        welcome["name"].as_str().unwrap().to_string()
    }
}
