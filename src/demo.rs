//! `serve --demo`: a fleet of demo shops on first start, so a newcomer sees
//! something at once.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use tenantplane_control_db::{Actor, ControlDb};
use tenantplane_fleet::registry::{self, NewTenant, TenantFilter};

pub const DEMO_SHOPS: usize = 50;

const NAMES: &[&str] = &[
    "Corner Bakery",
    "Green Grocer",
    "Hardware Hub",
    "Book Nook",
    "Coffee Cart",
    "Fresh Fish",
    "Tailor Made",
    "Phone Fix",
    "Spice Market",
    "Flower Stall",
];
const REGIONS: &[&str] = &["eu-west", "us-east", "ap-south"];
const TIERS: &[&str] = &["small", "medium", "large"];

/// Creates the demo shops unless the fleet already has tenants.
pub fn ensure_demo_fleet(db: &ControlDb) -> Result<()> {
    let existing = registry::list(
        db,
        &TenantFilter {
            limit: Some(1),
            ..TenantFilter::default()
        },
    )?;
    if !existing.items.is_empty() {
        return Ok(());
    }
    let actor = Actor::system("demo");
    for i in 0..DEMO_SHOPS {
        let mut labels = BTreeMap::new();
        labels.insert("region".to_string(), REGIONS[i % REGIONS.len()].to_string());
        labels.insert("tier".to_string(), TIERS[(i / 3) % TIERS.len()].to_string());
        labels.insert("demo".to_string(), "true".to_string());
        // A mixed fleet, so an upgrade has work to do: most shops at head,
        // some behind.
        let schema = match i % 5 {
            0 => "phase:0",
            1 => "phase:2",
            _ => "head",
        };
        let name = format!("{} #{}", NAMES[i % NAMES.len()], i / NAMES.len() + 1);
        registry::create(
            db,
            &actor,
            NewTenant {
                slug: format!("demo-shop-{:02}", i + 1),
                name,
                plan: Some(["free", "standard", "pro"][i % 3].to_string()),
                labels,
                contact_email: Some(format!("owner{:02}@demo-shop.example", i + 1)),
                server: None,
                schema: Some(schema.to_string()),
            },
        )
        .with_context(|| format!("creating demo shop {}", i + 1))?;
    }
    tracing::info!(tenants = DEMO_SHOPS, "demo fleet created");
    Ok(())
}
