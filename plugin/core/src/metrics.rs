//! The counters the plugin keeps. The shell defines them in Envoy at configure time;
//! `/stats/prometheus` shows them under these names.

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Metric {
    MessagesAcked,
    FaultedClient,
    FaultedAuth,
    FaultedUnconfigured,
    FaultedUpstream,
    FaultedDeadline,
    FaultedBusy,
    Notifications,
    LicensesIssued,
    LicensesRecovered,
    LinesSkippedUnmapped,
    LinesSkippedInvalid,
    LinesSkippedUnknownKey,
    LinesAlreadyLicensed,
    LicensesRevoked,
    LicensesRestored,
    LicensesReduced,
    LicensesRenewed,
    OrdersSkipped,
    CalloutsFailedSalesforce,
    CalloutsFailedLicense,
    CalloutsFailedLedger,
    Logins,
    LinesBusy,
    Lookups,
    LedgerFull,
    /// A license server throttled the account (Keygen's 429).
    LicenseThrottled,
}

impl Metric {
    pub const ALL: [Metric; 27] = [
        Metric::MessagesAcked,
        Metric::FaultedClient,
        Metric::FaultedAuth,
        Metric::FaultedUnconfigured,
        Metric::FaultedUpstream,
        Metric::FaultedDeadline,
        Metric::FaultedBusy,
        Metric::Notifications,
        Metric::LicensesIssued,
        Metric::LicensesRecovered,
        Metric::LinesSkippedUnmapped,
        Metric::LinesSkippedInvalid,
        Metric::LinesSkippedUnknownKey,
        Metric::LinesAlreadyLicensed,
        Metric::LicensesRevoked,
        Metric::LicensesRestored,
        Metric::LicensesReduced,
        Metric::LicensesRenewed,
        Metric::OrdersSkipped,
        Metric::CalloutsFailedSalesforce,
        Metric::CalloutsFailedLicense,
        Metric::CalloutsFailedLedger,
        Metric::Logins,
        Metric::LinesBusy,
        Metric::Lookups,
        Metric::LedgerFull,
        Metric::LicenseThrottled,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Metric::MessagesAcked => "keygate_messages_acked",
            Metric::FaultedClient => "keygate_messages_faulted_client",
            Metric::FaultedAuth => "keygate_messages_faulted_auth",
            Metric::FaultedUnconfigured => "keygate_messages_faulted_unconfigured",
            Metric::FaultedUpstream => "keygate_messages_faulted_upstream",
            Metric::FaultedDeadline => "keygate_messages_faulted_deadline",
            Metric::FaultedBusy => "keygate_messages_faulted_busy",
            Metric::Notifications => "keygate_notifications",
            Metric::LicensesIssued => "keygate_licenses_issued",
            Metric::LicensesRecovered => "keygate_licenses_recovered",
            Metric::LinesSkippedUnmapped => "keygate_lines_skipped_unmapped",
            Metric::LinesSkippedInvalid => "keygate_lines_skipped_invalid",
            Metric::LinesSkippedUnknownKey => "keygate_lines_skipped_unknown_key",
            Metric::LinesAlreadyLicensed => "keygate_lines_already_licensed",
            Metric::LicensesRevoked => "keygate_licenses_revoked",
            Metric::LicensesRestored => "keygate_licenses_restored",
            Metric::LicensesReduced => "keygate_licenses_reduced",
            Metric::LicensesRenewed => "keygate_licenses_renewed",
            Metric::OrdersSkipped => "keygate_orders_skipped",
            Metric::CalloutsFailedSalesforce => "keygate_callouts_failed_salesforce",
            Metric::CalloutsFailedLicense => "keygate_callouts_failed_license",
            Metric::CalloutsFailedLedger => "keygate_callouts_failed_ledger",
            Metric::Logins => "keygate_logins",
            Metric::LinesBusy => "keygate_lines_busy",
            Metric::Lookups => "keygate_lookups",
            Metric::LedgerFull => "keygate_ledger_full",
            Metric::LicenseThrottled => "keygate_license_throttled",
        }
    }
}

/// The gauges the plugin sets: each upstream's readiness from the start-up self-check
/// (`selfcheck`), 1 when its last check passed, 0 otherwise. `/stats/prometheus` shows them as
/// `keygate_upstream_ready{upstream="…"}` with the shipped configs' `stats_tags`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Gauge {
    SalesforceReady,
    LicenseReady,
}

impl Gauge {
    pub const ALL: [Gauge; 2] = [Gauge::SalesforceReady, Gauge::LicenseReady];

    pub fn name(self) -> &'static str {
        match self {
            Gauge::SalesforceReady => "keygate_upstream_ready_salesforce",
            Gauge::LicenseReady => "keygate_upstream_ready_license",
        }
    }
}
