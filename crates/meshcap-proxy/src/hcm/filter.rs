//! The request-filter hook (where the fault filter plugs in).

use std::any::Any;
use std::time::Duration;

use bytes::Bytes;

use crate::http1::RequestHead;

use super::ResponseFlags;

/// What a [`RequestFilter`] decided for a request.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FilterAction {
    /// Go on to the router.
    Continue,
    /// Wait this long, then call [`RequestFilter::on_request`] again (with
    /// [`FilterContext::delayed`] set), which may then abort or continue.
    Delay(Duration),
    /// Answer the request locally.
    LocalReply(LocalReply),
}

/// A response made up by a filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalReply {
    /// Status code.
    pub status: u16,
    /// Extra header fields (lower-case names), written after `content-type`.
    pub headers: Vec<(Bytes, Bytes)>,
    /// Body (`text/plain`); empty gives Envoy's body-less shape.
    pub body: Bytes,
    /// Close the connection after the reply (the HCM also closes when the request body is unread).
    pub close: bool,
    /// Envoy's response code details for the access log (`fault_filter_abort`).
    pub details: &'static str,
}

impl LocalReply {
    /// A text reply with no extra headers that keeps the connection open.
    ///
    /// ```
    /// let r = meshcap_proxy::hcm::LocalReply::text(503, "fault filter abort", "fault_filter_abort");
    /// assert_eq!(r.body.len(), 18);
    /// ```
    pub fn text(status: u16, body: &'static str, details: &'static str) -> LocalReply {
        LocalReply {
            status,
            headers: Vec::new(),
            body: Bytes::from_static(body.as_bytes()),
            close: false,
            details,
        }
    }
}

/// State a filter keeps about one request across calls. It lives until the request ends (after
/// [`RequestFilter::on_complete`]), so a guard stored in it (e.g. meshcap-fault's active-fault slot)
/// is released then.
#[derive(Default)]
pub struct FilterContext {
    delayed: Option<Duration>,
    response_rate_limit: Option<u64>,
    flags: ResponseFlags,
    state: Option<Box<dyn Any + Send + Sync>>,
}

impl std::fmt::Debug for FilterContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FilterContext")
            .field("delayed", &self.delayed)
            .field("response_rate_limit", &self.response_rate_limit)
            .field("flags", &self.flags)
            .field("state", &self.state.is_some())
            .finish()
    }
}

impl FilterContext {
    /// The delay already applied to this request (`None` on the first call).
    pub fn delayed(&self) -> Option<Duration> {
        self.delayed
    }
    /// Pace the response body to `bytes_per_second` (Envoy's `response_rate_limit`).
    pub fn set_response_rate_limit(&mut self, bytes_per_second: u64) {
        self.response_rate_limit = Some(bytes_per_second.max(1));
    }
    /// The response rate limit, if a filter set one.
    pub fn response_rate_limit(&self) -> Option<u64> {
        self.response_rate_limit
    }
    /// Add response flags for the access log (`FI`, `DI`).
    pub fn add_flags(&mut self, flags: ResponseFlags) {
        self.flags.insert(flags);
    }
    /// The flags filters added.
    pub fn flags(&self) -> ResponseFlags {
        self.flags
    }
    /// Keep per-request filter state (e.g. the fault decision to re-evaluate after a delay). Only
    /// requests that need it pay for the box.
    ///
    /// ```
    /// let mut ctx = meshcap_proxy::hcm::FilterContext::default();
    /// ctx.set_state(7u32);
    /// assert_eq!(ctx.state::<u32>(), Some(&7));
    /// assert_eq!(ctx.take_state::<u32>(), Some(7));
    /// assert!(ctx.state::<u32>().is_none());
    /// ```
    pub fn set_state<T: Any + Send + Sync>(&mut self, state: T) {
        self.state = Some(Box::new(state));
    }
    /// The state set with [`FilterContext::set_state`], if it has type `T`.
    pub fn state<T: Any>(&self) -> Option<&T> {
        self.state.as_ref()?.downcast_ref()
    }
    /// Take the state out, if it has type `T`.
    pub fn take_state<T: Any>(&mut self) -> Option<T> {
        let boxed = self.state.take()?;
        match boxed.downcast::<T>() {
            Ok(b) => Some(*b),
            Err(other) => {
                self.state = Some(other);
                None
            }
        }
    }
    pub(crate) fn record_delay(&mut self, d: Duration) {
        self.delayed = Some(self.delayed.unwrap_or_default() + d);
    }
}

/// A hook called once the request head is validated and before the upstream is chosen.
///
/// The fault filter implements it (meshcap-fault decides rate limit, then delay, then
/// abort-after-delay): return [`FilterAction::Delay`] and the HCM sleeps, then calls again; return
/// [`FilterAction::LocalReply`] to abort. [`RequestFilter::on_complete`] runs once when the request
/// ends, whatever happened (to release an active-fault slot).
pub trait RequestFilter: Send + Sync {
    /// Decide what happens to `head`.
    fn on_request(&self, head: &RequestHead, ctx: &mut FilterContext) -> FilterAction;
    /// The request ended.
    fn on_complete(&self, _ctx: &FilterContext) {}
}

/// A filter that always continues.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoFilter;

impl RequestFilter for NoFilter {
    fn on_request(&self, _head: &RequestHead, _ctx: &mut FilterContext) -> FilterAction {
        FilterAction::Continue
    }
}
