//! Notifications: what happens to the outbox's events
//! (`tenantplane_control_db::outbox`, written in the transaction of each
//! change).
//!
//! - [`relay`] fans undispatched events out into deliveries — an e-mail per
//!   recipient (the tenant's contact or the operators, by kind) and a
//!   webhook per endpoint that wants the kind — and queues a
//!   [`job::Deliver`] job for each.
//! - [`job`] makes one attempt per run ([`send`]: lettre's SMTP transport,
//!   or a Standard Webhooks signed POST through ureq), logs it, and retries
//!   on the schedule in [`config`] (5 s … 24 h, about three days) or marks
//!   the delivery `dead`.
//! - [`endpoints`]: webhook endpoints, secrets, rotation, replay;
//!   [`deliveries`]: the operators' view and retries.
//!
//! Module order (imports point down): endpoints, deliveries → relay → job
//! → send → templates, signing, netcheck, rows; everything → config.

pub mod config;
pub mod deliveries;
pub mod endpoints;
pub mod job;
pub mod netcheck;
pub mod relay;
pub mod rows;
pub mod send;
pub mod signing;
pub mod templates;

pub use config::{install, installed, NotifyConfig, SmtpSettings, SmtpTls};
pub use job::Deliver;
pub use relay::{dispatch, Relay};

/// Registers the notification job kinds with a worker's registry.
pub fn register(registry: &mut tenantplane_jobs::Registry) {
    registry.register::<Deliver>();
}
