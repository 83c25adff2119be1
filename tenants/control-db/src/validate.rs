//! Input rules shared by the API and the CLI.

use std::collections::BTreeMap;

use tenantplane_api_types::rollouts::Selector;

use crate::error::{Error, Result};

/// Lower-case letters, digits and inner hyphens, `min` to 63 characters (a
/// DNS label), so the value is safe in URLs, logs and file names.
fn label(s: &str, min: usize, what: &str) -> Result<()> {
    let ok = (min..=63).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "invalid {what} {s:?}: {min} to 63 characters of a-z, 0-9 and '-', starting and ending with a letter or digit"
        )))
    }
}

/// `^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$`
pub fn slug(s: &str) -> Result<()> {
    label(s, 3, "slug")
}

/// `^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`: like a slug, but short names such
/// as `pg` are fine.
pub fn server_name(s: &str) -> Result<()> {
    label(s, 1, "server name")
}

pub fn name(s: &str) -> Result<()> {
    let len = s.trim().chars().count();
    if len == 0 || len > 200 || s.chars().any(char::is_control) {
        return Err(Error::invalid("name must be 1 to 200 printable characters"));
    }
    Ok(())
}

/// A deliberately small check: one '@', a dot in the domain, no spaces.
pub fn email(s: &str) -> Result<()> {
    let ok = s.len() <= 254
        && !s.chars().any(|c| c.is_whitespace() || c.is_control())
        && s.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !domain.contains('@')
        });
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(format!("invalid contact_email {s:?}")))
    }
}

fn label_part(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'/'))
}

/// Keys and values: 1 to 63 characters of `A-Za-z0-9-_./`; at most 32 labels.
pub fn labels(labels: &BTreeMap<String, String>) -> Result<()> {
    if labels.len() > 32 {
        return Err(Error::invalid("at most 32 labels per tenant"));
    }
    for (k, v) in labels {
        if !label_part(k, 63) || !label_part(v, 63) {
            return Err(Error::invalid(format!(
                "invalid label {k:?}={v:?}: keys and values are 1 to 63 characters of A-Z a-z 0-9 - _ . /"
            )));
        }
    }
    Ok(())
}

/// Parses `k=v` (a label filter or selector).
pub fn label_pair(s: &str) -> Result<(String, String)> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| Error::invalid(format!("invalid label filter {s:?}: expected key=value")))?;
    let mut one = BTreeMap::new();
    one.insert(k.to_string(), v.to_string());
    labels(&one)?;
    Ok((k.to_string(), v.to_string()))
}

/// Entries in one selector list (tenants, plans, servers).
pub const MAX_SELECTOR_ENTRIES: usize = 10_000;

/// A selector (rollouts, schedules, backups) selects something, and what it
/// names is well-formed; whether the tenants, plans and servers it names
/// exist is checked where it is resolved.
pub fn selector(s: &Selector) -> Result<()> {
    let empty = s.all != Some(true)
        && s.tenants.is_none()
        && s.plans.is_none()
        && s.labels.is_none()
        && s.servers.is_none();
    if empty {
        return Err(Error::invalid(
            "the selector selects nothing: use {\"all\":true} or tenants, plans, labels, servers",
        ));
    }
    if s.all == Some(false) {
        return Err(Error::invalid("selector.all must be true when given"));
    }
    for (what, list) in [
        ("tenants", &s.tenants),
        ("plans", &s.plans),
        ("servers", &s.servers),
    ] {
        if let Some(list) = list {
            if list.is_empty() {
                return Err(Error::invalid(format!("selector.{what} is empty")));
            }
            if list.len() > MAX_SELECTOR_ENTRIES {
                return Err(Error::invalid(format!(
                    "selector.{what} names {} entries: at most {MAX_SELECTOR_ENTRIES} (select by label or plan instead)",
                    list.len()
                )));
            }
            if list.iter().any(|v| v.trim().is_empty() || v.len() > 200) {
                return Err(Error::invalid(format!(
                    "selector.{what} holds an empty or overlong entry"
                )));
            }
        }
    }
    if let Some(labels) = &s.labels {
        if labels.is_empty() {
            return Err(Error::invalid("selector.labels is empty"));
        }
        self::labels(labels)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs() {
        for good in ["abc", "shop-42", "a1b", &"a".repeat(63)] {
            assert!(slug(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "ab",
            "-ab",
            "ab-",
            "Abc",
            "a_b",
            "../etc",
            "a b",
            "ünï",
            &"a".repeat(64),
            "a/b",
        ] {
            assert!(slug(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn emails_names_labels() {
        assert!(email("owner@shop.example").is_ok());
        for bad in ["", "a", "a@b", "@b.c", "a@.c", "a b@c.d", "a@b.c."] {
            assert!(email(bad).is_err(), "{bad}");
        }
        assert!(name("Corner Shop").is_ok());
        assert!(server_name("pg").is_ok());
        assert!(
            server_name("Pg").is_err() && server_name("-pg").is_err() && server_name("").is_err()
        );
        assert!(name("  ").is_err());
        assert!(name("a\u{0}b").is_err());
        assert_eq!(
            label_pair("region=eu-west").ok(),
            Some(("region".into(), "eu-west".into()))
        );
        assert!(label_pair("region").is_err());
        assert!(label_pair("=x").is_err());
        assert!(label_pair("k=a b").is_err());
    }
}
