//! The resilience counters, typed: each is one family `bulwark_<name>_total{target,
//! reason}` with its help text, listed once.

/// A resilience counter. Rendered as `bulwark_<name>_total{target, reason}`; the target is
/// a policy target (bounded by the policy), the reason a fixed label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Resilience {
    /// Retries sent, by the failure retried.
    Retries,
    /// Retries the policy allowed but the body could not be replayed.
    RetriesSkipped,
    /// Retries not sent because the budget was spent.
    RetryBudgetExhausted,
    /// Hedged requests, by what became of them.
    Hedges,
    /// Endpoints ejected, by reason.
    OutlierEjections,
    /// Ejections not made because `maxEjectionPercent` was reached.
    OutlierEjectionsSkipped,
    /// Endpoints back from ejection, on probation.
    OutlierReturns,
    /// Picks made in panic mode.
    BalancerPanic,
    /// Requests refused by the bulkhead.
    BulkheadRejections,
    /// Failed lookups of hostname endpoints.
    DnsFailures,
}

impl Resilience {
    /// Every counter, in exposition order.
    pub const ALL: [Resilience; 10] = [
        Resilience::Retries,
        Resilience::RetriesSkipped,
        Resilience::RetryBudgetExhausted,
        Resilience::Hedges,
        Resilience::OutlierEjections,
        Resilience::OutlierEjectionsSkipped,
        Resilience::OutlierReturns,
        Resilience::BalancerPanic,
        Resilience::BulkheadRejections,
        Resilience::DnsFailures,
    ];

    /// The name inside `bulwark_<name>_total`.
    pub fn name(self) -> &'static str {
        match self {
            Resilience::Retries => "retries",
            Resilience::RetriesSkipped => "retries_skipped",
            Resilience::RetryBudgetExhausted => "retry_budget_exhausted",
            Resilience::Hedges => "hedges",
            Resilience::OutlierEjections => "outlier_ejections",
            Resilience::OutlierEjectionsSkipped => "outlier_ejections_skipped",
            Resilience::OutlierReturns => "outlier_returns",
            Resilience::BalancerPanic => "balancer_panic",
            Resilience::BulkheadRejections => "bulkhead_rejections",
            Resilience::DnsFailures => "dns_failures",
        }
    }

    /// The `# HELP` text.
    pub fn help(self) -> &'static str {
        match self {
            Resilience::Retries => "Retries sent, by the failure retried.",
            Resilience::RetriesSkipped => {
                "Retries the policy allowed but the request body could not be replayed (past maxBufferedBodyBytes)."
            }
            Resilience::RetryBudgetExhausted => {
                "Retries not sent because the retry budget was spent."
            }
            Resilience::Hedges => {
                "Hedged requests: sent, original_won, hedge_won, budget_exhausted."
            }
            Resilience::OutlierEjections => "Endpoints ejected, by reason.",
            Resilience::OutlierEjectionsSkipped => {
                "Ejections not made because maxEjectionPercent was reached."
            }
            Resilience::OutlierReturns => "Endpoints returned from ejection to probation.",
            Resilience::BalancerPanic => {
                "Picks made in panic mode (too few healthy endpoints; ejections ignored)."
            }
            Resilience::BulkheadRejections => {
                "Requests refused by the bulkhead: bulkhead_full or bulkhead_queue_timeout."
            }
            Resilience::DnsFailures => "Failed lookups of hostname endpoints.",
        }
    }
}
