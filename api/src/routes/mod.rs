pub mod health;
pub mod metrics;
pub mod rollouts;
pub mod servers;
pub mod tenants;
