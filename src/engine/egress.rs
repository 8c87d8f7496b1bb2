//! The HTTP client of endpoints and webhooks, bound to the `[egress]` policy
//! ([`crate::core::egress`]): names are resolved here and only the allowed addresses are handed
//! to the connection, and every redirect hop is checked as the first URL was.

use crate::core::egress::{Policy, Refused, MAX_REDIRECTS};
use std::sync::Arc;
use std::time::Duration;

/// Resolves names with the system resolver, then keeps only the addresses the policy allows:
/// the connection can only use what this hands it.
struct PolicyResolver {
    policy: Arc<Policy>,
}

impl reqwest::dns::Resolve for PolicyResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.policy.clone();
        Box::pin(async move {
            let host = name.as_str().to_string();
            policy.check_name(&host)?;
            let found = tokio::net::lookup_host((host.as_str(), 0)).await?;
            let allowed = policy.filter(&host, found)?;
            Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

fn redirects(policy: Arc<Policy>) -> reqwest::redirect::Policy {
    if !policy.follow_redirects {
        return reqwest::redirect::Policy::none();
    }
    reqwest::redirect::Policy::custom(move |attempt| {
        if attempt.previous().len() >= MAX_REDIRECTS {
            let e = Refused(format!("more than {MAX_REDIRECTS} redirects"));
            return attempt.error(e);
        }
        // A named target is resolved through the policy's resolver; a literal one is not, so
        // every hop is checked here as the first URL was.
        match policy.check_url(attempt.url()) {
            Ok(()) => attempt.follow(),
            Err(e) => {
                let e = Refused(format!("redirect to {}: {}", attempt.url(), e.0));
                attempt.error(e)
            }
        }
    })
}

/// The HTTP client of endpoints and webhooks, bound to the policy.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    policy: Arc<Policy>,
}

impl Client {
    pub fn new(policy: &Policy) -> Client {
        let policy = Arc::new(policy.clone());
        let http = reqwest::Client::builder()
            // A proxy would resolve and connect in our place, out of the policy's sight.
            .no_proxy()
            .dns_resolver(Arc::new(PolicyResolver { policy: policy.clone() }))
            .redirect(redirects(policy.clone()))
            .pool_max_idle_per_host(1024)
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(10))
            .build()
            .unwrap_or_default();
        Client { http, policy }
    }

    /// Whether `url` may be called, as far as the URL alone tells (see [`Policy::check_url`]).
    /// Literal addresses are only checked here: the resolver never sees them.
    pub fn check(&self, url: &reqwest::Url) -> Result<(), Refused> {
        self.policy.check_url(url)
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }
}

/// The policy's refusal behind a failed request (by the resolver or a redirect), if it was one.
pub fn refusal(e: &reqwest::Error) -> Option<&Refused> {
    let mut src = std::error::Error::source(e);
    while let Some(inner) = src {
        if let Some(r) = inner.downcast_ref::<Refused>() {
            return Some(r);
        }
        src = inner.source();
    }
    None
}
