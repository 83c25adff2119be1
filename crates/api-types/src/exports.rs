//! Tenant data exports: one zip of the tenant's tables (a JSON or CSV file
//! per table), downloadable with a short-lived random token.

use chrono::NaiveDateTime;
use serde::{Deserialize, Serialize};

/// The format of the files inside an export's zip.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ExportFormat {
    /// One `<table>.json` per table: a JSON array of objects (column → value).
    Json,
    /// One `<table>.csv` per table: a header line with the column names, then
    /// one line per row (RFC 4180 quoting; NULL is an empty field).
    Csv,
}

impl ExportFormat {
    pub const fn as_str(self) -> &'static str {
        match self {
            ExportFormat::Json => "json",
            ExportFormat::Csv => "csv",
        }
    }

    pub fn parse(s: &str) -> Option<ExportFormat> {
        match s {
            "json" => Some(ExportFormat::Json),
            "csv" => Some(ExportFormat::Csv),
            _ => None,
        }
    }
}

/// Body of `POST /v1/tenant/exports` and `POST /v1/tenants/{id}/exports`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExportRequest {
    /// `json` or `csv`
    pub format: ExportFormat,
}

/// An export as the API shows it.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct Export {
    pub id: String,
    pub tenant_id: String,
    /// `requested`, `ready`, `failed` or `expired`
    pub state: String,
    /// `json` or `csv`
    pub format: String,
    /// Who asked for it (`tenant-key:<key id>`, `operator…`).
    pub requested_by: String,
    /// The zip's size.
    pub size_bytes: Option<i64>,
    /// SHA-256 of the zip, hex.
    pub sha256: Option<String>,
    /// Why the export failed.
    pub error: Option<String>,
    #[serde(serialize_with = "crate::time::utc")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: NaiveDateTime,
    #[serde(serialize_with = "crate::time::utc_opt")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub ready_at: Option<NaiveDateTime>,
    /// When the file (and every download URL) expires.
    #[serde(serialize_with = "crate::time::utc_opt")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub expires_at: Option<NaiveDateTime>,
    /// While `ready`: where to download the zip, without any other
    /// credential, until `expires_at`. Each read of the export issues a new
    /// URL and invalidates the previous one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub download_url: Option<String>,
}
