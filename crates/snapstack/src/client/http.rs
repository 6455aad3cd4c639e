//! A small blocking client of the Snapstack API: password authentication
//! (Keystone v3, project-scoped token) and JSON requests to the compute API.

use anyhow::{anyhow, Context};
use serde_json::{json, Value};

/// Where the cloud is and who is asking (the `openstack` CLI's variables).
#[derive(clap::Args, Debug, Clone)]
pub struct Credentials {
    /// Keystone URL, e.g. http://127.0.0.1:8774/identity/v3.
    #[arg(long, env = "OS_AUTH_URL")]
    pub os_auth_url: String,
    #[arg(long, env = "OS_USERNAME", default_value = "admin")]
    pub os_username: String,
    #[arg(long, env = "OS_PASSWORD", hide_env_values = true)]
    pub os_password: String,
    #[arg(long, env = "OS_PROJECT_NAME", default_value = "admin")]
    pub os_project_name: String,
}

/// An authenticated session.
pub struct Session {
    base: String,
    token: String,
}

impl Session {
    /// Logs in; the API's base URL is the auth URL without `/identity/v3`.
    pub fn login(c: &Credentials) -> anyhow::Result<Session> {
        let auth_url = c.os_auth_url.trim_end_matches('/');
        let base = auth_url
            .strip_suffix("/identity/v3")
            .ok_or_else(|| anyhow!("OS_AUTH_URL must end with /identity/v3: {auth_url}"))?
            .to_string();
        let body = json!({"auth": {
            "identity": {"methods": ["password"], "password": {"user": {
                "name": c.os_username, "domain": {"id": "default"}, "password": c.os_password}}},
            "scope": {"project": {"name": c.os_project_name, "domain": {"id": "default"}}}
        }});
        let reply = ureq::post(&format!("{auth_url}/auth/tokens"))
            .send_json(body)
            .map_err(describe)
            .context("cannot log in")?;
        let token = reply
            .header("X-Subject-Token")
            .ok_or_else(|| anyhow!("the identity service returned no token"))?
            .to_string();
        Ok(Session { base, token })
    }

    /// Sends a request to `/compute/v2.1<path>`; returns the JSON body (or
    /// `null` for an empty one).
    pub fn call(&self, method: &str, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let request = ureq::request(method, &format!("{}/compute/v2.1{path}", self.base))
            .set("X-Auth-Token", &self.token);
        let reply = match body {
            Some(body) => request.send_json(body),
            None => request.call(),
        }
        .map_err(describe)?;
        let text = reply.into_string()?;
        if text.trim().is_empty() {
            return Ok(Value::Null);
        }
        Ok(serde_json::from_str(&text)?)
    }
}

/// An HTTP error as the API explains it (`{"<kind>": {"message": …}}`).
fn describe(e: ureq::Error) -> anyhow::Error {
    match e {
        ureq::Error::Status(code, reply) => {
            let body: Value = reply.into_json().unwrap_or(Value::Null);
            let message = body
                .as_object()
                .and_then(|o| o.values().next())
                .and_then(|v| v["message"].as_str())
                .unwrap_or("no message");
            anyhow!("HTTP {code}: {message}")
        }
        other => anyhow!(other),
    }
}

/// Whether `id` looks like a UUID (else it is taken as a name).
pub fn is_uuid(id: &str) -> bool {
    id.len() == 36 && id.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
}
