//! A small blocking HTTP client for the operator commands.

use anyhow::{anyhow, Result};
use serde_json::Value;

pub struct Client {
    base: String,
    token: Option<String>,
    agent: ureq::Agent,
}

impl Client {
    pub fn new(base: &str, token: Option<String>) -> Self {
        let agent = ureq::AgentBuilder::new()
            .timeout(std::time::Duration::from_secs(120))
            .user_agent(concat!("tenantplane-cli/", env!("CARGO_PKG_VERSION")))
            .build();
        Client {
            base: base.trim_end_matches('/').to_string(),
            token,
            agent,
        }
    }

    /// Sends a request; a non-2xx answer becomes an error carrying the API's
    /// message.
    pub fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value> {
        let url = format!("{}{}", self.base, path);
        let mut req = self.agent.request(method, &url);
        if let Some(t) = &self.token {
            req = req.set("Authorization", &format!("Bearer {t}"));
        }
        let result = match body {
            Some(b) => req.send_json(b.clone()),
            None => req.call(),
        };
        match result {
            Ok(resp) if resp.status() == 204 => Ok(Value::Null),
            Ok(resp) => Ok(resp.into_json()?),
            Err(ureq::Error::Status(code, resp)) => {
                let body: Value = resp.into_json().unwrap_or(Value::Null);
                let message = body["error"]["message"].as_str().unwrap_or("(no message)");
                let hint = if code == 401 {
                    " (set TENANTPLANE_TOKEN or --token)"
                } else {
                    ""
                };
                Err(anyhow!("{method} {path}: HTTP {code}: {message}{hint}"))
            }
            Err(e) => Err(anyhow!(
                "{method} {url}: {e} (is tenantplane running? TENANTPLANE_URL)"
            )),
        }
    }
}

/// Percent-encodes a query value.
pub fn encode(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
