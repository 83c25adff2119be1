//! diesel table definitions of the control database (see
//! `migrations/control/*`). Types stay in the subset both backends share.

diesel::table! {
    database_servers (id) {
        id -> Text,
        name -> Text,
        kind -> Text,
        url -> Text,
        isolation -> Text,
        capacity -> Integer,
        status -> Text,
        created_at -> Timestamp,
    }
}

diesel::table! {
    tenants (id) {
        id -> Text,
        slug -> Text,
        name -> Text,
        status -> Text,
        contact_email -> Nullable<Text>,
        server_id -> Text,
        schema_version -> Nullable<Text>,
        plan_id -> Nullable<Text>,
        trial_ends_at -> Nullable<Timestamp>,
        created_at -> Timestamp,
        updated_at -> Timestamp,
        deleted_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    tenant_labels (tenant_id, key) {
        tenant_id -> Text,
        key -> Text,
        value -> Text,
    }
}

diesel::table! {
    api_tokens (id) {
        id -> Text,
        kind -> Text,
        tenant_id -> Nullable<Text>,
        name -> Text,
        token_hash -> Text,
        created_at -> Timestamp,
        revoked_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    audit_log (id) {
        id -> BigInt,
        actor -> Text,
        action -> Text,
        resource_type -> Text,
        resource_id -> Nullable<Text>,
        tenant_id -> Nullable<Text>,
        before_state -> Nullable<Text>,
        after_state -> Nullable<Text>,
        ip_address -> Nullable<Text>,
        user_agent -> Nullable<Text>,
        created_at -> Timestamp,
    }
}

diesel::joinable!(tenants -> database_servers (server_id));
diesel::joinable!(tenant_labels -> tenants (tenant_id));

diesel::table! {
    rollouts (id) {
        id -> Text,
        target -> Text,
        target_version -> Nullable<Text>,
        selector -> Text,
        waves -> Text,
        state -> Text,
        current_wave -> Integer,
        wave_count -> Integer,
        concurrency -> Integer,
        per_server_concurrency -> Integer,
        max_attempts -> Integer,
        backoff_base_ms -> BigInt,
        backoff_max_ms -> BigInt,
        timeout_s -> Integer,
        max_failed -> Nullable<Integer>,
        max_failed_percent -> Nullable<Integer>,
        failures_forgiven -> Integer,
        verify -> Bool,
        priority -> Integer,
        total -> Integer,
        halt_reason -> Nullable<Text>,
        created_by -> Text,
        created_at -> Timestamp,
        updated_at -> Timestamp,
        finished_at -> Nullable<Timestamp>,
        backup -> Bool,
        restore_on_failure -> Bool,
        allow_drift -> Bool,
        wave_done_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    tasks (id) {
        id -> BigInt,
        rollout_id -> Text,
        tenant_id -> Text,
        server_id -> Text,
        wave -> Integer,
        priority -> Integer,
        state -> Text,
        from_version -> Nullable<Text>,
        to_version -> Nullable<Text>,
        reached_version -> Nullable<Text>,
        attempts -> Integer,
        max_attempts -> Integer,
        next_attempt_at -> Timestamp,
        lease_owner -> Nullable<Text>,
        lease_expires_at -> Nullable<Timestamp>,
        last_error -> Nullable<Text>,
        error_version -> Nullable<Text>,
        started_at -> Nullable<Timestamp>,
        finished_at -> Nullable<Timestamp>,
        duration_ms -> Nullable<BigInt>,
        backup_id -> Nullable<Text>,
        restored -> Bool,
    }
}

diesel::table! {
    migration_runs (id) {
        id -> BigInt,
        tenant_id -> Text,
        task_id -> Nullable<BigInt>,
        version -> Text,
        direction -> Text,
        worker -> Text,
        ran_at -> Timestamp,
        recovered -> Bool,
    }
}

diesel::joinable!(tasks -> rollouts (rollout_id));
diesel::joinable!(tasks -> tenants (tenant_id));
diesel::table! {
    plans (id) {
        id -> Text,
        slug -> Text,
        name -> Text,
        price_cents -> BigInt,
        currency -> Text,
        active -> Bool,
        fallback_plan_id -> Nullable<Text>,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    plan_features (plan_id, feature) {
        plan_id -> Text,
        feature -> Text,
    }
}

diesel::table! {
    feature_overrides (tenant_id, feature) {
        tenant_id -> Text,
        feature -> Text,
        enabled -> Bool,
        reason -> Nullable<Text>,
        actor -> Text,
        expires_at -> Nullable<Timestamp>,
        created_at -> Timestamp,
    }
}

diesel::table! {
    change_counter (id) {
        id -> Integer,
        value -> BigInt,
    }
}

diesel::joinable!(plan_features -> plans (plan_id));
diesel::joinable!(feature_overrides -> tenants (tenant_id));

diesel::allow_tables_to_appear_in_same_query!(
    database_servers,
    tenants,
    tenant_labels,
    api_tokens,
    audit_log,
    rollouts,
    tasks,
    migration_runs,
    plans,
    plan_features,
    feature_overrides,
    change_counter,
    jobs,
    backups,
    schedules,
    schedule_runs,
    exports,
    outbox,
    webhook_endpoints,
    deliveries,
    delivery_attempts,
    idempotency_keys,
    console_sessions,
    tenant_trials,
    tenant_drift,
    rollout_counters,
    task_attempts,
);

diesel::table! {
    jobs (id) {
        id -> BigInt,
        kind -> Text,
        payload -> Text,
        dedup_key -> Nullable<Text>,
        state -> Text,
        attempts -> Integer,
        max_attempts -> Integer,
        run_at -> Timestamp,
        lease_owner -> Nullable<Text>,
        lease_expires_at -> Nullable<Timestamp>,
        last_error -> Nullable<Text>,
        created_at -> Timestamp,
        updated_at -> Timestamp,
        finished_at -> Nullable<Timestamp>,
        rerun -> Bool,
    }
}

diesel::table! {
    backups (id) {
        id -> Text,
        tenant_id -> Text,
        server_kind -> Text,
        state -> Text,
        reason -> Text,
        schema_version -> Nullable<Text>,
        artifact -> Text,
        size_bytes -> Nullable<BigInt>,
        sha256 -> Nullable<Text>,
        manifest -> Nullable<Text>,
        pinned -> Bool,
        error -> Nullable<Text>,
        created_at -> Timestamp,
        started_at -> Nullable<Timestamp>,
        completed_at -> Nullable<Timestamp>,
        verified_at -> Nullable<Timestamp>,
        verify_error -> Nullable<Text>,
        heartbeat_at -> Nullable<Timestamp>,
    }
}

diesel::joinable!(backups -> tenants (tenant_id));

diesel::table! {
    schedules (id) {
        id -> BigInt,
        name -> Text,
        cron -> Text,
        timezone -> Text,
        job -> Text,
        selector -> Nullable<Text>,
        params -> Nullable<Text>,
        enabled -> Bool,
        missed -> Text,
        created_at -> Timestamp,
        updated_at -> Timestamp,
        last_fired_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    schedule_runs (id) {
        id -> BigInt,
        schedule_id -> BigInt,
        fire_at -> Timestamp,
        state -> Text,
        job_id -> Nullable<BigInt>,
        decided_at -> Timestamp,
        note -> Nullable<Text>,
    }
}

diesel::joinable!(schedule_runs -> schedules (schedule_id));
diesel::joinable!(schedule_runs -> jobs (job_id));

diesel::table! {
    exports (id) {
        id -> Text,
        tenant_id -> Text,
        state -> Text,
        format -> Text,
        requested_by -> Text,
        artifact -> Text,
        size_bytes -> Nullable<BigInt>,
        sha256 -> Nullable<Text>,
        token_hash -> Nullable<Text>,
        expires_at -> Nullable<Timestamp>,
        error -> Nullable<Text>,
        created_at -> Timestamp,
        ready_at -> Nullable<Timestamp>,
    }
}

diesel::joinable!(exports -> tenants (tenant_id));

diesel::table! {
    outbox (id) {
        id -> Text,
        kind -> Text,
        tenant_id -> Nullable<Text>,
        body -> Text,
        dedup_key -> Nullable<Text>,
        created_at -> Timestamp,
        dispatched_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    webhook_endpoints (id) {
        id -> Text,
        url -> Text,
        description -> Nullable<Text>,
        event_kinds -> Text,
        enabled -> Bool,
        disabled_reason -> Nullable<Text>,
        secret -> Text,
        previous_secret -> Nullable<Text>,
        previous_expires_at -> Nullable<Timestamp>,
        failing_since -> Nullable<Timestamp>,
        warned_at -> Nullable<Timestamp>,
        created_at -> Timestamp,
        updated_at -> Timestamp,
        deleted_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    deliveries (id) {
        id -> BigInt,
        event_id -> Text,
        channel -> Text,
        target -> Text,
        state -> Text,
        attempts -> Integer,
        next_attempt_at -> Nullable<Timestamp>,
        last_error -> Nullable<Text>,
        created_at -> Timestamp,
        updated_at -> Timestamp,
        delivered_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    delivery_attempts (id) {
        id -> BigInt,
        delivery_id -> BigInt,
        attempt -> Integer,
        started_at -> Timestamp,
        status -> Nullable<Integer>,
        latency_ms -> BigInt,
        outcome -> Text,
        error -> Nullable<Text>,
        response_excerpt -> Nullable<Text>,
    }
}

diesel::joinable!(deliveries -> outbox (event_id));
diesel::joinable!(delivery_attempts -> deliveries (delivery_id));

diesel::table! {
    idempotency_keys (scope, key) {
        scope -> Text,
        key -> Text,
        request_hash -> Text,
        status -> Nullable<Integer>,
        response -> Nullable<Text>,
        created_at -> Timestamp,
    }
}

diesel::table! {
    console_sessions (id) {
        id -> Text,
        token_hash -> Text,
        csrf_token -> Text,
        created_at -> Timestamp,
        expires_at -> Timestamp,
        last_seen_at -> Timestamp,
        revoked_at -> Nullable<Timestamp>,
        ip -> Nullable<Text>,
        user_agent -> Nullable<Text>,
    }
}

diesel::table! {
    tenant_trials (tenant_id, plan_id) {
        tenant_id -> Text,
        plan_id -> Text,
        started_at -> Timestamp,
        started_by -> Text,
    }
}

diesel::table! {
    rollout_counters (rollout_id, wave, state) {
        rollout_id -> Text,
        wave -> Integer,
        state -> Text,
        n -> BigInt,
        first_started_at -> Nullable<Timestamp>,
        last_finished_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    task_attempts (id) {
        id -> BigInt,
        task_id -> BigInt,
        attempt -> Integer,
        worker -> Text,
        outcome -> Text,
        error -> Nullable<Text>,
        error_version -> Nullable<Text>,
        reached_version -> Nullable<Text>,
        started_at -> Timestamp,
        finished_at -> Timestamp,
        duration_ms -> BigInt,
    }
}

diesel::joinable!(task_attempts -> tasks (task_id));

diesel::table! {
    tenant_drift (tenant_id) {
        tenant_id -> Text,
        schema_version -> Nullable<Text>,
        drifted -> Bool,
        difference_count -> Integer,
        differences -> Text,
        checked_at -> Timestamp,
    }
}

diesel::joinable!(tenant_drift -> tenants (tenant_id));
