//! Whether a server trusts the trace context its callers send.

use crate::trace::{Link, SpanContext};

/// How a server treats a span context extracted from a request (OpenCensus's
/// `IsPublicEndpoint`).
///
/// ```
/// use tracewire::propagation::{RemoteParent, TrustPolicy};
/// use tracewire::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};
///
/// let remote = SpanContext::new(
///     TraceId::from_u128(1),
///     SpanId::from_u64(2),
///     TraceFlags::SAMPLED,
///     true,
///     TraceState::NONE,
/// );
/// assert_eq!(TrustPolicy::Parent.apply(&remote), RemoteParent::Parent(remote.clone()));
/// match TrustPolicy::LinkOnly.apply(&remote) {
///     RemoteParent::NewRootWithLink(link) => assert_eq!(link.span_context, remote),
///     other => panic!("{other:?}"),
/// }
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum TrustPolicy {
    /// Continue the caller's trace: its span context is the parent of the server
    /// span, and its sampling decision counts (the default, for internal services).
    /// A decision sent without ids ([`SpanContext::sampling_only`], e.g. B3
    /// `b3: 0`) counts too: the server span starts a new trace that follows it.
    #[default]
    Parent,
    /// A public endpoint: callers are not trusted to choose the trace id or the
    /// sampling decision, whatever format they send it in. The server starts a
    /// new root span and links it to the caller's span; a decision sent without
    /// ids is ignored.
    LinkOnly,
}

/// What the server span should start from, as decided by [`TrustPolicy::apply`].
#[derive(Clone, Debug, PartialEq)]
pub enum RemoteParent {
    /// No valid remote span context (or an untrusted decision): start a new root
    /// span.
    NewRoot,
    /// Start the server span as a child of this remote span context: a valid one,
    /// or a [sampling decision without ids](SpanContext::sampling_only), whose
    /// child is a new trace that follows the decision.
    Parent(SpanContext),
    /// Start a new root span and add this link (to the caller's span) to it.
    NewRootWithLink(Link),
}

impl TrustPolicy {
    /// Decides how a server span starts, given the span context extracted from
    /// the request ([`SpanContext::INVALID`] or any invalid one if none was found).
    pub fn apply(self, remote: &SpanContext) -> RemoteParent {
        match self {
            TrustPolicy::Parent if remote.is_valid() || remote.is_sampling_only() => {
                RemoteParent::Parent(remote.clone())
            }
            TrustPolicy::LinkOnly if remote.is_valid() => {
                RemoteParent::NewRootWithLink(Link::new(remote.clone(), Vec::new()))
            }
            _ => RemoteParent::NewRoot,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_valid_remote_context_both_policies_start_a_new_root() {
        for policy in [TrustPolicy::Parent, TrustPolicy::LinkOnly] {
            assert_eq!(policy.apply(&SpanContext::INVALID), RemoteParent::NewRoot);
        }
    }

    #[test]
    fn a_decision_without_ids_is_followed_only_when_trusted() {
        use crate::trace::SamplingState;
        let deny = SpanContext::sampling_only(SamplingState::NotSampled);
        assert_eq!(
            TrustPolicy::Parent.apply(&deny),
            RemoteParent::Parent(deny.clone())
        );
        assert_eq!(TrustPolicy::LinkOnly.apply(&deny), RemoteParent::NewRoot);
    }

    #[test]
    fn default_policy_trusts_the_caller() {
        assert_eq!(TrustPolicy::default(), TrustPolicy::Parent);
    }
}
