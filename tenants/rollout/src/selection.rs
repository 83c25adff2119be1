//! The tenants a rollout covers, in wave order, read in pages so that
//! creating a rollout over 100,000 tenants holds little memory: 32 bytes
//! per tenant and one page of rows at a time.

use std::collections::{BTreeMap, HashMap};

use diesel::prelude::*;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use tenantplane_api_types::rollouts::Selector;
use tenantplane_control_db::db::{ControlBackend, ControlConnection};
use tenantplane_control_db::error::{DbError, Error, Result};
use tenantplane_control_db::schema::{plans, tenants};
use tenantplane_control_db::states::TenantStatus;
use tenantplane_fleet::registry::with_labels;
use tenantplane_fleet::servers;

/// Rows read per query, while scanning and while expanding.
pub(crate) const PAGE: usize = 500;

/// A selector with its names resolved to ids once, so each page's query is
/// built without going back to the servers and tenants tables.
pub(crate) struct Resolved {
    tenant_ids: Option<Vec<String>>,
    /// Plan ids (the selector names slugs).
    plans: Option<Vec<String>>,
    labels: BTreeMap<String, String>,
    server_ids: Option<Vec<String>>,
}

/// One selected tenant as a dry-run plan shows it.
pub(crate) struct Candidate {
    pub id: String,
    pub slug: String,
    pub schema_version: Option<String>,
}

impl Resolved {
    /// Checks the names a selector gives: unknown tenants or servers are
    /// errors (a typo must not quietly select fewer tenants).
    pub(crate) fn new(conn: &mut ControlConnection, s: &Selector) -> Result<Resolved> {
        let tenant_ids = match &s.tenants {
            None => None,
            Some(wanted) => {
                let found: Vec<(String, String)> = tenants::table
                    .filter(tenants::deleted_at.is_null())
                    .filter(tenants::id.eq_any(wanted).or(tenants::slug.eq_any(wanted)))
                    .select((tenants::id, tenants::slug))
                    .load(conn)?;
                let unknown: Vec<&String> = wanted
                    .iter()
                    .filter(|w| !found.iter().any(|(id, slug)| id == *w || slug == *w))
                    .collect();
                if !unknown.is_empty() {
                    return Err(Error::invalid(format!(
                        "unknown tenants in selector: {unknown:?}"
                    )));
                }
                Some(found.into_iter().map(|(id, _)| id).collect())
            }
        };
        let server_ids = match &s.servers {
            None => None,
            Some(wanted) => {
                let mut ids = Vec::with_capacity(wanted.len());
                for w in wanted {
                    let server = servers::find(conn, w).map_err(|_| {
                        Error::invalid(format!("unknown server in selector: '{w}'"))
                    })?;
                    ids.push(server.id);
                }
                Some(ids)
            }
        };
        // Selectors name plans by slug; tenants refer to them by id.
        let plans = match &s.plans {
            None => None,
            Some(wanted) => {
                let found: Vec<(String, String)> = plans::table
                    .filter(plans::slug.eq_any(wanted))
                    .select((plans::id, plans::slug))
                    .load(conn)?;
                let unknown: Vec<&String> = wanted
                    .iter()
                    .filter(|w| !found.iter().any(|(_, slug)| slug == *w))
                    .collect();
                if !unknown.is_empty() {
                    return Err(Error::invalid(format!(
                        "unknown plans in selector: {unknown:?}"
                    )));
                }
                Some(found.into_iter().map(|(id, _)| id).collect())
            }
        };
        Ok(Resolved {
            tenant_ids,
            plans,
            labels: s.labels.clone().unwrap_or_default(),
            server_ids,
        })
    }

    /// The selected tenants (not deleted, not still provisioning).
    fn query(&self) -> tenants::BoxedQuery<'static, ControlBackend> {
        let mut q = tenants::table
            .filter(tenants::deleted_at.is_null())
            .filter(tenants::status.ne(TenantStatus::Provisioning.as_str()))
            .into_boxed::<ControlBackend>();
        if let Some(ids) = &self.tenant_ids {
            q = q.filter(tenants::id.eq_any(ids.clone()));
        }
        if let Some(plans) = &self.plans {
            q = q.filter(tenants::plan_id.eq_any(plans.clone()));
        }
        q = with_labels(q, &self.labels);
        if let Some(ids) = &self.server_ids {
            q = q.filter(tenants::server_id.eq_any(ids.clone()));
        }
        q
    }

    /// The selected tenants in wave order: a stable shuffle keyed by the
    /// rollout, so canaries are a spread of the fleet, not the first slugs.
    /// Reads the tenants a page at a time in id order and keeps 32 bytes
    /// per tenant (its sort key, its id, its server and version as indexes
    /// into the few distinct ones): creating the tasks then needs no second
    /// read of the tenants.
    pub(crate) fn order(&self, conn: &mut ControlConnection, rollout_id: &str) -> Result<Order> {
        let mut picked: Vec<Picked> = Vec::new();
        let mut servers = Interned::default();
        let mut versions = Interned::default();
        let mut after = String::new();
        loop {
            let page: Vec<(String, String, Option<String>)> = self
                .query()
                .filter(tenants::id.gt(after.clone()))
                .select((tenants::id, tenants::server_id, tenants::schema_version))
                .order(tenants::id)
                .limit(PAGE as i64)
                .load(conn)?;
            let full = page.len() == PAGE;
            for (id, server_id, version) in &page {
                let uuid = Uuid::parse_str(id).map_err(|_| {
                    Error::control(
                        "reading the selection",
                        DbError::State(format!("tenant id '{id}' is not a uuid")),
                    )
                })?;
                let (Some(server), Some(version)) = (
                    servers.index(Some(server_id)),
                    versions.index(version.as_deref()),
                ) else {
                    return Err(Error::invalid(
                        "the selection spans more than 65,536 database servers; narrow it",
                    ));
                };
                picked.push(Picked {
                    key: shuffle_key(rollout_id, id),
                    id: uuid,
                    server,
                    version,
                });
            }
            match page.into_iter().last() {
                Some((last, _, _)) if full => after = last,
                _ => break,
            }
        }
        picked.sort_unstable_by_key(|p| (p.key, p.id));
        Ok(Order {
            tenants: picked,
            servers: servers.values,
            versions: versions.values,
        })
    }

    /// The rows of some of the selected tenants with their index in `ids`,
    /// in that order; tenants deleted since `order` read them are left out.
    pub(crate) fn rows(
        &self,
        conn: &mut ControlConnection,
        ids: &[Uuid],
    ) -> Result<Vec<(usize, Candidate)>> {
        let wanted: Vec<String> = ids.iter().map(Uuid::to_string).collect();
        let mut found: HashMap<String, Candidate> = self
            .query()
            .filter(tenants::id.eq_any(wanted.clone()))
            .select((tenants::id, tenants::slug, tenants::schema_version))
            .load::<(String, String, Option<String>)>(conn)?
            .into_iter()
            .map(|(id, slug, schema_version)| {
                let c = Candidate {
                    id: id.clone(),
                    slug,
                    schema_version,
                };
                (id, c)
            })
            .collect();
        Ok(wanted
            .iter()
            .enumerate()
            .filter_map(|(i, id)| found.remove(id).map(|c| (i, c)))
            .collect())
    }
}

/// One selected tenant, as creating its task needs it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Picked {
    /// The shuffle's sort key (ties, which 64 bits make rare, go by id).
    key: u64,
    pub id: Uuid,
    server: u16,
    version: u16,
}

/// The selected tenants in wave order, with the distinct servers and
/// schema versions they name (a fleet has a handful of each).
pub(crate) struct Order {
    pub tenants: Vec<Picked>,
    servers: Vec<Option<String>>,
    versions: Vec<Option<String>>,
}

impl Order {
    pub(crate) fn server_id(&self, p: &Picked) -> &str {
        self.servers
            .get(p.server as usize)
            .and_then(Option::as_deref)
            .unwrap_or_default()
    }

    pub(crate) fn schema_version(&self, p: &Picked) -> Option<&str> {
        self.versions
            .get(p.version as usize)
            .and_then(Option::as_deref)
    }
}

/// Distinct values, each stored once, by index.
#[derive(Default)]
struct Interned {
    values: Vec<Option<String>>,
    index: HashMap<String, u16>,
    none: Option<u16>,
}

impl Interned {
    /// `None` past 65,536 distinct values (a `Picked` keeps 16 bits).
    fn index(&mut self, value: Option<&str>) -> Option<u16> {
        let known = match value {
            None => self.none,
            Some(v) => self.index.get(v).copied(),
        };
        if known.is_some() {
            return known;
        }
        let i = u16::try_from(self.values.len()).ok()?;
        self.values.push(value.map(str::to_string));
        match value {
            None => self.none = Some(i),
            Some(v) => {
                self.index.insert(v.to_string(), i);
            }
        }
        Some(i)
    }
}

/// Only the order matters: 8 bytes of SHA-256, ties broken by the id.
fn shuffle_key(rollout_id: &str, tenant_id: &str) -> u64 {
    let mut h = Sha256::new();
    h.update(rollout_id.as_bytes());
    h.update(tenant_id.as_bytes());
    let digest = h.finalize();
    let mut key = [0u8; 8];
    key.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(key)
}
