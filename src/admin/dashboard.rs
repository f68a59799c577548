//! The live dashboard's files, served at `/`: plain HTML, CSS and JavaScript
//! embedded in the binary (no build step, nothing fetched from elsewhere).
//! The page polls `/v1/stats` and `/v1/presence/{user}` with the admin
//! token it asks for, when one is configured.
//!
//! Owns the file table, their content types, caching (an ETag of each
//! file's bytes, revalidated on every load) and the security headers (a
//! Content-Security-Policy of this origin only). It must not serve data:
//! the files are the same for everyone and load without the token.

use hyper::header::{
    HeaderName, HeaderValue, CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, ETAG, IF_NONE_MATCH,
    REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use hyper::{Method, Request, Response, StatusCode};

use super::Body;

/// Scripts, styles, images and requests from this origin only; no plugins,
/// no framing, no forms posting elsewhere.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; \
                       base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// One embedded file.
pub struct Asset {
    pub path: &'static str,
    pub content_type: &'static str,
    pub body: &'static [u8],
    /// A hash of `body`, computed at compile time.
    etag: u64,
}

const fn asset(path: &'static str, content_type: &'static str, body: &'static [u8]) -> Asset {
    Asset { path, content_type, body, etag: fnv1a(body) }
}

/// Every file of the dashboard, by request path.
pub const ASSETS: [Asset; 4] = [
    asset("/", "text/html; charset=utf-8", include_bytes!("dashboard/index.html")),
    asset("/dashboard.css", "text/css; charset=utf-8", include_bytes!("dashboard/dashboard.css")),
    asset("/dashboard.js", "text/javascript; charset=utf-8", include_bytes!("dashboard/dashboard.js")),
    asset("/favicon.svg", "image/svg+xml", include_bytes!("dashboard/favicon.svg")),
];

/// The file served at `path`, if it is one of the dashboard's.
pub fn asset_at(path: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|a| a.path == path)
}

/// GET (or HEAD) of `asset`: the file, or 304 when the client's copy is current.
pub fn serve<B>(asset: &Asset, req: &Request<B>) -> Response<Body> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return super::method_not_allowed("GET, HEAD");
    }
    let etag = format!("\"{:016x}\"", asset.etag);
    let current = req.headers().get(IF_NONE_MATCH).is_some_and(|given| {
        given
            .as_bytes()
            .split(|&b| b == b',')
            .any(|tag| tag.trim_ascii() == etag.as_bytes() || tag.trim_ascii() == b"*")
    });
    let mut response = match (current, req.method() == Method::HEAD) {
        (true, _) => {
            let mut response = Response::new(Body::default());
            *response.status_mut() = StatusCode::NOT_MODIFIED;
            response
        }
        (false, true) => Response::new(Body::default()),
        (false, false) => Response::new(Body::from(asset.body)),
    };
    let headers = response.headers_mut();
    let fixed: [(HeaderName, &'static str); 6] = [
        (CONTENT_TYPE, asset.content_type),
        // Revalidate on every load: a new binary may carry new files at the same paths.
        (CACHE_CONTROL, "no-cache"),
        (CONTENT_SECURITY_POLICY, CSP),
        (X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (X_FRAME_OPTIONS, "DENY"),
        (REFERRER_POLICY, "no-referrer"),
    ];
    for (name, value) in fixed {
        headers.insert(name, HeaderValue::from_static(value));
    }
    if let Ok(etag) = HeaderValue::from_str(&etag) {
        headers.insert(ETAG, etag);
    }
    response
}

/// FNV-1a, 64 bits: enough to tell two versions of a file apart.
const fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        i += 1;
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(path: &str, if_none_match: Option<&str>) -> Response<Body> {
        let mut req = Request::get(path);
        if let Some(tag) = if_none_match {
            req = req.header(IF_NONE_MATCH, tag);
        }
        let req = req.body(()).expect("a valid request");
        serve(asset_at(path).expect("an asset"), &req)
    }

    #[test]
    fn every_file_is_served_with_its_type_and_policy() {
        for asset in &ASSETS {
            let response = get(asset.path, None);
            assert_eq!(response.status(), StatusCode::OK, "{}", asset.path);
            assert_eq!(response.headers()[CONTENT_TYPE], asset.content_type);
            assert_eq!(response.headers()[CONTENT_SECURITY_POLICY], CSP);
            assert!(!asset.body.is_empty());
        }
        assert!(asset_at("/nothing.js").is_none());
    }

    #[test]
    fn a_current_copy_is_not_sent_again() {
        let etag = get("/dashboard.js", None).headers()[ETAG].to_str().unwrap().to_owned();
        assert_eq!(get("/dashboard.js", Some(&etag)).status(), StatusCode::NOT_MODIFIED);
        assert_eq!(get("/dashboard.js", Some(&format!("\"x\", {etag}"))).status(), StatusCode::NOT_MODIFIED);
        assert_eq!(get("/dashboard.js", Some("\"0000000000000000\"")).status(), StatusCode::OK);
    }

    #[test]
    fn the_page_loads_nothing_from_elsewhere() {
        let page = std::str::from_utf8(asset_at("/").unwrap().body).unwrap();
        for asset in &ASSETS[1..] {
            assert!(page.contains(&format!("\"{}\"", asset.path)), "the page links {}", asset.path);
        }
        for file in &ASSETS {
            // The SVG's namespace is a name, not a request.
            let body = std::str::from_utf8(file.body).unwrap().replace("xmlns=\"http://www.w3.org/2000/svg\"", "");
            assert!(!body.contains("http://") && !body.contains("https://"), "{}: nothing from elsewhere", file.path);
            assert!(!body.contains("<script>") && !body.contains(" style="), "{}: nothing inline", file.path);
        }
    }
}
