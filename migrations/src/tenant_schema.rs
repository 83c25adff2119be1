//! diesel's view of the tenant schema at head (PostgreSQL), generated with
//! `diesel print-schema` from `tenant/postgres`. Do not edit: regenerate with
//! `TENANTPLANE_UPDATE_SCHEMA=1 cargo test -p tenantplane-migrations --test schema diesel_cli`.

// @generated automatically by Diesel CLI.

pub mod sql_types {
    #[derive(diesel::sql_types::SqlType)]
    #[diesel(postgres_type(name = "user_role"))]
    pub struct UserRole;
}

diesel::table! {
    api_webhooks (id) {
        id -> Int8,
        event -> Text,
        target_url -> Text,
        secret -> Text,
        status -> Text,
        created_by -> Nullable<Int8>,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    assistant_messages (id) {
        id -> Int8,
        session_id -> Int8,
        role -> Text,
        content -> Text,
        created_at -> Timestamp,
    }
}

diesel::table! {
    assistant_sessions (id) {
        id -> Int8,
        user_id -> Int8,
        shop_id -> Nullable<Int8>,
        title -> Nullable<Text>,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    audit_log (id) {
        id -> Int8,
        user_id -> Nullable<Int8>,
        action -> Text,
        details -> Nullable<Text>,
        created_at -> Timestamp,
        before_state -> Nullable<Text>,
        after_state -> Nullable<Text>,
        resource_type -> Nullable<Text>,
        resource_id -> Nullable<Text>,
        ip_address -> Nullable<Text>,
        user_agent -> Nullable<Text>,
    }
}

diesel::table! {
    credits (id) {
        id -> Int8,
        shop_id -> Int8,
        sale_id -> Nullable<Int8>,
        user_id -> Nullable<Int8>,
        customer_name -> Text,
        customer_phone -> Nullable<Text>,
        amount_minor -> Int8,
        paid_minor -> Int8,
        currency -> Text,
        due_date -> Nullable<Date>,
        status -> Text,
        note -> Nullable<Text>,
        created_at -> Timestamp,
        updated_at -> Timestamp,
        last_reminder_at -> Nullable<Timestamp>,
        reminder_count -> Int4,
        reminder_opt_out -> Bool,
    }
}

diesel::table! {
    customer_metrics (shop_id, customer_phone) {
        shop_id -> Int8,
        customer_phone -> Text,
        lifetime_value_minor -> Int8,
        visit_count -> Int4,
        first_purchase_at -> Timestamp,
        last_purchase_at -> Timestamp,
    }
}

diesel::table! {
    expense_categories (id) {
        id -> Int8,
        shop_id -> Int8,
        name -> Text,
        color -> Nullable<Text>,
        rules_json -> Nullable<Text>,
        created_at -> Timestamp,
    }
}

diesel::table! {
    expenses (id) {
        id -> Int8,
        shop_id -> Int8,
        user_id -> Nullable<Int8>,
        amount_minor -> Int8,
        currency -> Text,
        description -> Nullable<Text>,
        category -> Nullable<Text>,
        spent_at -> Timestamp,
        created_at -> Timestamp,
        category_id -> Nullable<Int8>,
    }
}

diesel::table! {
    exports (id) {
        id -> Int8,
        requested_by -> Int8,
        shop_id -> Nullable<Int8>,
        kind -> Text,
        params -> Nullable<Text>,
        export_token -> Text,
        status -> Text,
        file_path -> Nullable<Text>,
        error -> Nullable<Text>,
        expires_at -> Timestamp,
        created_at -> Timestamp,
        completed_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    invoice_counters (shop_id) {
        shop_id -> Int8,
        last_number -> Int8,
    }
}

diesel::table! {
    recommendations (id) {
        id -> Int8,
        shop_id -> Int8,
        kind -> Text,
        subject_key -> Text,
        payload -> Text,
        computed_at -> Timestamp,
        expires_at -> Timestamp,
    }
}

diesel::table! {
    reminder_log (id) {
        id -> Int8,
        credit_id -> Int8,
        channel -> Text,
        recipient -> Nullable<Text>,
        status -> Text,
        error -> Nullable<Text>,
        provider_message_id -> Nullable<Text>,
        triggered_by -> Nullable<Int8>,
        sent_at -> Timestamp,
    }
}

diesel::table! {
    sales (id) {
        id -> Int8,
        shop_id -> Int8,
        user_id -> Nullable<Int8>,
        customer_name -> Nullable<Text>,
        customer_phone -> Nullable<Text>,
        subtotal_minor -> Int8,
        discount_minor -> Int8,
        tax_minor -> Int8,
        total_minor -> Int8,
        item_count -> Int4,
        payment_method -> Text,
        currency -> Text,
        note -> Nullable<Text>,
        sold_at -> Timestamp,
        created_at -> Timestamp,
        invoice_number -> Int8,
        locked_by -> Nullable<Int8>,
        locked_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    settings (shop_id) {
        shop_id -> Int8,
        currency -> Text,
        tax_rate_bp -> Int4,
        prices_include_tax -> Bool,
        receipt_footer -> Nullable<Text>,
        extra_json -> Nullable<Text>,
        updated_at -> Timestamp,
        locked_until -> Nullable<Timestamp>,
    }
}

diesel::table! {
    shop_profile (id) {
        id -> Int8,
        name -> Text,
        legal_name -> Nullable<Text>,
        address -> Nullable<Text>,
        phone -> Nullable<Text>,
        email -> Nullable<Text>,
        tax_number -> Nullable<Text>,
        timezone -> Text,
        is_active -> Bool,
        created_at -> Timestamp,
        updated_at -> Timestamp,
        logo_path -> Nullable<Text>,
        primary_colour -> Nullable<Text>,
        secondary_colour -> Nullable<Text>,
        invoice_prefix -> Nullable<Text>,
        signature_blob -> Nullable<Bytea>,
        watermark_path -> Nullable<Text>,
    }
}

diesel::table! {
    use diesel::sql_types::*;
    use super::sql_types::UserRole;

    user_invites (id) {
        id -> Int8,
        email -> Text,
        role -> UserRole,
        token_hash -> Text,
        invited_by -> Int8,
        expires_at -> Timestamp,
        accepted_at -> Nullable<Timestamp>,
        accepted_user_id -> Nullable<Int8>,
        revoked_at -> Nullable<Timestamp>,
        created_at -> Timestamp,
    }
}

diesel::table! {
    use diesel::sql_types::*;
    use super::sql_types::UserRole;

    users (id) {
        id -> Int8,
        username -> Text,
        full_name -> Nullable<Text>,
        email -> Nullable<Text>,
        phone -> Nullable<Text>,
        password_hash -> Text,
        role -> UserRole,
        is_active -> Bool,
        created_at -> Timestamp,
        updated_at -> Timestamp,
        role_legacy -> Nullable<Text>,
        role_legacy_present -> Bool,
        last_login_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    webhook_events (id) {
        id -> Int8,
        webhook_id -> Int8,
        event -> Text,
        payload -> Text,
        status -> Text,
        attempts -> Int4,
        next_attempt_at -> Nullable<Timestamp>,
        last_error -> Nullable<Text>,
        last_response_code -> Nullable<Int4>,
        delivered_at -> Nullable<Timestamp>,
        created_at -> Timestamp,
    }
}

diesel::joinable!(api_webhooks -> users (created_by));
diesel::joinable!(assistant_messages -> assistant_sessions (session_id));
diesel::joinable!(assistant_sessions -> shop_profile (shop_id));
diesel::joinable!(assistant_sessions -> users (user_id));
diesel::joinable!(audit_log -> users (user_id));
diesel::joinable!(credits -> sales (sale_id));
diesel::joinable!(credits -> shop_profile (shop_id));
diesel::joinable!(credits -> users (user_id));
diesel::joinable!(customer_metrics -> shop_profile (shop_id));
diesel::joinable!(expense_categories -> shop_profile (shop_id));
diesel::joinable!(expenses -> expense_categories (category_id));
diesel::joinable!(expenses -> shop_profile (shop_id));
diesel::joinable!(expenses -> users (user_id));
diesel::joinable!(exports -> shop_profile (shop_id));
diesel::joinable!(exports -> users (requested_by));
diesel::joinable!(invoice_counters -> shop_profile (shop_id));
diesel::joinable!(recommendations -> shop_profile (shop_id));
diesel::joinable!(reminder_log -> credits (credit_id));
diesel::joinable!(reminder_log -> users (triggered_by));
diesel::joinable!(sales -> shop_profile (shop_id));
diesel::joinable!(settings -> shop_profile (shop_id));
diesel::joinable!(webhook_events -> api_webhooks (webhook_id));

diesel::allow_tables_to_appear_in_same_query!(
    api_webhooks,
    assistant_messages,
    assistant_sessions,
    audit_log,
    credits,
    customer_metrics,
    expense_categories,
    expenses,
    exports,
    invoice_counters,
    recommendations,
    reminder_log,
    sales,
    settings,
    shop_profile,
    user_invites,
    users,
    webhook_events,
);
