"""Privacy: PII report, pseudonymisation, consent and the purpose check, erasure,
suppression and retention.

* :func:`pii_report` -- which personal data is stored where, and how much.
* :func:`pseudonymise`, :func:`create_pseudonymised_view` -- keyed HMAC-SHA256 of
  identifiers (key from ``SEGMINT_PSEUDONYMIZATION_KEY``, never stored).
* :func:`may_use` -- THE purpose check, with :class:`ConsentPolicy`; its
  set-based twin :func:`permitted_persons_sql`; the registry
  (:func:`record_consent`, :func:`consent_state`, :func:`consent_history`,
  :func:`sync_event_consents`).
* :func:`erase` -- a person's rows out of every table and out of the file's
  bytes, their identifiers on the suppression list; :func:`resume_erasures`.
* :func:`is_suppressed` -- the check ingestion and the real-time intake make.
* :func:`apply_retention` -- old events and quarantined rows deleted.
"""

from __future__ import annotations

from segmint.data.privacy.audit import AuditEntry, audit_entries, record_audit
from segmint.data.privacy.compaction import CompactionResult, compact_database
from segmint.data.privacy.consent import (
    DEFAULT_POLICY,
    PURPOSES,
    BoundSql,
    ConsentChoice,
    ConsentPolicy,
    consent_history,
    consent_state,
    latest_choice,
    may_use,
    permitted_persons,
    permitted_persons_sql,
    record_consent,
    sync_event_consents,
)
from segmint.data.privacy.erasure import (
    ErasureReport,
    erase,
    erasure_requests,
    resume_erasures,
)
from segmint.data.privacy.identifiers import PersonIdentifiers, resolve_identifiers
from segmint.data.privacy.pseudonymise import (
    KEY_ENV,
    KEY_FILE_ENV,
    PrivacySettings,
    create_pseudonymised_view,
    key_id,
    load_key,
    normalise_identifier,
    pseudonymise,
    pseudonymise_array,
    register_pseudonymise_function,
    require_key,
)
from segmint.data.privacy.report import PiiColumnStats, pii_report
from segmint.data.privacy.retention import RetentionReport, apply_retention
from segmint.data.privacy.suppression import (
    SuppressionCount,
    add_to_suppression,
    drop_suppressed,
    is_suppressed,
    suppressed_values,
    suppression_counts,
)
from segmint.data.privacy.tables import ensure_privacy_tables

__all__ = [
    "DEFAULT_POLICY",
    "KEY_ENV",
    "KEY_FILE_ENV",
    "PURPOSES",
    "AuditEntry",
    "BoundSql",
    "CompactionResult",
    "ConsentChoice",
    "ConsentPolicy",
    "ErasureReport",
    "PersonIdentifiers",
    "PiiColumnStats",
    "PrivacySettings",
    "RetentionReport",
    "SuppressionCount",
    "add_to_suppression",
    "apply_retention",
    "audit_entries",
    "compact_database",
    "consent_history",
    "consent_state",
    "create_pseudonymised_view",
    "drop_suppressed",
    "ensure_privacy_tables",
    "erase",
    "erasure_requests",
    "is_suppressed",
    "key_id",
    "latest_choice",
    "load_key",
    "may_use",
    "normalise_identifier",
    "permitted_persons",
    "permitted_persons_sql",
    "pii_report",
    "pseudonymise",
    "pseudonymise_array",
    "record_audit",
    "record_consent",
    "register_pseudonymise_function",
    "require_key",
    "resolve_identifiers",
    "resume_erasures",
    "suppressed_values",
    "suppression_counts",
    "sync_event_consents",
]
