//! kappe's own paths on the visitor port, answered without the upstream:
//! `{privacy_path}/privacy` (the page), `{privacy_path}/me` (JSON; `DELETE` erases),
//! `{privacy_path}/opt-out`, `{privacy_path}/opt-in`, `{privacy_path}/burn?c=GLOB` and
//! `/.well-known/gpc.json`.
//!
//! Opt-in and delete refuse cross-site requests (`Sec-Fetch-Site`, else `Origin`), so a third-party
//! page cannot opt a visitor back in or wipe the counters that protect them. Opt-out and burn are
//! allowed from anywhere: they only ever reduce what is shown and stored.

use crate::server::VisitorBody;
use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;

use super::Proxy;
use super::body::ProxyBody;
use super::error::ProxyError;
use super::identity::{self, Identity, Origin, expire_cookie};
use crate::privacy::{self, PageView};
use crate::server::ConnInfo;

/// A 1x1 transparent GIF, the answer to a burn pixel.
const PIXEL: &[u8] = &[
    0x47, 0x49, 0x46, 0x38, 0x39, 0x61, 0x01, 0x00, 0x01, 0x00, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00,
    0xff, 0xff, 0xff, 0x21, 0xf9, 0x04, 0x01, 0x00, 0x00, 0x00, 0x00, 0x2c, 0x00, 0x00, 0x00, 0x00,
    0x01, 0x00, 0x01, 0x00, 0x00, 0x02, 0x02, 0x44, 0x01, 0x00, 0x3b,
];

/// Longest form body read from a visitor page POST.
const MAX_FORM: usize = 1024;

/// The opt-out cookie lives about 400 days, the longest browsers keep a cookie.
const OPTOUT_MAX_AGE: u64 = 400 * 86_400;

/// True when `path` is one of kappe's own.
pub fn is_local(path: &str, privacy_path: &str) -> bool {
    path == "/.well-known/gpc.json"
        || path
            .strip_prefix(privacy_path)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

fn response(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<ProxyBody> {
    let mut resp = Response::new(ProxyBody::full(body));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        "content-security-policy",
        HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'"),
    );
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    resp
}

/// True when a browser says the request came from another site.
fn cross_site(headers: &HeaderMap) -> bool {
    if let Some(site) = headers.get("sec-fetch-site") {
        return !matches!(site.as_bytes(), b"same-origin" | b"same-site" | b"none");
    }
    match (headers.get(header::ORIGIN), headers.get(header::HOST)) {
        (Some(origin), Some(host)) => {
            let origin = origin.to_str().unwrap_or("");
            let origin_host = origin.split_once("://").map_or("", |(_, h)| h);
            origin == "null" || !origin_host.eq_ignore_ascii_case(host.to_str().unwrap_or(""))
        }
        (Some(_), None) => true,
        _ => false,
    }
}

/// True when the request is a plain HTML form post (answered with a redirect to the page).
fn is_form(headers: &HeaderMap) -> bool {
    headers.get(header::CONTENT_TYPE).is_some_and(|v| {
        v.as_bytes()
            .starts_with(b"application/x-www-form-urlencoded")
    })
}

async fn read_form(body: VisitorBody) -> Result<Bytes, ProxyError> {
    let limited = http_body_util::Limited::new(body, MAX_FORM);
    limited
        .collect()
        .await
        .map(|c| c.to_bytes())
        .map_err(|_| ProxyError::BadRequest("form body too large or broken"))
}

impl Proxy {
    /// Answers one of kappe's own paths.
    ///
    /// # Errors
    /// [`ProxyError`] for unknown paths, wrong methods, cross-site requests and store failures.
    pub(super) async fn local(
        &self,
        req: Request<VisitorBody>,
        info: &ConnInfo,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let path = req.uri().path().to_owned();
        if path == "/.well-known/gpc.json" {
            return Ok(response(
                StatusCode::OK,
                "application/json",
                privacy::gpc_json(),
            ));
        }
        let base = &self.cfg.privacy.privacy_path;
        let action = path.strip_prefix(base.as_str()).unwrap_or("");
        let method = req.method().clone();
        match (action, &method) {
            ("" | "/", &Method::GET) => {
                let mut resp = response(StatusCode::FOUND, "text/plain; charset=utf-8", "");
                let to = format!("{base}/privacy");
                resp.headers_mut().insert(
                    header::LOCATION,
                    HeaderValue::from_str(&to).expect("validated path"),
                );
                Ok(resp)
            }
            ("/privacy", &Method::GET | &Method::HEAD) => self.page(&req, info, false).await,
            ("/me", &Method::GET | &Method::HEAD) => self.page(&req, info, true).await,
            ("/me", &Method::DELETE) => self.delete_with(req.headers(), info, false).await,
            ("/me", &Method::POST) => {
                let form = is_form(req.headers());
                let headers = req.headers().clone();
                let body = read_form(req.into_body()).await?;
                if !body.split(|b| *b == b'&').any(|kv| kv == b"_method=DELETE") {
                    return Err(ProxyError::MethodNotAllowed);
                }
                self.delete_with(&headers, info, form).await
            }
            ("/opt-out", &Method::POST) => self.opt_out(&req, info).await,
            ("/opt-in", &Method::POST) => self.opt_in(&req),
            ("/burn", &Method::GET | &Method::POST) => self.burn_pixel(&req, info).await,
            ("/privacy" | "/me" | "/opt-out" | "/opt-in" | "/burn", _) => {
                Err(ProxyError::MethodNotAllowed)
            }
            _ => Err(ProxyError::NotFound),
        }
    }

    /// The visitor's key for their own pages, whatever their signals (they may read and erase
    /// what an earlier visit stored).
    fn own_key(&self, headers: &HeaderMap, info: &ConnInfo) -> Option<crate::store::VisitorKey> {
        match identity::identify(
            headers,
            &self.cfg.enforcement,
            &self.pseudo,
            info.peer.ip(),
            self.clock.now(),
        ) {
            Identity::Known {
                key,
                origin: Origin::Sent,
            } => Some(key),
            // The daily fallback key belongs to whoever shares the address and browser: never
            // show or change it through the visitor pages.
            _ => None,
        }
    }

    async fn page(
        &self,
        req: &Request<VisitorBody>,
        info: &ConnInfo,
        json: bool,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let now = self.clock.now();
        let headers = req.headers();
        let verdict = privacy::evaluate(&self.cfg.privacy.signals, headers, req.uri().query(), now);
        let key = self.own_key(headers, info);
        let report = match key {
            Some(k) => self
                .store
                .report(k, now)
                .await
                .map_err(|e| self.store_failed(&e))?,
            None => Default::default(),
        };
        let policy = self.policy.load();
        let caps_for = |c: &str| policy.caps_for(c, None).to_vec();
        let view = PageView {
            verdict: &verdict,
            report: &report,
            caps_for: &caps_for,
            visitor_caps: &policy.visitor_caps,
            now,
            privacy_path: &self.cfg.privacy.privacy_path,
            has_visitor_id: key.is_some(),
        };
        Ok(if json {
            response(
                StatusCode::OK,
                "application/json",
                privacy::me_json(&view).to_string(),
            )
        } else {
            let lang = privacy::negotiate(
                headers
                    .get(header::ACCEPT_LANGUAGE)
                    .and_then(|v| v.to_str().ok()),
            );
            let mut resp = response(
                StatusCode::OK,
                "text/html; charset=utf-8",
                privacy::render_page(lang, &view),
            );
            resp.headers_mut().insert(
                header::VARY,
                HeaderValue::from_static("Accept-Language, Cookie"),
            );
            resp
        })
    }

    fn back_to_page(&self, form: bool) -> Response<ProxyBody> {
        if form {
            let mut resp = response(StatusCode::SEE_OTHER, "text/plain; charset=utf-8", "");
            let to = format!("{}/privacy", self.cfg.privacy.privacy_path);
            resp.headers_mut().insert(
                header::LOCATION,
                HeaderValue::from_str(&to).expect("validated path"),
            );
            resp
        } else {
            response(StatusCode::NO_CONTENT, "text/plain; charset=utf-8", "")
        }
    }

    /// Erases the visitor's data unless the request is cross-site; `form` picks the answer.
    async fn delete_with(
        &self,
        headers: &HeaderMap,
        info: &ConnInfo,
        form: bool,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        if cross_site(headers) {
            return Err(ProxyError::CrossSite);
        }
        if let Some(key) = self.own_key(headers, info) {
            self.store
                .erase(key)
                .await
                .map_err(|e| self.store_failed(&e))?;
        }
        let mut resp = self.back_to_page(form);
        resp.headers_mut().append(
            header::SET_COOKIE,
            expire_cookie(&self.cfg.enforcement.visitor_cookie, self.secure(info)),
        );
        Ok(resp)
    }

    async fn opt_out(
        &self,
        req: &Request<VisitorBody>,
        info: &ConnInfo,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let headers = req.headers();
        if let Some(key) = self.own_key(headers, info) {
            self.store
                .erase(key)
                .await
                .map_err(|e| self.store_failed(&e))?;
        }
        let secure = self.secure(info);
        let mut resp = self.back_to_page(is_form(headers));
        let name = &self.cfg.privacy.signals.optout_cookie;
        let optout = format!(
            "{name}=1; Max-Age={OPTOUT_MAX_AGE}; Path=/; HttpOnly; SameSite=Lax{}",
            if secure { "; Secure" } else { "" }
        );
        let h = resp.headers_mut();
        h.append(
            header::SET_COOKIE,
            HeaderValue::from_str(&optout).expect("validated cookie name"),
        );
        h.append(
            header::SET_COOKIE,
            expire_cookie(&self.cfg.enforcement.visitor_cookie, secure),
        );
        Ok(resp)
    }

    fn opt_in(&self, req: &Request<VisitorBody>) -> Result<Response<ProxyBody>, ProxyError> {
        let headers = req.headers();
        if cross_site(headers) {
            return Err(ProxyError::CrossSite);
        }
        tracing::info!("a visitor opted in again through the privacy page");
        let mut resp = self.back_to_page(is_form(headers));
        resp.headers_mut().append(
            header::SET_COOKIE,
            expire_cookie(
                &self.cfg.privacy.signals.optout_cookie,
                self.cfg.enforcement.cookie_secure,
            ),
        );
        Ok(resp)
    }

    async fn burn_pixel(
        &self,
        req: &Request<VisitorBody>,
        info: &ConnInfo,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let glob = req
            .uri()
            .query()
            .unwrap_or("")
            .split('&')
            .find_map(|kv| kv.strip_prefix("c="))
            .map(|v| {
                v.replace("%2A", "*")
                    .replace("%2a", "*")
                    .replace("%3F", "?")
                    .replace("%3f", "?")
            })
            .filter(|g| valid_glob(g))
            .ok_or(ProxyError::BadRequest(
                "burn needs c=GLOB (letters, digits, - _ . * ?)",
            ))?;
        if let Some(key) = self.own_key(req.headers(), info) {
            let now = self.clock.now();
            let secs = self.policy.load().burn_secs;
            self.store
                .burn(key, &glob, secs, now)
                .await
                .map_err(|e| self.store_failed(&e))?;
        }
        Ok(if req.method() == Method::GET {
            response(StatusCode::OK, "image/gif", Bytes::from_static(PIXEL))
        } else {
            response(StatusCode::NO_CONTENT, "text/plain; charset=utf-8", "")
        })
    }

    fn secure(&self, info: &ConnInfo) -> bool {
        info.tls || self.cfg.enforcement.cookie_secure
    }
}

/// A burn glob: 1 to 128 of letters, digits, `-`, `_`, `.`, `:`, `*`, `?`.
pub fn valid_glob(g: &str) -> bool {
    !g.is_empty()
        && g.len() <= 128
        && g.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:*?".contains(&b))
}
