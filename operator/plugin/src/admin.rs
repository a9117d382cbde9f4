//! The agents' admin listener: `GET /usage`, with the admin token when one is given. Agents are asked at once;
//! each answer or failure is kept with its URL so a partial result can say which agents are missing.
use crate::agents::UsageReport;
use std::time::Duration;

/// An agent's admin base URL, e.g. `http://10.0.3.7:9090`.
pub fn usage_url(base: &str) -> String {
    let base = base.trim_end_matches('/');
    if base.ends_with("/usage") { base.to_string() } else { format!("{base}/usage") }
}

/// Asks every agent; one result per URL, in order.
pub async fn fetch_all(
    urls: &[String],
    token: Option<&str>,
    timeout: Duration,
) -> Vec<(String, Result<UsageReport, String>)> {
    let http = match reqwest::Client::builder().timeout(timeout).build() {
        Ok(http) => http,
        Err(e) => return urls.iter().map(|u| (u.clone(), Err(format!("cannot build an HTTP client: {e}")))).collect(),
    };
    let asks = urls.iter().map(|url| {
        let http = http.clone();
        async move { (url.clone(), fetch(&http, &usage_url(url), token).await) }
    });
    futures::future::join_all(asks).await
}

async fn fetch(http: &reqwest::Client, url: &str, token: Option<&str>) -> Result<UsageReport, String> {
    let mut request = http.get(url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.map_err(|e| format!("cannot reach {url}: {}", chain(&e)))?;
    let status = response.status();
    if status.is_success() {
        return response
            .json()
            .await
            .map_err(|e| format!("{url} answered something that is not a usage report: {}", chain(&e)));
    }
    let body = response.text().await.unwrap_or_default();
    let hint = match status.as_u16() {
        401 => " (pass the agents' admin token with --admin-token-file)",
        _ => "",
    };
    Err(format!("{url} answered {status}: {}{hint}", body.trim()))
}

/// An error with its causes (`error sending request: client error (Connect): Connection refused`): reqwest's own
/// message alone does not say what went wrong.
fn chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = cause.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_urls_accept_a_base_or_the_full_path() {
        assert_eq!(usage_url("http://10.0.3.7:9090"), "http://10.0.3.7:9090/usage");
        assert_eq!(usage_url("http://10.0.3.7:9090/"), "http://10.0.3.7:9090/usage");
        assert_eq!(usage_url("http://10.0.3.7:9090/usage"), "http://10.0.3.7:9090/usage");
    }
}
