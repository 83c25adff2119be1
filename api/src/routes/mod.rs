pub mod health;
pub mod servers;
pub mod tenants;
