//! Schema targets as operators write them: `head`, `phase:N`, `version:V`,
//! `none`.

use std::fmt;
use std::str::FromStr;

use crate::catalogue;

/// Where a tenant schema should end up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SchemaTarget {
    /// The newest migration.
    Head,
    /// The last migration of phase N (phases without migrations resolve to the
    /// last migration of the phase before them).
    Phase(u8),
    /// An exact migration version.
    Version(String),
    /// An empty database: no migration applied.
    None,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error("unknown schema target '{0}': expected head, phase:N, version:V or none")]
    Syntax(String),
    #[error("unknown phase {0}: phases are 0 to {max}", max = catalogue::MAX_PHASE)]
    UnknownPhase(u32),
    #[error("unknown migration version '{0}'")]
    UnknownVersion(String),
}

impl FromStr for SchemaTarget {
    type Err = TargetError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let target = match s {
            "head" => SchemaTarget::Head,
            "none" => SchemaTarget::None,
            _ => {
                if let Some(n) = s.strip_prefix("phase:") {
                    let n: u32 = n.parse().map_err(|_| TargetError::Syntax(s.to_string()))?;
                    if n > u32::from(catalogue::MAX_PHASE) {
                        return Err(TargetError::UnknownPhase(n));
                    }
                    SchemaTarget::Phase(n as u8)
                } else if let Some(v) = s.strip_prefix("version:") {
                    if !catalogue::versions().iter().any(|m| m.version == v) {
                        return Err(TargetError::UnknownVersion(v.to_string()));
                    }
                    SchemaTarget::Version(v.to_string())
                } else {
                    return Err(TargetError::Syntax(s.to_string()));
                }
            }
        };
        Ok(target)
    }
}

impl fmt::Display for SchemaTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SchemaTarget::Head => f.write_str("head"),
            SchemaTarget::Phase(n) => write!(f, "phase:{n}"),
            SchemaTarget::Version(v) => write!(f, "version:{v}"),
            SchemaTarget::None => f.write_str("none"),
        }
    }
}

impl SchemaTarget {
    /// The migration version this target stands for; `None` for an empty schema.
    pub fn version(&self) -> Option<&'static str> {
        match self {
            SchemaTarget::Head => catalogue::head(),
            SchemaTarget::Phase(n) => catalogue::phase_version(*n),
            SchemaTarget::Version(v) => catalogue::versions()
                .iter()
                .find(|m| m.version == *v)
                .map(|m| m.version.as_str()),
            SchemaTarget::None => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_form_and_rejects_the_rest() {
        assert_eq!("head".parse::<SchemaTarget>(), Ok(SchemaTarget::Head));
        assert_eq!("none".parse::<SchemaTarget>(), Ok(SchemaTarget::None));
        assert_eq!(
            "phase:3".parse::<SchemaTarget>(),
            Ok(SchemaTarget::Phase(3))
        );
        let head = catalogue::head().expect("tenant migrations exist");
        assert_eq!(
            format!("version:{head}").parse::<SchemaTarget>(),
            Ok(SchemaTarget::Version(head.to_string()))
        );
        assert_eq!(
            "phase:8".parse::<SchemaTarget>(),
            Err(TargetError::UnknownPhase(8))
        );
        assert!(matches!(
            "version:1999".parse::<SchemaTarget>(),
            Err(TargetError::UnknownVersion(_))
        ));
        for bad in [
            "", "HEAD", "phase:", "phase:-1", "phase:x", "latest", "version",
        ] {
            assert!(
                matches!(bad.parse::<SchemaTarget>(), Err(TargetError::Syntax(_))),
                "{bad:?} should be a syntax error"
            );
        }
    }

    #[test]
    fn targets_resolve_to_versions() {
        assert_eq!(SchemaTarget::None.version(), None);
        assert_eq!(SchemaTarget::Head.version(), catalogue::head());
        assert_eq!(
            SchemaTarget::Phase(catalogue::MAX_PHASE).version(),
            catalogue::head()
        );
        let p0 = SchemaTarget::Phase(0)
            .version()
            .expect("phase 0 has migrations");
        assert_eq!(catalogue::phase_of(Some(p0)), Some(0));
    }
}
