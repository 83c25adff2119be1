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
diesel::allow_tables_to_appear_in_same_query!(
    database_servers,
    tenants,
    tenant_labels,
    api_tokens,
    audit_log
);
