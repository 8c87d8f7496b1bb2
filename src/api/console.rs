//! The web console (CONTRACT §12): plain HTML, CSS and JavaScript under `src/api/console/`,
//! embedded in the binary and served at `GET /` and `/ui/...`. The page loads without a token;
//! everything it shows comes from the public `/v1/` API with the token the user gives it.

use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use std::sync::OnceLock;

struct Asset {
    body: &'static str,
    content_type: &'static str,
    etag: OnceLock<String>,
}

impl Asset {
    const fn new(body: &'static str, content_type: &'static str) -> Asset {
        Asset {
            body,
            content_type,
            etag: OnceLock::new(),
        }
    }

    fn etag(&self) -> &str {
        self.etag.get_or_init(|| {
            use sha2::{Digest, Sha256};
            let d = Sha256::digest(self.body.as_bytes());
            let hex = crate::core::hex::lower(&d[..12]);
            format!("\"{hex}\"")
        })
    }
}

static INDEX: Asset = Asset::new(include_str!("console/index.html"), "text/html; charset=utf-8");
static APP_JS: Asset = Asset::new(include_str!("console/app.js"), "text/javascript; charset=utf-8");
static APP_CSS: Asset = Asset::new(include_str!("console/app.css"), "text/css; charset=utf-8");
static ICON: Asset = Asset::new(include_str!("console/icon.svg"), "image/svg+xml");

/// The page's policy: its own scripts, styles and API only, never framed. Task inputs and
/// results are shown as text, never as markup, so a hostile one cannot run in the page.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

fn serve(asset: &Asset, headers: &HeaderMap) -> Response {
    let etag = asset.etag();
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let mut resp = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        ([(header::CONTENT_TYPE, asset.content_type)], asset.body).into_response()
    };
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(etag) {
        h.insert(header::ETAG, v);
    }
    // Revalidated on every load (a 304 when unchanged): a new binary's console is seen at once.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    resp
}

/// `GET /` and `GET /ui/`: the page.
pub async fn page(headers: HeaderMap) -> Response {
    serve(&INDEX, &headers)
}

/// `GET /ui/{path}`: an asset, or the page for any other path (the console routes in the URL's
/// fragment, but a link to `/ui/anything` still opens it).
pub async fn asset(Path(path): Path<String>, headers: HeaderMap) -> Response {
    let asset = match path.as_str() {
        "app.js" => &APP_JS,
        "app.css" => &APP_CSS,
        "icon.svg" => &ICON,
        _ => &INDEX,
    };
    serve(asset, &headers)
}

/// The console's routes: `/`, `/ui`, `/ui/` and `/ui/{path}`. Not part of the OpenAPI document
/// (they serve the page, not the API), so they are added beside the documented routes.
pub fn routes() -> Router<super::AppState> {
    Router::new()
        .route("/", get(page))
        .route("/ui", get(page))
        .route("/ui/", get(page))
        .route("/ui/{*path}", get(asset))
}
