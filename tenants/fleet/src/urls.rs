//! Database server URLs: pointing one at another database, and hiding its
//! password in logs and API answers.

/// The same PostgreSQL URL pointing at another database.
pub fn with_database(url: &str, database: &str) -> Result<String, String> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| "not a postgres:// URL".to_string())?;
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let query = tail.find('?').map(|i| &tail[i..]).unwrap_or("");
    Ok(format!("{scheme}://{authority}/{database}{query}"))
}

/// The URL with any password replaced, for logs and API answers.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _password)) => format!("{user}:***@{host}"),
            None => format!("{userinfo}@{host}"),
        },
        None => authority.to_string(),
    };
    let tail = tail
        .split('&')
        .map(|part| match part.split_once("password=") {
            Some((before, _)) => format!("{before}password=***"),
            None => part.to_string(),
        })
        .collect::<Vec<_>>()
        .join("&");
    format!("{scheme}://{authority}{tail}")
}

/// Where a PostgreSQL URL points, without credentials or options:
/// `host:port/database` (port 5432 and database `postgres` when left out,
/// host lower-cased), so two spellings of one database compare equal.
pub fn pg_target(url: &str) -> Option<String> {
    let (_, rest) = url.split_once("://")?;
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let (host, port) = match host_port.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || host_port.starts_with('[') => (h, p),
        _ => (host_port, "5432"),
    };
    let host = if host.is_empty() { "localhost" } else { host };
    let database = tail
        .strip_prefix('/')
        .map(|t| t.split('?').next().unwrap_or(""))
        .filter(|d| !d.is_empty())
        .unwrap_or("postgres");
    Some(format!("{}:{port}/{database}", host.to_ascii_lowercase()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swaps_the_database_of_a_url() {
        let cases = [
            (
                "postgres://u:p@h:5432/postgres",
                "postgres://u:p@h:5432/t_1",
            ),
            ("postgres://h", "postgres://h/t_1"),
            (
                "postgresql://h/db?sslmode=require",
                "postgresql://h/t_1?sslmode=require",
            ),
            (
                "postgres://h?application_name=x",
                "postgres://h/t_1?application_name=x",
            ),
        ];
        for (url, want) in cases {
            assert_eq!(with_database(url, "t_1").as_deref(), Ok(want));
        }
        assert!(with_database("nope", "t").is_err());
    }

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact_url("postgres://u:secret@h/db"),
            "postgres://u:***@h/db"
        );
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(
            redact_url("postgres://h/db?user=u&password=secret&sslmode=require"),
            "postgres://h/db?user=u&password=***&sslmode=require"
        );
        assert_eq!(redact_url("sqlite:///var/lib/t"), "sqlite:///var/lib/t");
    }

    #[test]
    fn pg_targets_ignore_credentials_and_options() {
        let same = [
            "postgres://a:secret@DB.example:5432/shop",
            "postgres://b@db.example/shop?sslmode=require",
            "postgresql://db.example:5432/shop",
        ];
        for u in same {
            assert_eq!(pg_target(u).as_deref(), Some("db.example:5432/shop"), "{u}");
        }
        assert_eq!(
            pg_target("postgres://127.0.0.1:5433").as_deref(),
            Some("127.0.0.1:5433/postgres")
        );
        assert_ne!(pg_target("postgres://h/a"), pg_target("postgres://h/b"));
    }
}
