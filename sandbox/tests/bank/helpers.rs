//! Starting a sandbox bank on 127.0.0.1:0 with a fresh database, and a
//! minimal HTTP/1.1 client (one request per connection) to talk to it.

use std::net::SocketAddr;
use std::path::PathBuf;

use bankbot_connectors::wire::{BASE_PATH, ErrorResponse};
use bankbot_sandbox::{Config, Sandbox};
use serde::de::DeserializeOwned;
use serde_json::Value;
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub struct TestBank {
    pub sandbox: Sandbox,
    pub database: PathBuf,
    // Dropped last: the database lives in it.
    pub dir: TempDir,
}

impl TestBank {
    pub fn addr(&self) -> SocketAddr {
        self.sandbox.local_addr()
    }

    /// A client acting for `customer`.
    pub fn client(&self, customer: &str) -> Client {
        Client {
            addr: self.addr(),
            customer: Some(customer.to_owned()),
            token: None,
        }
    }

    pub async fn audit(&self) -> Value {
        let r = admin(self.addr(), "GET", "/sandbox/audit", None).await;
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()
    }

    /// The latest one-time code texted to `customer`.
    pub async fn latest_code(&self, customer: &str) -> String {
        let path = format!("/sandbox/customers/{customer}/codes/latest");
        let r = admin(self.addr(), "GET", &path, None).await;
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()["Code"].as_str().unwrap().to_owned()
    }
}

pub async fn spawn_bank() -> TestBank {
    spawn_bank_with(|_| {}).await
}

pub async fn spawn_bank_with(configure: impl FnOnce(&mut Config)) -> TestBank {
    let dir = tempfile::tempdir().unwrap();
    let database = dir.path().join("bank.sqlite");
    let mut config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        database: database.clone(),
        ..Config::default()
    };
    configure(&mut config);
    let sandbox = bankbot_sandbox::start(config).await.unwrap();
    TestBank {
        sandbox,
        database,
        dir,
    }
}

#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    /// The body as a wire type: proves the client can read it.
    pub fn wire<T: DeserializeOwned>(&self) -> T {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not the documented shape ({e}): {}", self.text()))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The `Errors[0].ErrorCode` of an `ErrorResponse`, checking its shape.
    pub fn error_code(&self) -> String {
        let e: ErrorResponse = self.wire();
        assert_eq!(e.code, self.status.to_string());
        assert!(!e.message.is_empty());
        e.errors[0].error_code.clone()
    }
}

/// Sends one request on a fresh connection and reads the whole answer.
pub async fn send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Resp {
    try_send(addr, method, path, headers, body)
        .await
        .unwrap_or_else(|| panic!("no answer to {method} {path}"))
}

/// Like [`send`], but `None` when the connection ends without an answer
/// (the server died).
pub async fn try_send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Option<Resp> {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if let Some(body) = body {
        head.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    head.push_str("\r\n");
    let mut request = head.into_bytes();
    request.extend_from_slice(body.unwrap_or_default());
    stream.write_all(&request).await.ok()?;
    let mut raw = Vec::new();
    // A reset after a complete answer still leaves the answer in `raw`.
    let _ = stream.read_to_end(&mut raw).await;
    parse_response(&raw)
}

fn parse_response(raw: &[u8]) -> Option<Resp> {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..split]).unwrap();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.contains("chunked"));
    if chunked {
        body = dechunk(&body);
    }
    Some(Resp {
        status,
        headers,
        body,
    })
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n").unwrap();
        let size_text = std::str::from_utf8(&data[..line_end]).unwrap();
        let size = usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16).unwrap();
        data = &data[line_end + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

/// An admin request (no customer, no token).
pub async fn admin(addr: SocketAddr, method: &str, path: &str, body: Option<&Value>) -> Resp {
    let body = body.map(|b| serde_json::to_vec(b).unwrap());
    send(addr, method, path, &[], body.as_deref()).await
}

/// Talks to the bank API as one customer.
#[derive(Debug, Clone)]
pub struct Client {
    pub addr: SocketAddr,
    pub customer: Option<String>,
    pub token: Option<String>,
}

impl Client {
    pub fn with_token(mut self, token: &str) -> Client {
        self.token = Some(token.to_owned());
        self
    }

    /// A bank-API request; `path` is below the base path.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        key: Option<&str>,
        body: Option<&Value>,
    ) -> Resp {
        let auth = self.token.as_ref().map(|t| format!("Bearer {t}"));
        let mut headers: Vec<(&str, &str)> = Vec::new();
        if let Some(c) = &self.customer {
            headers.push(("x-customer-id", c));
        }
        if let Some(a) = &auth {
            headers.push(("Authorization", a));
        }
        if let Some(k) = key {
            headers.push(("x-idempotency-key", k));
        }
        let body = body.map(|b| serde_json::to_vec(b).unwrap());
        send(
            self.addr,
            method,
            &format!("{BASE_PATH}{path}"),
            &headers,
            body.as_deref(),
        )
        .await
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.call("GET", path, None, None).await
    }

    pub async fn post(&self, path: &str, key: &str, body: &Value) -> Resp {
        self.call("POST", path, Some(key), Some(body)).await
    }

    pub async fn put(&self, path: &str, key: &str, body: &Value) -> Resp {
        self.call("PUT", path, Some(key), Some(body)).await
    }

    pub async fn pay(&self, key: &str, account: &str, payee: &str, amount: &str) -> Resp {
        self.post("/domestic-payments", key, &payment(account, payee, amount))
            .await
    }

    /// The derived balance of an account, in pence.
    pub async fn balance(&self, account: &str) -> i64 {
        let r = self.get(&format!("/accounts/{account}/balances")).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let v = r.json();
        let b = &v["Data"]["Balance"][0];
        let minor = bankbot_connectors::wire::amount_to_minor(
            b["Amount"]["Amount"].as_str().unwrap(),
            "GBP",
        )
        .unwrap();
        if b["CreditDebitIndicator"] == "Debit" {
            -minor
        } else {
            minor
        }
    }
}

pub fn payment(account: &str, payee: &str, amount: &str) -> Value {
    serde_json::json!({
        "Data": {
            "Initiation": {
                "InstructionIdentification": "instr-1",
                "DebtorAccount": {"AccountId": account},
                "PayeeId": payee,
                "InstructedAmount": {"Amount": amount, "Currency": "GBP"},
                "Reference": "birthday"
            }
        }
    })
}

/// Every transaction of an account over all time, in one page.
pub const ALL_TIME: &str = "fromBookingDate=2000-01-01&toBookingDate=2999-12-31";
