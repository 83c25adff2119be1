//! The states rows move through, as enums: one spelling of each, checked by
//! the compiler, instead of string literals repeated across files. The
//! control migrations' `CHECK (state IN (…))` constraints list the same
//! words; `as_str` is what is stored.

macro_rules! states {
    ($(#[$doc:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($variant),+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The word stored in the control database and shown by the API.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }

            /// Every stored word, for error messages.
            pub fn names() -> Vec<&'static str> {
                Self::ALL.iter().map(|s| s.as_str()).collect()
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = crate::Error;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::ALL
                    .iter()
                    .copied()
                    .find(|v| v.as_str() == s)
                    .ok_or_else(|| {
                        crate::Error::invalid(format!(
                            "invalid state {s:?}: one of {:?}",
                            Self::names()
                        ))
                    })
            }
        }
    };
}

states! {
    /// A rollout as a whole.
    RolloutState {
        Running => "running",
        Paused => "paused",
        Halted => "halted",
        Succeeded => "succeeded",
        Failed => "failed",
        Cancelled => "cancelled",
    }
}

states! {
    /// One tenant's task in a rollout.
    TaskState {
        Pending => "pending",
        Running => "running",
        Succeeded => "succeeded",
        Failed => "failed",
        Skipped => "skipped",
        Cancelled => "cancelled",
    }
}

states! {
    /// A tenant's lifecycle (a deleted tenant keeps its status and gets
    /// `deleted_at`).
    TenantStatus {
        Provisioning => "provisioning",
        Active => "active",
        Suspended => "suspended",
    }
}

states! {
    /// A database server's lifecycle: `active` takes new tenants;
    /// `draining` takes none while its tenants are moved off; `retired`
    /// takes none and holds no live tenant.
    ServerStatus {
        Active => "active",
        Draining => "draining",
        Retired => "retired",
    }
}

states! {
    /// A durable job (`jobs` table).
    JobState {
        Pending => "pending",
        Running => "running",
        Succeeded => "succeeded",
        Dead => "dead",
    }
}

states! {
    /// A tenant backup (`backups` table): `completed` once its artifact is
    /// durably in the store, `verified` once a restore of it into a scratch
    /// database matched its manifest, `failed` when taking or verifying it
    /// failed (or it was interrupted).
    BackupState {
        Pending => "pending",
        Running => "running",
        Completed => "completed",
        Verified => "verified",
        Failed => "failed",
    }
}

states! {
    /// What became of one fire time of a schedule (`schedule_runs` table):
    /// `started` (its job was queued in the same transaction as the row),
    /// `missed` (not run: it passed while no scheduler ran, or a newer fire
    /// time was due too), `skipped_overlap` (not run: the schedule's previous
    /// job was still pending or running).
    ScheduleRunState {
        Started => "started",
        Missed => "missed",
        SkippedOverlap => "skipped_overlap",
    }
}

states! {
    /// What a schedule does with fire times that passed while no scheduler
    /// ran (`schedules.missed`): `skip` runs only a fire time at most a
    /// minute late, `run_once` runs the newest due fire time however late;
    /// with both, every older due fire time is recorded `missed`.
    MissedPolicy {
        Skip => "skip",
        RunOnce => "run_once",
    }
}

states! {
    /// A tenant data export (`exports` table): `requested` (its job is
    /// queued), `ready` (the zip is in the store and may be downloaded until
    /// `expires_at`), `failed` (the job gave up; `error` says why), `expired`
    /// (past `expires_at`; the file is deleted).
    ExportState {
        Requested => "requested",
        Ready => "ready",
        Failed => "failed",
        Expired => "expired",
    }
}

states! {
    /// One delivery of an outbox event to one recipient or endpoint
    /// (`deliveries` table): `pending` (queued, not tried yet), `retrying`
    /// (failed, another attempt is scheduled), `delivered`, `dead` (a
    /// permanent failure or the last attempt failed; `POST
    /// /v1/outbox/{id}/retry` queues it again), `skipped` (nothing to send
    /// with: no SMTP configured, the endpoint disabled or deleted).
    DeliveryState {
        Pending => "pending",
        Retrying => "retrying",
        Delivered => "delivered",
        Dead => "dead",
        Skipped => "skipped",
    }
}

states! {
    /// How a delivery travels.
    Channel {
        Email => "email",
        Webhook => "webhook",
    }
}

states! {
    /// What one delivery attempt led to (`delivery_attempts.outcome`).
    AttemptOutcome {
        Delivered => "delivered",
        Retry => "retry",
        Failed => "failed",
    }
}

states! {
    /// The kind of an outbox event (`outbox.kind`). `webhook.endpoint_failing`
    /// is the control plane's own warning to the operators.
    EventKind {
        TenantCreated => "tenant.created",
        TenantSuspended => "tenant.suspended",
        TenantDeleted => "tenant.deleted",
        PlanChanged => "plan.changed",
        TrialEnding => "trial.ending",
        TrialExpired => "trial.expired",
        RolloutSucceeded => "rollout.succeeded",
        RolloutFailed => "rollout.failed",
        RolloutHalted => "rollout.halted",
        BackupFailed => "backup.failed",
        RestoreCompleted => "restore.completed",
        ExportReady => "export.ready",
        EndpointFailing => "webhook.endpoint_failing",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_round_trip_and_unknown_words_are_refused() {
        for s in TaskState::ALL {
            assert_eq!(s.as_str().parse::<TaskState>().ok(), Some(*s));
        }
        for s in RolloutState::ALL {
            assert_eq!(s.to_string().parse::<RolloutState>().ok(), Some(*s));
        }
        let err = "paused".parse::<TaskState>().err().map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("pending")));
        assert_eq!(TenantStatus::Active.as_str(), "active");
    }
}
